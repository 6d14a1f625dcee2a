-- Per sensor of `new_readings`, its first new reading.
select sensor_id, min(ts) as first_ts
from new_readings
group by sensor_id
order by sensor_id
