-- The local hour of day at every $step (a quarter hour or an hour) from $first to $last (UTC
-- starts of steps) in each zone of `local_zones` (zone_index 0, 1, ...; timezone): a gather
-- per reading then replaces a time-zone conversion per reading. Every zone's offset and switch
-- is a whole number of quarter hours, so at a quarter-hour step a reading's local hour is that
-- of its quarter; at an hour step it is that of the UTC hour's start (the hourly statistics'
-- hour). Rows are ordered by zone, then step: step q of zone z is row z * (steps per zone) + q.
-- A null timezone gives null hours.
with
zones as (
    select zone_index, timezone from local_zones
),
steps as (
    select range as step_start
    from range($first::timestamp, $last::timestamp + $step::interval, $step::interval)
),
local_hours as (
    select
        z.zone_index,
        s.step_start,
        hour(timezone(z.timezone, timezone('UTC', s.step_start))) as local_hour
    from zones as z
    cross join steps as s
)
select local_hour from local_hours order by zone_index, step_start
