-- Every readings lake file with its bucket and first reading.
select bucket, path, min_ts
from lake_files
where kind = 'readings'
