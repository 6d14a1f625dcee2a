-- Per sensor of lake bucket $bucket: scored readings in the last $window_min minutes before
-- its latest scored reading (looking only after $since), and how many of them are anomalies
-- of a sensor-fault type ($fault_types). The bucket and $since prune partitions and row groups.
with scores as (
    select sensor_id, ts, is_anomaly, anomaly_type
    from anomaly_scores
    where try_cast(bucket as integer) = $bucket and ts > $since
),

last_scored as (
    select sensor_id, max(ts) as last_ts
    from scores
    group by sensor_id
),

recent as (
    select
        scores.sensor_id,
        scores.anomaly_type,
        coalesce(scores.is_anomaly and list_contains($fault_types, scores.anomaly_type), false)
            as is_fault
    from scores
    inner join last_scored using (sensor_id)
    where scores.ts > last_scored.last_ts - to_minutes(cast($window_min as integer))
),

per_sensor as (
    select
        sensor_id,
        count(*) as readings,
        count(*) filter (where is_fault) as fault_readings,
        mode(anomaly_type) filter (where is_fault) as fault_type
    from recent
    group by sensor_id
)

select * from per_sensor
