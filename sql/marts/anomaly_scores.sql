-- anomaly_scores for one bucket and file (a block of days of a month): every reading with its
-- detector scores, severity (the largest score), anomaly_type (the detector that gave it),
-- is_anomaly and a QARTOD flag (1 pass, 3 suspect, 4 fail, 9 missing). Rows already stored before a sensor's rescore_from
-- are kept as they are; the rescored rows replace the rest.
-- Inputs: `int_detector_scores`, `previous_scores` (this file as stored), `score_scope`; the
-- file's readings are those in [$part_start, $part_end); $part_start null = all (inference).
with
detector_scores as (  -- the sensors in scope (the scores may hold other buckets' too)
    select * from int_detector_scores
    where sensor_id in (select sensor_id from score_scope)
        and ($part_start::timestamp is null
            or (ts >= $part_start::timestamp and ts < $part_end::timestamp))
),
previous as (
    select * from previous_scores
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
        prev_ts
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
