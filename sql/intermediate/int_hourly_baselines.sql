-- Baselines per sensor and hour, from the hourly statistics of the previous days:
-- hour-of-day median and spread (site-local hour), typical std and noise, and the drift level
-- (mean residual of the last $drift_window against the hour-of-day baseline).
-- Inputs: `hourly_history` (stored hourly rows before the change + fresh `int_hourly_stats`),
-- `score_scope` (sensor_id, changed_from): only hours from changed_from on are returned.
with
hourly as (
    select sensor_id, hour, local_hour, n, median, std, noise from hourly_history
),
scope as (
    select sensor_id, changed_from from score_scope
),
hour_of_day as (
    select
        *,
        median(median) over same_hour as baseline_median,
        (quantile_cont(median, 0.75) over same_hour
            - quantile_cont(median, 0.25) over same_hour) / 1.349 as baseline_spread,
        count(median) over same_hour as baseline_days,
        median(std) over recent as typical_std,
        median(noise) over recent as typical_noise
    from hourly
    window
        same_hour as (
            partition by sensor_id, local_hour order by hour
            range between $baseline_window::interval preceding and interval 1 hour preceding
        ),
        recent as (
            partition by sensor_id order by hour
            range between $baseline_window::interval preceding and current row
        )
),
residuals as (
    select
        *,
        case when baseline_days >= $baseline_min_days then median - baseline_median end
            as residual
    from hour_of_day
),
drift as (
    select
        *,
        avg(residual) over last_day as drift_level,
        median(baseline_spread) over last_day as drift_spread
    from residuals
    window last_day as (
        partition by sensor_id order by hour
        range between $drift_window::interval - interval 1 hour preceding and current row
    )
),
scored as (
    select
        d.sensor_id, d.hour, d.local_hour, d.n, d.median, d.std, d.noise,
        d.baseline_median, d.baseline_spread, d.baseline_days, d.typical_std, d.typical_noise,
        d.drift_level,
        d.drift_level / greatest(d.drift_spread, d.typical_std, $min_std) as drift_z
    from drift as d
    join scope as s using (sensor_id)
    where d.hour >= s.changed_from
)
select * from scored
