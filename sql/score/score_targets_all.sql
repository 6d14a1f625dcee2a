-- score_targets for batch inference: every day of the scored readings goes to one target (0).
create or replace temp table score_targets as
select distinct 0 as target, s.bucket, date_trunc('day', d.ts) as day
from int_detector_scores as d
join sensors as s using (sensor_id)
