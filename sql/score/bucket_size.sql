-- The readings stored in one bucket and the sensors registered in it.
select
    (select coalesce(sum(rows), 0) from lake_files where kind = 'readings' and bucket = $bucket)
        as readings,
    (select count(*) from sensors where bucket = $bucket) as sensors
