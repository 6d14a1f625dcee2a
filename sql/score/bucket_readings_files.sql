-- The readings lake files of one bucket with their first reading.
select path, min_ts
from lake_files
where kind = 'readings' and bucket = $bucket
