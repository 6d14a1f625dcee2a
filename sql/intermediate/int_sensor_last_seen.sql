-- Last reading per registered sensor and the fleet's latest timestamp (stale-sensor check).
with registered as (
    select sensor_id from sensors
),

readings_seen as (
    select sensor_id, max(ts) as last_ts, count(*) as readings
    from readings
    group by sensor_id
),

fleet as (
    select max(last_ts) as fleet_latest_ts from readings_seen
),

last_seen as (
    select
        registered.sensor_id,
        readings_seen.last_ts,
        coalesce(readings_seen.readings, 0) as readings,
        fleet.fleet_latest_ts
    from registered
    left join readings_seen using (sensor_id)
    cross join fleet
)

select * from last_seen order by sensor_id
