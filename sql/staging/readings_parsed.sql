-- Parse and validate one export's raw text rows into canonical candidates, with a reason for
-- every row that cannot be a reading (reason is null for good rows).
-- Input: relation `raw_rows` (sensor_id, id_empty, raw_time, raw_value: text as read).
-- Parameters: $time_format ('iso' | 'epoch_s' | 'epoch_ms' | 'pattern'), $pattern,
-- $pattern_has_zone, $local_zone (naive times need a zone conversion afterwards), $decimal,
-- $sentinels, $min_value, $max_value.
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
        ) as raw_value
    from raw
),
time_kind as (
    select
        *,
        case
            when $time_format = 'iso' then
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
            when $time_format = 'pattern' then $pattern_has_zone
            else true
        end as has_offset
    from trimmed
),
parsed as (
    select
        sensor_id,
        id_empty,
        raw_time,
        raw_value,
        not has_offset as is_wall,
        -- timestamptz -> UTC timestamp through epoch_us: the cast would go through ICU
        case
            when $time_format = 'iso' and has_offset
                then try(make_timestamp(epoch_us(try_cast(raw_time as timestamptz))))
            when $time_format = 'iso' then try_cast(raw_time as timestamp)
            when $time_format = 'epoch_s'
                then try(make_timestamp(epoch_us(to_timestamp(try_cast(raw_time as double)))))
            when $time_format = 'epoch_ms'
                then try(make_timestamp(cast(round(try_cast(raw_time as double) * 1000) as bigint)))
            else cast(try_strptime(raw_time, $pattern) as timestamp)
        end as ts,
        try_cast(
            case when $decimal = '.' then raw_value else replace(raw_value, $decimal, '.') end
            as double
        ) as value
    from time_kind
),
classified as (
    select
        *,
        case
            when raw_time is null then 'missing timestamp'
            when ts is null then 'unparseable timestamp'
            when id_empty then 'empty sensor identity'
            when raw_value is null then 'missing value'
            when value is null then 'non-numeric value'
            when isnan(value) or isinf(value) then 'non-finite value'
            when list_contains($sentinels, value) then 'sentinel value'
            when value < 0 then 'negative value'
            when value < $min_value then 'below plausible minimum'
            when value > $max_value then 'above plausible maximum'
        end as reason
    from parsed
),
described as (
    select
        sensor_id,
        ts,
        is_wall,
        value,
        reason,
        case when reason is not null or (is_wall and $local_zone) then raw_time end as raw_time,
        case when reason is not null then raw_value end as raw_value
    from classified
)
select * from described
