-- Anomaly rate and median severity per sensor and for the fleet, in the reference window
-- ($reference_start, $reference_end] and the recent window ($recent_start, $latest].
with scores as (
    select sensor_id, ts, severity, is_anomaly
    from anomaly_scores
    where
        (ts > $reference_start and ts <= $reference_end)
        or (ts > $recent_start and ts <= $latest)
),

labelled as (
    select
        sensor_id,
        severity,
        cast(is_anomaly as double) as anomalous,
        case when ts > $recent_start then 'recent' else 'reference' end as period
    from scores
),

per_scope as (
    select
        coalesce(sensor_id, 'fleet') as scope,
        period,
        count(*) as minutes,
        avg(anomalous) as anomaly_rate,
        median(severity) as severity_median
    from labelled
    group by grouping sets ((sensor_id, period), (period))
)

select * from per_scope order by scope, period
