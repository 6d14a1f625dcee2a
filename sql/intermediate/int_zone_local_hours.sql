-- The local hour of day of every quarter hour from $first to $last (UTC quarter-hour starts)
-- in each zone of `local_zones` (zone_index 0, 1, ...; timezone). Every zone's offset and switch
-- is a whole number of quarter hours, so a reading's local hour is that of its quarter, and a
-- gather replaces a time-zone conversion per reading: rows are ordered by zone, then quarter,
-- so quarter q of zone z is row z * (quarters per zone) + q. A null timezone gives null hours.
with
zones as (
    select zone_index, timezone from local_zones
),
quarters as (
    select range as quarter
    from range($first::timestamp, $last::timestamp + interval 15 minutes, interval 15 minutes)
),
local_hours as (
    select
        z.zone_index,
        q.quarter,
        hour(timezone(z.timezone, timezone('UTC', q.quarter))) as local_hour
    from zones as z
    cross join quarters as q
)
select local_hour from local_hours order by zone_index, quarter
