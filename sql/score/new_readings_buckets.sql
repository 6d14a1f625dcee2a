-- The buckets of the sensors of `new_readings`.
select distinct bucket
from sensors
where sensor_id in (select sensor_id from new_readings)
