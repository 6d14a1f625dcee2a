-- anomaly_scores for the files a run writes (`score_targets`: target, bucket, day; a file is a
-- block of days of a month, or a day of its bucket's open block): every reading with its
-- detector scores, severity (the largest score), anomaly_type (the detector that gave it),
-- is_anomaly and a QARTOD flag (1 pass, 3 suspect, 4 fail, 9 missing), and the target file
-- it goes to. Rows already stored before a sensor's rescore_from are kept as they are; the
-- rescored rows replace the rest.
-- Inputs: `int_detector_scores`, `previous_scores` (the stored files the targets replace),
-- `score_scope`, `score_targets`, `sensors` (the bucket of each sensor).
with
targets as (  -- the target file of each sensor's day
    select s.sensor_id, t.day, t.target
    from score_targets as t
    join sensors as s using (bucket)
),
detector_scores as (  -- the sensors in scope (the scores may hold other buckets' too)
    select d.*, t.target
    from int_detector_scores as d
    join targets as t on t.sensor_id = d.sensor_id and t.day = date_trunc('day', d.ts)
    where d.sensor_id in (select sensor_id from score_scope)
),
previous as (  -- the stored rows of the targets' days (a file merged or split reads others)
    select p.*, t.target
    from previous_scores as p
    join targets as t on t.sensor_id = p.sensor_id and t.day = date_trunc('day', p.ts)
),
scope as (
    select sensor_id, rescore_from from score_scope
),
severity as (
    select
        *,
        greatest(
            score_point, score_collective, score_contextual, score_stuck, score_spike,
            score_noise, score_drift, score_dropout, score_range
        ) as severity,
        greatest(score_stuck, score_spike, score_noise) as score_sensor_fault
    from detector_scores
),
labelled as (
    select
        sensor_id, ts, value,
        score_point, score_collective, score_contextual, score_stuck, score_spike, score_noise,
        score_sensor_fault, score_drift, score_dropout, score_range,
        severity,
        case
            when severity = 0 then 'none'
            when score_range = severity then 'range'
            when score_dropout = severity then 'dropout'
            when score_stuck = severity then 'stuck'
            when score_spike = severity then 'spike'
            when score_noise = severity then 'noise'
            when score_point = severity then 'point'
            when score_collective = severity then 'collective'
            when score_contextual = severity then 'contextual'
            else 'drift'
        end as anomaly_type,
        severity >= $severity_threshold as is_anomaly,
        case
            when value is null then 9
            when value < 0 or saturation_pct >= $range_fail_sat or score_dropout = 1 then 4
            when severity >= $qartod_fail_severity then 4
            when severity >= $severity_threshold or saturation_pct >= $range_suspect_sat then 3
            else 1
        end as qartod_flag,
        prev_ts,
        target
    from severity
),
kept as (
    select p.*
    from previous as p
    left join scope as s using (sensor_id)
    where s.sensor_id is null or p.ts < s.rescore_from
),
merged as (
    select * from kept
    union all by name
    select * from labelled
)
select * from merged
