-- The lake files of one bucket that `oxy score` already scored, with their first reading.
select path, min_ts
from score_files
where bucket = $bucket
