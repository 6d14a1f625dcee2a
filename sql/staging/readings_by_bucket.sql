-- Canonical readings of one batch, sorted for row-group pruning, with their partition bucket.
-- Input: a relation named `batch_readings` (canonical columns) and the `sensors` table.
with
batch as (select * from batch_readings),
buckets as (select sensor_id, bucket from sensors),
joined as (
    select b.sensor_id, b.ts, b.value, b.unit, b.customer, b.source_file, b.ingested_at,
           b.temperature_c, b.salinity, s.bucket
    from batch as b
    join buckets as s using (sensor_id)
)
select * from joined order by bucket, sensor_id, ts
