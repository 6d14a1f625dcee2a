-- The stored hourly baselines the scores in scope read: every hour from each sensor's first
-- reading in scope (read_from) on.
select h.*
from score_hourly as h
join score_scope as s using (sensor_id)
where h.hour >= date_trunc('hour', s.read_from)
