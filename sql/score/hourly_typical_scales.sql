-- Per sensor and hour in scope, the typical scales the minute windows use (clipped noise
-- steps, the point detector's z).
select sensor_id, hour, typical_hours, typical_std, typical_noise, typical_jump
from hourly_baselines
