-- The readings the seed's rules score: every lake row with a value of one bucket, as stored
-- (duplicates of a (sensor_id, ts) included: the first ingested wins in
-- `anomaly.seed_windows`), with the sensor's rank among the registered sensors.
-- Inputs: the bucket's lake files $files, `sensors`.
with
lake as (
    select sensor_id, ts, value, ingested_at from read_parquet($files)
),
ranks as (
    select sensor_id, row_number() over (order by sensor_id) as sensor_rank from sensors
),
with_values as (
    select l.sensor_id, r.sensor_rank, l.ts, l.value, l.ingested_at
    from lake as l
    join ranks as r using (sensor_id)
    where l.value is not null
)
select * from with_values
