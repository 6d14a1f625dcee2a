-- How many distinct sensors of `new_readings` are not registered.
select count(distinct n.sensor_id) - count(distinct s.sensor_id) as sensors
from new_readings as n
left join sensors as s using (sensor_id)
