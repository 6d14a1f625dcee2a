-- The readings lake files of one bucket whose time span overlaps [$lo, $hi].
select path
from lake_files
where kind = 'readings' and bucket = $bucket and max_ts >= $lo and min_ts <= $hi
order by path
