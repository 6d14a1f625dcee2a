-- The hourly statistics the baselines of the changed hours need: the stored rows of the
-- $lookback before each sensor's changed_from, then the freshly computed `int_hourly_stats`.
select
    h.sensor_id, h.hour, h.local_hour, h.n, h.median, h.std, h.noise, h.spike_rms,
    h.quantum, h.max_step
from score_hourly as h
join score_scope as s using (sensor_id)
where h.hour >= s.changed_from - $lookback and h.hour < s.changed_from
union all
select * from int_hourly_stats
