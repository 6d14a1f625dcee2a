-- Per bucket of the registered sensors in `batch_readings`: its readings and time span.
select s.bucket, count(*) as readings, min(b.ts) as min_ts, max(b.ts) as max_ts
from batch_readings as b
join sensors as s using (sensor_id)
group by s.bucket
order by s.bucket
