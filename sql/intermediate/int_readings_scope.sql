-- Readings in the scoring scope as stored: every lake (and extra) row of a sensor in
-- `scope_sensors` from its read_from on, duplicates of a (sensor_id, ts) included (the first
-- ingested wins in `anomaly.local_readings`, as in ingest), by the sensor's number.
-- Inputs: lake files $files, `extra_readings` (readings not in the lake yet, e.g. inference),
-- `scope_sensors` (`int_scope_sensors`), $first_read (the earliest read_from).
with
lake as (  -- $first_read: the earliest read_from of the scope (a constant: pushed into the scan)
    select sensor_id, ts, value, ingested_at from read_parquet($files)
    where ts >= $first_read
),
extra as (
    select sensor_id, ts, value, ingested_at from extra_readings
),
scope as (
    select sensor_id, read_from, sensor_rank from scope_sensors
),
in_scope as (
    select s.sensor_rank, r.ts, r.value, r.ingested_at
    from (select * from lake union all select * from extra) as r
    join scope as s using (sensor_id)
    where r.ts >= s.read_from
)
select * from in_scope
