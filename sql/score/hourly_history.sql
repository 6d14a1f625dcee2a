-- The hourly statistics the baselines of the changed hours need: the stored rows of the
-- $lookback before each sensor's changed_from, with the hour-of-day median and spread stored
-- for them (the changed hours' spread floor and pooled spread read those of a whole baseline
-- window back, whose own windows reach beyond the look-back), then the fresh
-- `int_hourly_stats`.
select
    h.sensor_id, h.hour, h.local_hour, h.n, h.median, h.std, h.noise, h.spike_rms,
    h.quantum, h.max_step, h.level_std,
    true as stored,
    h.baseline_median as stored_median,
    h.hour_spread as stored_spread
from score_hourly as h
join score_scope as s using (sensor_id)
where h.hour >= s.changed_from - $lookback and h.hour < s.changed_from
union all
select *, false as stored, null::double as stored_median, null::double as stored_spread
from int_hourly_stats
