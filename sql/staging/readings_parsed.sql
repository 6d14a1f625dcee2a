-- Parse and validate one export's raw text rows into canonical candidates, with a reason (and
-- a detail) for every row that cannot be a reading (reason is null for good rows).
-- Input: relation `raw_rows` (sensor_id, id_empty, raw_time, raw_value, raw_temperature,
-- raw_salinity: text as read; time_num, time_us, value_num: a typed Parquet column's number
-- or timestamp instead of its text; the source mapping decides which columns they come from).
-- $typed_wall: a typed timestamp without a zone is a wall-clock time.
-- Parameters:
--   time: $formats (the kinds in the order tried, as codes: 1 ISO, 2 epoch, 3 Excel serial days,
--   4 strftime patterns with %z/%Z, 5 other patterns; 0 is a typed timestamp column),
--   $format_count, $first_kind, $use_iso ... $use_naive (whether each kind is tried),
--   $epoch_us (microseconds per
--   epoch unit), $patterns_zoned, $patterns_naive, $local_zone (naive times are converted with
--   a zone afterwards), $min_us, $max_us (plausible instants, epoch microseconds),
--   $max_offset_us, $range_detail;
--   values: $na_values (texts meaning no value; tested on rows that do not parse only),
--   $decimal, $sentinels, $sentinels_inside (a sentinel lies in
--   the plausible range), $unit_factor (to the canonical unit), $min_value, $max_value
--   (canonical unit), $min_temperature, $max_temperature, $min_salinity, $max_salinity.
-- Times are epoch microseconds until the end (integer arithmetic; no timestamp conversion per
-- row). `ts_us` is the UTC instant when the text carried an offset (or is epoch), else the
-- naive wall-clock time (`is_wall`), converted afterwards with the source's zone in polars.
with
raw as (select * from raw_rows),
candidates as (  -- each format kind in use reads the text (a constant false skips the rest)
    select
        *,
        -- ISO: the instant (naive text read as UTC) and the wall clock (an offset dropped);
        -- their difference is the text's offset
        case
            when $use_iso then try(epoch_us(try_cast(raw_time as timestamptz)))
        end as iso_us,
        case
            when $use_iso
                and ($local_zone or (length(raw_time) > 19 and ascii(raw_time[-1]) between 48 and 57))
                then try(epoch_us(try_cast(raw_time as timestamp)))
        end as iso_wall_us,
        case
            when $use_epoch or $use_excel
                then coalesce(time_num, try_cast(raw_time as double))
        end as time_number,
        case
            when $use_zoned
                then try(epoch_us(try_strptime(raw_time, $patterns_zoned)))
        end as zoned_us,
        case
            when $use_naive
                then try(epoch_us(try_strptime(raw_time, $patterns_naive)))
        end as naive_us
    from raw
),
numbers as (
    select
        *,
        case
            when $use_epoch and isfinite(time_number)
                then try_cast(round(time_number * $epoch_us) as bigint)
        end as epoch_us,
        -- Excel serial days from 1899-12-30 (local wall time); Excel keeps milliseconds at best
        case
            when $use_excel and isfinite(time_number)
                then try_cast(round(time_number * 86400e3) * 1000 - 2209161600000000 as bigint)
        end as excel_us,
        coalesce(iso_wall_us - iso_us, 0) as offset_us
    from candidates
),
chosen as (  -- the first kind, in the mapping's order, that read the text
    select
        *,
        case
            when time_us is not null then 0
            when $format_count = 1 then
                case
                    when coalesce(iso_us, epoch_us, excel_us, zoned_us, naive_us) is not null
                        then $first_kind
                end
            else list_filter(
                $formats,
                lambda k: case k
                    when 1 then iso_us
                    when 2 then epoch_us
                    when 3 then excel_us
                    when 4 then zoned_us
                    else naive_us
                end is not null
            )[1]
        end as time_hit
    from numbers
),
parsed as (
    select
        sensor_id,
        id_empty,
        raw_time,
        raw_value,
        time_num,
        time_us,
        value_num,
        time_number,
        case when time_hit = 1 then offset_us else 0 end as offset_us,
        time_hit,
        -- a naive ISO text under a local zone: no offset, no 'Z', no zone name (a zero offset
        -- needs a look at the text; any other offset shows in offset_us)
        -- (a case, not `and`: `and` evaluates the text tests for every row)
        case when time_hit = 1 and $local_zone and offset_us = 0 then case
            when contains(raw_time, 'Z') and ends_with(raw_time, 'Z') then false
            when contains(raw_time, 'z') and ends_with(raw_time, 'z') then false
            when strpos(raw_time, '+') >= 17 then false
            when contains(raw_time, '+') and contains(substr(raw_time, 17), '+') then false
            when contains(substr(raw_time, 17), '-') then false
            else not (length(raw_time) > 19 and ascii(rtrim(raw_time)[-1]) >= 65)
        end else false end as naive_iso,
        case time_hit
            when 0 then time_us
            when 1 then iso_us
            when 2 then epoch_us
            when 3 then excel_us
            when 4 then zoned_us
            when 5 then naive_us
        end as ts_us,
        coalesce(
            value_num,
            try_cast(
                case when $decimal = '.' then raw_value else replace(raw_value, $decimal, '.') end
                as double
            )
        ) as value_read,
        try_cast(
            case
                when $decimal = '.' then raw_temperature
                else replace(raw_temperature, $decimal, '.')
            end as double
        ) as temperature_read,
        try_cast(
            case when $decimal = '.' then raw_salinity else replace(raw_salinity, $decimal, '.') end
            as double
        ) as salinity_read
    from chosen
),
classified as (
    select
        *,
        -- wall-clock times (converted with naive_time_zone afterwards): Excel serial days,
        -- patterns without %z, ISO text without an offset
        coalesce(
            time_hit in (3, 5) or naive_iso or (time_hit = 0 and $typed_wall),
            false
        ) as is_wall,
        value_read * $unit_factor as value,
        case
            -- the usual row first: one compound test, so good rows skip every other branch
            when ts_us between $min_us and $max_us
                and abs(offset_us) <= $max_offset_us
                and value_read * $unit_factor between $min_value and $max_value
                and isfinite(value_read)  -- NaN passes `between` in DuckDB
                and not id_empty
                and case when $sentinels_inside then not list_contains($sentinels, value_read) else true end
                then null
            when time_num is null and time_us is null and (
                raw_time is null or trim(raw_time) = '' or list_contains($na_values, trim(raw_time))
            ) then 'missing timestamp'
            when ts_us is null
                and (time_number is not null or lower(trim(raw_time)) in ('infinity', '-infinity'))
                then 'implausible timestamp'
            when ts_us is null then 'unparseable timestamp'
            when abs(offset_us) > $max_offset_us or ts_us < $min_us or ts_us > $max_us
                then 'implausible timestamp'
            when id_empty then 'empty sensor identity'
            when value_num is null and (
                raw_value is null or trim(raw_value) = ''
                or list_contains($na_values, trim(raw_value))
            ) then 'missing value'
            when value_read is null then 'non-numeric value'
            when not isfinite(value_read) then 'non-finite value'
            when list_contains($sentinels, value_read) then 'sentinel value'
            when value_read < 0 then 'negative value'
            when value_read * $unit_factor < $min_value then 'below plausible minimum'
            when value_read * $unit_factor > $max_value then 'above plausible maximum'
        end as reason
    from parsed
),
described as (
    select
        sensor_id,
        ts_us,
        is_wall,
        value,
        -- water temperature and salinity ride along when plausible (else null: the reading
        -- stays, the range test falls back to its defaults)
        case
            when temperature_read between $min_temperature and $max_temperature
                and isfinite(temperature_read)
                and not list_contains($sentinels, temperature_read)
                then temperature_read
        end as temperature_c,
        case
            when salinity_read between $min_salinity and $max_salinity and isfinite(salinity_read)
                then salinity_read
        end as salinity,
        reason,
        case
            when reason is null then null
            when reason = 'implausible timestamp' and abs(offset_us) > $max_offset_us
                then 'offset beyond +-14:00'
            when reason = 'implausible timestamp' and time_number is not null
                and time_hit is distinct from 3 and $use_epoch then
                case  -- which epoch unit would put the number inside the plausible range
                    when time_number * 1e6 between $min_us and $max_us then 'looks like epoch_s'
                    when time_number * 1e3 between $min_us and $max_us then 'looks like epoch_ms'
                    when time_number between $min_us and $max_us then 'looks like epoch_us'
                    when time_number / 1e3 between $min_us and $max_us then 'looks like epoch_ns'
                    else $range_detail
                end
            when reason = 'implausible timestamp' then $range_detail
        end as detail,
        case
            when reason is not null then coalesce(
                nullif(trim(raw_time), ''),
                cast(time_num as varchar),
                strftime(make_timestamp(time_us), '%Y-%m-%dT%H:%M:%S.%f')
            )
            when is_wall and $local_zone then coalesce(
                raw_time, strftime(make_timestamp(time_us), '%Y-%m-%dT%H:%M:%S.%f')
            )
        end as raw_time,
        case
            when reason is not null
                then coalesce(nullif(trim(raw_value), ''), cast(value_num as varchar))
        end as raw_value
    from classified
)
select * from described
