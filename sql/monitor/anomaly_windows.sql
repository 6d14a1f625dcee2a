-- Anomaly rate and median severity per sensor and for the fleet in windows of length $recent
-- ending at $latest - k x $step, k = 0 .. $origins: window 0 is the one being judged, the
-- others are its calibration history (the same statistic over the sensor's earlier windows).
with origins as (
    select k, $latest - k * $step as window_end
    from range(0, $origins + 1) as t (k)
),

scores as (
    select sensor_id, ts, severity, is_anomaly
    from anomaly_scores
    where ts > $latest - $origins * $step - $recent and ts <= $latest
),

windowed as (
    select
        s.sensor_id,
        o.k,
        s.severity,
        cast(s.is_anomaly as double) as anomalous
    from scores as s
    inner join origins as o on s.ts > o.window_end - $recent and s.ts <= o.window_end
),

per_scope as (
    select
        coalesce(sensor_id, 'fleet') as scope,
        k,
        count(*) as minutes,
        avg(anomalous) as anomaly_rate,
        median(severity) as severity_median
    from windowed
    group by grouping sets ((sensor_id, k), (k))
)

select * from per_scope order by scope, k
