-- The readings lake files of $buckets that reach the scope: each holds a reading at or after
-- the earliest reading the windows of `score_scope` need (read_from), or has no stored span.
select path
from lake_files
where kind = 'readings'
    and list_contains($buckets, bucket)
    and (max_ts is null or max_ts >= (select min(read_from) from score_scope))
order by path
