-- Parse and validate one export's raw text rows into canonical candidates, with a reason (and
-- a detail) for every row that cannot be a reading (reason is null for good rows).
-- Input: relation `raw_rows` (sensor_id, id_empty, raw_time, raw_value, raw_temperature,
-- raw_salinity: text as read; the source mapping decides which columns they come from).
-- Parameters:
--   time: $formats (the kinds in the order tried: 'iso', 'epoch', 'excel', 'zoned' = strftime
--   patterns with %z/%Z, 'naive' = other patterns), $format_count, $epoch_us (microseconds per
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
            when list_contains($formats, 'iso')
                then try(epoch_us(try_cast(raw_time as timestamptz)))
        end as iso_us,
        case
            when list_contains($formats, 'iso')
                and ($local_zone or (length(raw_time) > 19 and ascii(raw_time[-1]) between 48 and 57))
                then try(epoch_us(try_cast(raw_time as timestamp)))
        end as iso_wall_us,
        case
            when list_contains($formats, 'epoch') or list_contains($formats, 'excel')
                then try_cast(raw_time as double)
        end as time_number,
        case
            when list_contains($formats, 'zoned')
                then try(epoch_us(try_strptime(raw_time, $patterns_zoned)))
        end as zoned_us,
        case
            when list_contains($formats, 'naive')
                then try(epoch_us(try_strptime(raw_time, $patterns_naive)))
        end as naive_us
    from raw
),
numbers as (
    select
        *,
        case
            when list_contains($formats, 'epoch') and isfinite(time_number)
                then try_cast(round(time_number * $epoch_us) as bigint)
        end as epoch_us,
        -- Excel serial days from 1899-12-30 (local wall time); Excel keeps milliseconds at best
        case
            when list_contains($formats, 'excel') and isfinite(time_number)
                then try_cast(round(time_number * 86400e3) * 1000 - 2209161600000000 as bigint)
        end as excel_us,
        coalesce(iso_wall_us - iso_us, 0) as offset_us
    from candidates
),
chosen as (  -- the first kind, in the mapping's order, that read the text
    select
        *,
        case
            when $format_count = 1 then
                case
                    when coalesce(iso_us, epoch_us, excel_us, zoned_us, naive_us) is not null
                        then $formats[1]
                end
            else list_filter(
                $formats,
                lambda k: case k
                    when 'iso' then iso_us
                    when 'epoch' then epoch_us
                    when 'excel' then excel_us
                    when 'zoned' then zoned_us
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
        time_number,
        case when time_hit = 'iso' then offset_us else 0 end as offset_us,
        time_hit,
        -- a naive ISO text under a local zone: no offset, no 'Z', no zone name (a zero offset
        -- needs a look at the text; any other offset shows in offset_us)
        time_hit = 'iso' and $local_zone and offset_us = 0 and case
            when contains(raw_time, 'Z') and ends_with(raw_time, 'Z') then false
            when contains(raw_time, 'z') and ends_with(raw_time, 'z') then false
            when strpos(raw_time, '+') >= 17 then false
            when contains(raw_time, '+') and contains(substr(raw_time, 17), '+') then false
            when contains(substr(raw_time, 17), '-') then false
            else not (length(raw_time) > 19 and ascii(rtrim(raw_time)[-1]) >= 65)
        end as naive_iso,
        case time_hit
            when 'iso' then iso_us
            when 'epoch' then epoch_us
            when 'excel' then excel_us
            when 'zoned' then zoned_us
            when 'naive' then naive_us
        end as ts_us,
        try_cast(
            case when $decimal = '.' then raw_value else replace(raw_value, $decimal, '.') end
            as double
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
        coalesce(time_hit in ('excel', 'naive') or naive_iso, false) as is_wall,
        value_read * $unit_factor as value,
        case
            -- the usual row first: one compound test, so good rows skip every other branch
            when ts_us between $min_us and $max_us
                and abs(offset_us) <= $max_offset_us
                and value_read * $unit_factor between $min_value and $max_value
                and not id_empty
                and not ($sentinels_inside and list_contains($sentinels, value_read))
                then null
            when raw_time is null or trim(raw_time) = '' or list_contains($na_values, trim(raw_time))
                then 'missing timestamp'
            when ts_us is null
                and (time_number is not null or lower(trim(raw_time)) in ('infinity', '-infinity'))
                then 'implausible timestamp'
            when ts_us is null then 'unparseable timestamp'
            when abs(offset_us) > $max_offset_us or ts_us < $min_us or ts_us > $max_us
                then 'implausible timestamp'
            when id_empty then 'empty sensor identity'
            when raw_value is null or trim(raw_value) = ''
                or list_contains($na_values, trim(raw_value))
                then 'missing value'
            when value_read is null then 'non-numeric value'
            when isnan(value_read) or isinf(value_read) then 'non-finite value'
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
                and not list_contains($sentinels, temperature_read)
                then temperature_read
        end as temperature_c,
        case
            when salinity_read between $min_salinity and $max_salinity then salinity_read
        end as salinity,
        reason,
        case
            when reason is null then null
            when reason = 'implausible timestamp' and abs(offset_us) > $max_offset_us
                then 'offset beyond +-14:00'
            when reason = 'implausible timestamp' and time_number is not null
                and time_hit is distinct from 'excel' and list_contains($formats, 'epoch') then
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
            when reason is not null then nullif(trim(raw_time), '')
            when is_wall and $local_zone then raw_time
        end as raw_time,
        case when reason is not null then nullif(trim(raw_value), '') end as raw_value
    from classified
)
select * from described
