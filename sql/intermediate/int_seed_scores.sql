-- The seed's detectors, unchanged (DESIGN.md "Detection defaults"), for comparison only:
-- 60-min rolling z, 120-min mean |z|, hour-of-day mean/std of the whole series, stuck / spike /
-- noise against the sensor's typical (median 60-min) std; severity = max; flag at threshold.
-- Self-contained (one pass per bucket): inputs the bucket's lake files $files and `sensors`.
with
lake as (
    select sensor_id, ts, value, ingested_at from read_parquet($files)
),
sites as (
    select sensor_id, timezone from sensors
),
deduplicated as (  -- first ingested wins (the ingest rule)
    select sensor_id, ts, arg_min(value, ingested_at) as value
    from lake
    where value is not null
    group by sensor_id, ts
),
localised as (
    select d.*, hour(timezone(s.timezone, timezone('UTC', d.ts))) as local_hour
    from deduplicated as d
    join sites as s using (sensor_id)
),
readings as (  -- jumps to the neighbouring readings (within $spike_gap)
    select
        sensor_id, ts, value, local_hour,
        case when lag(ts) over w >= ts - $spike_gap::interval
            then value - lag(value) over w end as step,
        case when lead(ts) over w <= ts + $spike_gap::interval
            then lead(value) over w - value end as next_step
    from localised
    window w as (partition by sensor_id order by ts)
),
rolling as (
    select
        *,
        avg(value) over point_w as point_mean,
        stddev_samp(value) over point_w as point_std,
        stddev_samp(value) over stuck_w as stuck_std,
        stddev_samp(value) over noise_w as noise_std
    from readings
    window
        point_w as (
            partition by sensor_id order by ts
            range between $point_window::interval - interval 1 microsecond preceding
                and current row
        ),
        stuck_w as (
            partition by sensor_id order by ts
            range between $stuck_window::interval - interval 1 microsecond preceding
                and current row
        ),
        noise_w as (
            partition by sensor_id order by ts
            range between $noise_window::interval - interval 1 microsecond preceding
                and current row
        )
),
z_scores as (
    select *, abs(value - point_mean) / nullif(point_std, 0) as point_z
    from rolling
),
collective as (
    select *, avg(point_z) over collective_w as collective_z
    from z_scores
    window collective_w as (
        partition by sensor_id order by ts
        range between $collective_window::interval - interval 1 microsecond preceding
            and current row
    )
),
hour_stats as (  -- the whole series' hour-of-day mean and std (the seed looks ahead)
    select sensor_id, local_hour, avg(value) as hour_mean, stddev_samp(value) as hour_std
    from collective
    group by sensor_id, local_hour
),
typical as (
    select sensor_id, median(point_std) as typical_std from collective group by sensor_id
),
hour_of_day as (
    select c.*, h.hour_mean, h.hour_std, t.typical_std
    from collective as c
    join hour_stats as h using (sensor_id, local_hour)
    join typical as t using (sensor_id)
),
scored as (
    select
        sensor_id,
        ts,
        coalesce(least(greatest((point_z - $point_z_lo) / ($point_z_hi - $point_z_lo), 0), 1), 0)
            as score_point,
        coalesce(least(greatest(
            (collective_z - $collective_lo) / ($collective_hi - $collective_lo), 0), 1), 0)
            as score_collective,
        coalesce(least(greatest(
            (abs(value - hour_mean) / nullif(hour_std, 0) - $contextual_z_lo)
            / ($contextual_z_hi - $contextual_z_lo), 0), 1), 0) as score_contextual,
        case when stuck_std < $stuck_std_ratio * typical_std then 1.0::double else 0.0::double end
            as score_stuck,
        case when sign(step) * sign(next_step) < 0
                and least(abs(step), abs(next_step)) > $spike_sigma * typical_std
            then 1.0::double else 0.0::double end as score_spike,
        case when noise_std > $noise_std_ratio * typical_std then 1.0::double else 0.0::double end
            as score_noise
    from hour_of_day
),
flagged as (
    select
        sensor_id,
        ts,
        greatest(score_point, score_collective, score_contextual, score_stuck, score_spike,
            score_noise) as severity
    from scored
)
select sensor_id, ts, severity, severity >= $severity_threshold as is_anomaly from flagged
