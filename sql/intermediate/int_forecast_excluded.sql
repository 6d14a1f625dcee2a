-- Minutes left out of training: anomaly severity above the $quantile of all severities.
with scores as (
    select sensor_id, ts, severity
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
    where scores.severity > cutoff.severity_cutoff
)

select * from excluded
