-- Record the new lake files $new as scored.
insert into score_files
select path, bucket, min_ts, now()
from lake_files
where kind = 'readings' and list_contains($new, path)
