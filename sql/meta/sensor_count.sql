-- How many sensors are registered.
select count(*) as sensors
from sensors
