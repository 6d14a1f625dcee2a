-- The committed lake files of one kind (and, when $bucket is not null, one bucket).
select path
from lake_files
where kind = $kind and ($bucket::integer is null or bucket = $bucket)
order by path
