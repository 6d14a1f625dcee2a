-- Minutes left out of training: anomaly severity above the $quantile of all severities,
-- and every anomaly of a sensor-fault type in $fault_types (stuck, spike, ... readings are
-- not oxygen, whatever their rank).
with scores as (
    select sensor_id, ts, severity, is_anomaly, anomaly_type
    from anomaly_scores
),

cutoff as (
    select quantile_cont(severity, $quantile) as severity_cutoff
    from scores
),

excluded as (
    select scores.sensor_id, scores.ts, cutoff.severity_cutoff
    from scores
    cross join cutoff
    where
        scores.severity > cutoff.severity_cutoff
        or (scores.is_anomaly and list_contains($fault_types, scores.anomaly_type))
)

select * from excluded
