-- The readings the seed's rules score: every lake row with a value of one group of buckets, as
-- stored (duplicates of a (sensor_id, ts) included: the first ingested wins in
-- `anomaly.seed_windows`), by the sensor's number rather than its id.
-- Inputs: the lake files $files, `seed_sensors` (`int_seed_sensors`).
with
lake as (
    select sensor_id, ts, value, ingested_at from read_parquet($files)
),
ranks as (
    select sensor_id, sensor_rank from seed_sensors
),
with_values as (
    select r.sensor_rank, l.ts, l.value, l.ingested_at
    from lake as l
    join ranks as r using (sensor_id)
    where l.value is not null
)
select * from with_values
