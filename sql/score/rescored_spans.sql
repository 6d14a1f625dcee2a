-- Per bucket of the sensors in `score_scope`: the first rescored reading (the stored files from
-- there on are rewritten) and the first and last reading scored now (the files to write; a
-- file without readings is removed).
with
scope as (
    select s.bucket, min(c.rescore_from) as first_rescore
    from score_scope as c
    join sensors as s using (sensor_id)
    group by s.bucket
),
scored as (
    select s.bucket, min(d.ts) as first_ts, max(d.ts) as last_ts
    from int_detector_scores as d
    join sensors as s using (sensor_id)
    where d.sensor_id in (select sensor_id from score_scope)
    group by s.bucket
)
select scope.bucket, scope.first_rescore, scored.first_ts, scored.last_ts
from scope
left join scored using (bucket)
