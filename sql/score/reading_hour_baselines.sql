-- Per sensor and hour in scope, what its readings take from the hour's baselines: the typical
-- scales of the minute windows (clipped noise steps, the point detector's z) and those of the
-- detectors, the hour-of-day median and contextual spread, the drift level, the site's movement
-- (`anomaly.detector_windows` gathers them per reading, with the neighbouring hours' median and
-- spread).
select
    sensor_id, hour, typical_hours, typical_std, typical_noise, typical_jump, typical_spike,
    typical_quantum, baseline_median, context_spread, baseline_days, drift_z, drift_relative,
    site_rel
from hourly_baselines
