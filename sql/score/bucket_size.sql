-- The readings stored in one bucket, the sensors registered in it and its latest reading.
select
    (select coalesce(sum(rows), 0) from lake_files where kind = 'readings' and bucket = $bucket)
        as readings,
    (select count(*) from sensors where bucket = $bucket) as sensors,
    (select max(max_ts) from lake_files where kind = 'readings' and bucket = $bucket) as last_ts
