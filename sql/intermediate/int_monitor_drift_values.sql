-- Values of one bucket's readings in the reference and recent windows (input for PSI).
with bucket_readings as (
    select sensor_id, ts, value
    from read_parquet($paths, union_by_name = true, hive_partitioning = false)
),

windowed as (
    select
        sensor_id,
        ts,
        value,
        ts > $recent_start as is_recent
    from bucket_readings
    where
        value is not null
        and (
            (ts > $reference_start and ts <= $reference_end)
            or (ts > $recent_start and ts <= $latest)
        )
)

select * from windowed order by sensor_id
