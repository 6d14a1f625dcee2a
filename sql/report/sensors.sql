-- Every registered sensor with what the report's pages show about it.
select sensor_id, customer, timezone, unit, bucket
from sensors
order by sensor_id
