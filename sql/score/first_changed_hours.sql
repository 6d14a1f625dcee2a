-- Per sensor of the new lake files $files: the first hour whose scores they can change (the
-- hour of the earliest new reading, $gap earlier: scores look that far ahead).
select sensor_id, date_trunc('hour', min(ts) - $gap) as first_hour
from read_parquet($files)
group by sensor_id
