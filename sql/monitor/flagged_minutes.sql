-- Minutes of one bucket's sensors in ($since, $latest] that anomaly scoring flagged: the drift
-- baselines leave them out. The mart's own bucket partition (hive) prunes the other files.
with bucket_sensors as (
    select sensor_id from sensors where bucket = $bucket
),

flagged as (
    select scores.sensor_id, scores.ts
    from anomaly_scores as scores
    inner join bucket_sensors using (sensor_id)
    where
        try_cast(scores.bucket as integer) = $bucket
        and scores.is_anomaly
        and scores.ts > $since
        and scores.ts <= $latest
)

select * from flagged
