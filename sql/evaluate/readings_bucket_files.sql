-- The readings lake files per bucket with their rows, in bucket order: the seed's rules score
-- buckets together while they hold about $chunk_rows readings.
select bucket, path, rows
from lake_files
where kind = 'readings'
order by bucket, path
