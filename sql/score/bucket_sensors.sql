-- The registered sensors of one bucket.
select sensor_id
from sensors
where bucket = $bucket
order by sensor_id
