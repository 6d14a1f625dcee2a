-- Parse and validate one export's raw text rows into canonical candidates, with a reason (and
-- a detail) for every row that cannot be a reading (reason is null for good rows).
-- Input: relation `raw_rows` (sensor_id, id_empty, raw_time, raw_value, raw_temperature,
-- raw_salinity: text as read; the source mapping decides which columns they come from).
-- Parameters:
--   time: $formats (the kinds in the order tried: 'iso', 'epoch', 'excel', 'zoned' = strftime
--   patterns with %z/%Z, 'naive' = other patterns), $format_count, $epoch_us (microseconds per
--   epoch unit), $patterns_zoned, $patterns_naive, $local_zone (naive times are converted with
--   a zone afterwards), $min_ts, $max_ts (plausible instants), $max_offset_us;
--   values: $check_na, $na_values, $decimal, $sentinels, $unit_factor (to the canonical unit),
--   $min_value, $max_value (canonical unit), $min_temperature, $max_temperature,
--   $min_salinity, $max_salinity.
-- `ts` is the UTC instant when the text carried an offset (or is epoch), else the naive
-- wall-clock time (`is_wall`), converted afterwards with the source's zone in polars.
with
raw as (select * from raw_rows),
trimmed as (
    select
        sensor_id,
        id_empty,
        -- trim() copies every string: only call it on text with a space (contains() is cheap)
        nullif(
            case when contains(raw_time, ' ') then trim(raw_time) else raw_time end, ''
        ) as raw_time,
        nullif(
            case when contains(raw_value, ' ') then trim(raw_value) else raw_value end, ''
        ) as raw_value,
        raw_temperature,
        raw_salinity
    from raw
),
present as (  -- na_values ('NA', 'NULL' ...) mean no value, as an empty field does
    select
        sensor_id,
        id_empty,
        case when $check_na and list_contains($na_values, raw_time) then null else raw_time end
            as raw_time,
        case when $check_na and list_contains($na_values, raw_value) then null else raw_value end
            as raw_value,
        raw_temperature,
        raw_salinity
    from trimmed
),
time_kind as (
    select
        *,
        case
            when not $local_zone then false  -- naive times are UTC: an offset changes nothing
            when list_contains($formats, 'iso') then
                -- a 'Z', a sign after the minutes, or a zone name; cheapest test first (a
                -- case stops at the first true branch, `or` evaluates every operand)
                case
                    when contains(raw_time, 'Z') and ends_with(raw_time, 'Z') then true
                    when contains(raw_time, 'z') and ends_with(raw_time, 'z') then true
                    when strpos(raw_time, '+') >= 17 then true  -- no substring copied
                    when contains(raw_time, '+') and contains(substr(raw_time, 17), '+') then true
                    when contains(substr(raw_time, 17), '-') then true
                    else length(raw_time) > 19 and ascii(raw_time[-1]) >= 65
                end
            else false
        end as has_offset,
        case
            when list_contains($formats, 'epoch') or list_contains($formats, 'excel')
                then try_cast(raw_time as double)
        end as time_number
    from present
),
candidates as (  -- each format kind in use parses the text (a constant false skips the rest)
    select
        *,
        -- timestamptz -> UTC timestamp through epoch_us: the cast would go through ICU
        case
            when not list_contains($formats, 'iso') then null
            when has_offset or not $local_zone
                then try(make_timestamp(epoch_us(try_cast(raw_time as timestamptz))))
            else try_cast(raw_time as timestamp)
        end as ts_iso,
        case
            when list_contains($formats, 'epoch') and isfinite(time_number)
                then try(make_timestamp(cast(round(time_number * $epoch_us) as bigint)))
        end as ts_epoch,
        case
            when list_contains($formats, 'excel') and isfinite(time_number)
                then try(
                    timestamp '1899-12-30'
                    -- Excel keeps milliseconds at best: a serial rounds to the nearest one
                    + to_milliseconds(cast(round(time_number * 86400e3) as bigint))
                )
        end as ts_excel,
        case
            when list_contains($formats, 'zoned')
                then try(make_timestamp(epoch_us(try_strptime(raw_time, $patterns_zoned))))
        end as ts_zoned,
        case
            when list_contains($formats, 'naive')
                then cast(try_strptime(raw_time, $patterns_naive) as timestamp)
        end as ts_naive
    from time_kind
),
chosen as (  -- the first kind, in the mapping's order, that read the text
    select
        *,
        case
            when $format_count = 1 then
                case
                    when coalesce(ts_iso, ts_epoch, ts_excel, ts_zoned, ts_naive) is not null
                        then $formats[1]
                end
            else list_filter(
                $formats,
                lambda k: case k
                    when 'iso' then ts_iso
                    when 'epoch' then ts_epoch
                    when 'excel' then ts_excel
                    when 'zoned' then ts_zoned
                    else ts_naive
                end is not null
            )[1]
        end as time_hit
    from candidates
),
parsed as (
    select
        sensor_id,
        id_empty,
        raw_time,
        raw_value,
        time_number,
        case time_hit
            when 'iso' then ts_iso
            when 'epoch' then ts_epoch
            when 'excel' then ts_excel
            when 'zoned' then ts_zoned
            when 'naive' then ts_naive
        end as ts,
        -- wall-clock times (converted with naive_time_zone afterwards): Excel serial days,
        -- patterns without %z, ISO text without an offset
        coalesce(
            time_hit in ('excel', 'naive') or (time_hit = 'iso' and $local_zone and not has_offset),
            false
        ) as is_wall,
        -- an explicit numeric offset: the instant minus its wall clock must stay within the
        -- offsets that exist (DuckDB reads '+25:00' as well)
        case
            when time_hit = 'iso' and length(raw_time) > 19 and ascii(raw_time[-1]) between 48 and 57
                then abs(epoch_us(try_cast(raw_time as timestamp)) - epoch_us(ts_iso))
                    > $max_offset_us
            else false
        end as bad_offset,
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
        value_read * $unit_factor as value,
        case
            when raw_time is null then 'missing timestamp'
            when ts is null
                and (time_number is not null or lower(raw_time) in ('infinity', '-infinity'))
                then 'implausible timestamp'
            when ts is null then 'unparseable timestamp'
            when bad_offset or ts < $min_ts or ts > $max_ts then 'implausible timestamp'
            when id_empty then 'empty sensor identity'
            when raw_value is null then 'missing value'
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
        ts,
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
            when reason = 'implausible timestamp' and bad_offset then 'offset beyond +-14:00'
            when reason = 'implausible timestamp' and time_number is not null
                and list_contains($formats, 'epoch') then
                case  -- which epoch unit would put the number inside the plausible range
                    when time_number between epoch($min_ts) and epoch($max_ts)
                        then 'looks like epoch_s'
                    when time_number / 1e3 between epoch($min_ts) and epoch($max_ts)
                        then 'looks like epoch_ms'
                    when time_number / 1e6 between epoch($min_ts) and epoch($max_ts)
                        then 'looks like epoch_us'
                    when time_number / 1e9 between epoch($min_ts) and epoch($max_ts)
                        then 'looks like epoch_ns'
                    else format('outside {} .. {}', cast($min_ts as date), cast($max_ts as date))
                end
            when reason = 'implausible timestamp'
                then format('outside {} .. {}', cast($min_ts as date), cast($max_ts as date))
        end as detail,
        case when reason is not null or (is_wall and $local_zone) then raw_time end as raw_time,
        case when reason is not null then raw_value end as raw_value
    from classified
)
select * from described
