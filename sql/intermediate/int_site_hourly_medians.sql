-- Per sensor of `site_scope` (sensor_id, read_from, fresh_from) and UTC hour from its read_from
-- on: the median reading (the input of the site's shared drift, `anomaly.site_drift`). From
-- fresh_from on, of the lake files $files and `extra_readings`, one reading per (sensor_id, ts)
-- as scoring reads them (the first ingested non-null value); before it, as `score_hourly`
-- stored it (the same readings gave it: a new reading makes its hour changed). $first_read:
-- the earliest fresh_from (a constant: pushed into the scan).
with
lake as (
    select sensor_id, ts, value, ingested_at from read_parquet($files)
    where ts >= $first_read
),
extra as (
    select sensor_id, ts, value, ingested_at from extra_readings
),
scope as (
    select sensor_id, read_from, fresh_from from site_scope
),
readings as (  -- the first ingested non-null value of each minute
    select r.sensor_id, r.ts, arg_min(r.value, r.ingested_at) as value
    from (select * from lake union all select * from extra) as r
    join scope as s using (sensor_id)
    where r.ts >= s.fresh_from and r.value is not null
    group by r.sensor_id, r.ts
),
fresh as (
    select sensor_id, date_trunc('hour', ts) as hour, median(value) as median
    from readings
    group by all
),
stored as (
    select h.sensor_id, h.hour, h.median
    from score_hourly as h
    join scope as s using (sensor_id)
    where h.hour >= s.read_from and h.hour < s.fresh_from and h.median is not null
)
select * from stored
union all
select * from fresh
