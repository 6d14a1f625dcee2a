-- `new_readings` as extra readings, ingested after every stored copy.
insert into extra_readings
select sensor_id, ts, value, timestamp '9999-12-31'
from new_readings
