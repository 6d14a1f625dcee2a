-- The bucket's rescored span: the first rescored reading of its sensors in `score_scope` (the
-- stored files from there on are rewritten) and the first and last reading scored now (the
-- files to write; a file without readings is removed).
select
    (select min(rescore_from) from score_scope) as first_rescore,
    min(ts) as first_ts,
    max(ts) as last_ts
from int_detector_scores
where sensor_id in (select sensor_id from score_scope)
