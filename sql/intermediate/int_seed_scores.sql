-- The seed's detectors, unchanged (DESIGN.md "Detection defaults"), for comparison only:
-- 60-min rolling z, 120-min mean |z|, hour-of-day mean/std of the whole series, stuck / spike /
-- noise against the sensor's typical (median 60-min) std; severity = max; flag at threshold.
-- One pass per group of buckets: input `seed_windows` (their readings with their windows).
-- `seed_windows`: one row per reading with its windows (anomaly.seed_windows, polars
-- rolling_*_by; (a, b] = ts - a .. ts + b): sensor_rank (the sensor's number: the groups and
-- joins below are on it), sensor_id, local_hour, step / next_step to the neighbours
-- within $spike_gap, point_std (stddev over ($point_window, 0]), stuck_std (($stuck_window, 0]),
-- noise_std (($noise_window, 0]), point_z = |value - mean| / point_std of the point window,
-- collective_z = mean point_z over ($collective_window, 0]. Read by three CTEs below, each
-- from the frame itself (a CTE over it would be materialised: a copy of every row).
with
hour_stats as (  -- the whole series' hour-of-day mean and std (the seed looks ahead)
    select sensor_rank, local_hour, avg(value) as hour_mean, stddev_samp(value) as hour_std
    from seed_windows
    group by sensor_rank, local_hour
),
typical as (
    select sensor_rank, median(point_std) as typical_std from seed_windows group by sensor_rank
),
hour_of_day as (
    select c.*, h.hour_mean, h.hour_std, t.typical_std
    from seed_windows as c
    join hour_stats as h using (sensor_rank, local_hour)
    join typical as t using (sensor_rank)
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
