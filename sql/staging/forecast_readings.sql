-- Readings of one lake bucket's files for forecasting, ordered by sensor and time.
-- $sensor_ids (list or null) narrows to some sensors; $history_days (or null) keeps only
-- each sensor's last days (the forecast needs two weeks, training needs everything).
with bucket_readings as (
    select sensor_id, ts, value
    from read_parquet($files)
    where $sensor_ids is null or list_contains($sensor_ids, sensor_id)
),

with_last as (
    select
        sensor_id,
        ts,
        value,
        max(ts) over (partition by sensor_id) as last_ts
    from bucket_readings
),

kept as (
    select sensor_id, ts, value
    from with_last
    where $history_days is null or ts > last_ts - to_days(cast($history_days as integer))
)

select * from kept order by sensor_id, ts
