-- Which of the sensor ids $ids are registered.
select sensor_id
from sensors
where sensor_id in (select unnest($ids))
