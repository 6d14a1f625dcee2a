-- Per bucket, the first reading any of its sensors' events are rebuilt from (`events_cut`):
-- the bucket's score files that end before it are not read.
select s.bucket, min(c.rebuild_from) as rebuild_from
from events_cut as c
join sensors as s using (sensor_id)
group by s.bucket
