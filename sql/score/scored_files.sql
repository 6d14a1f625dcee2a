-- Every lake file `oxy score` already scored, with its bucket and first reading.
select bucket, path, min_ts
from score_files
