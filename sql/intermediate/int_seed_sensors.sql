-- The sensors the seed's rules score, numbered 1, 2, ... in sensor_id order
-- (`anomaly.seed_windows` moves these numbers through its windows instead of the ids), with
-- their site's time zone. Input: `sensors`.
select row_number() over (order by sensor_id) as sensor_rank, sensor_id, timezone
from sensors
order by sensor_rank
