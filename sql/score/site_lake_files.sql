-- The readings lake files of $buckets that hold a reading at or after $read_from (or have no
-- stored span), with their bucket and rows: the input of the sites' hourly medians.
select bucket, path, rows
from lake_files
where kind = 'readings'
    and list_contains($buckets, bucket)
    and (max_ts is null or max_ts >= $read_from)
order by bucket, path
