-- Per sensor of `site_scope` (sensor_id, read_from) and UTC hour from its read_from on: the
-- median reading, from the lake files $files and `extra_readings` as stored (the input of the
-- site's shared drift, `anomaly.site_drift`). $first_read: the earliest read_from (a constant:
-- pushed into the scan).
with
lake as (
    select sensor_id, ts, value from read_parquet($files)
    where ts >= $first_read
),
extra as (
    select sensor_id, ts, value from extra_readings
),
scope as (
    select sensor_id, read_from from site_scope
),
hourly as (
    select r.sensor_id, date_trunc('hour', r.ts) as hour, median(r.value) as median
    from (select * from lake union all select * from extra) as r
    join scope as s using (sensor_id)
    where r.ts >= s.read_from and r.value is not null
    group by all
)
select * from hourly
