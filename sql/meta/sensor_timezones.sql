-- Each registered sensor's IANA time zone.
select sensor_id, timezone
from sensors
