-- Every registered sensor with its lake bucket.
select sensor_id, bucket
from sensors
order by sensor_id
