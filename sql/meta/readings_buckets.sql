-- The lake buckets that hold readings, in order.
select distinct bucket
from lake_files
where kind = 'readings'
order by bucket
