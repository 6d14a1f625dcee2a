-- The sensors in `score_scope`, numbered 1, 2, ... in sensor_id order
-- (`anomaly.local_readings` moves these numbers through its windows instead of the ids), with
-- their first reading to read, their site's time zone and their unit.
-- Inputs: `score_scope`, `sensors`.
with
scope as (
    select sensor_id, read_from from score_scope
),
sites as (
    select sensor_id, timezone, unit from sensors
),
numbered as (
    select
        row_number() over (order by sc.sensor_id) as sensor_rank,
        sc.sensor_id,
        sc.read_from,
        s.timezone,
        s.unit
    from scope as sc
    left join sites as s using (sensor_id)
)
select * from numbered order by sensor_rank
