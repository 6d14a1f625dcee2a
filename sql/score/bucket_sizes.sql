-- Per bucket of $buckets: the readings stored, the sensors registered and the latest reading.
with
wanted as (
    select unnest($buckets) as bucket
),
stored as (
    select bucket, sum(rows) as readings, max(max_ts) as last_ts
    from lake_files
    where kind = 'readings'
    group by bucket
),
registered as (
    select bucket, count(*) as sensors
    from sensors
    group by bucket
)
select w.bucket, coalesce(s.readings, 0) as readings, coalesce(r.sensors, 0) as sensors, s.last_ts
from wanted as w
left join stored as s using (bucket)
left join registered as r using (bucket)
