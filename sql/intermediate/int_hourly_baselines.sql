-- Baselines per sensor and hour, from the hourly statistics of the previous days:
-- hour-of-day median and spread (site-local hour), typical std and noise, and the drift level
-- (mean residual of the last $drift_window against the hour-of-day baseline; drift_z: the
-- mean of each hour's residual / spread weighted by 1 / spread, capped by the mean of the last $drift_recent so that
-- a cleaned probe stops drifting at once).
-- Inputs: `int_hourly_windows` (`anomaly.hourly_windows` of `hourly_history`: stored hourly rows
-- before the change, with their stored hour-of-day median and spread, + fresh
-- `int_hourly_stats`; with the site's shared movement site_rel), `score_scope` (sensor_id,
-- changed_from): only hours from changed_from on are returned. The history reaches one baseline window and one
-- drift window back (`anomaly.lookbacks`): a stored hour further back than the drift window
-- keeps its stored median and spread, which the changed hours' spread floor and pooled spread
-- read; its own windows would reach beyond the history.
with
scope as (
    select sensor_id, changed_from from score_scope
),
hourly as (  -- per sensor and hour: the statistics, the hour-of-day baseline (median, spread
             -- with its floor, hour_spread before it, days, the within-hour std of the mean
             -- level around each reading: hour_level_std), the drift
             -- baseline, the typical scales of the baseline window and pooled_mad (the median
             -- |median - baseline_median| of its hours): `anomaly.hourly_windows`
    -- the hours the windows below read: the changed ones and one drift window before them
    -- (the stored hours further back only fed `anomaly.hourly_windows`)
    select w.*
    from int_hourly_windows as w
    join scope as s using (sensor_id)
    where w.hour > s.changed_from
        - greatest($drift_window::interval, $drift_recent::interval)
),
pooled_spread as (  -- the contextual spread: the hour's day-to-day spread, at least a share of
                    -- the spread of the hours' residuals from their own hour-of-day baselines
                    -- (pooled_mad x 1.4826: pooled over all hours it exists from the first day
                    -- of history on, while an hour's own spread needs days; a median over 24
                    -- hours a day, so one odd hour barely moves it), in quadrature with the same
                    -- local hour's within-hour std of the mean level around each reading (that
                    -- level varies around its hour's median by that much; the contextual z
                    -- reads the smaller departure of the reading and of that level, so fast
                    -- swings and noise are no part of it). Drift keeps the hour's own spread.
    select
        *,
        sqrt(greatest(baseline_spread, $pooled_spread_ratio * 1.4826 * pooled_mad) ^ 2
            + ($context_hour_std_ratio * hour_level_std) ^ 2) as context_spread,
        -- the drift baseline moved as the site moved (site_rel: the median of the site's
        -- sensors' hourly medians relative to their own drift baselines, `anomaly.site_drift`;
        -- null without a site): weather, tide or a bloom moves every probe of a site,
        -- biofouling fouls one
        median - drift_baseline * (1 + coalesce(site_rel, 0)) as site_residual
    from hourly
),
residuals as (
    select
        *,
        case when baseline_days >= $baseline_min_days then site_residual end as residual,
        -- clipped: one odd hour is no drift. Only where the residual exists: greatest and
        -- least skip nulls, so a missing drift baseline (no reading of this local hour in the
        -- drift baseline window, e.g. after a week offline) would read as -$drift_z_clip
        case when baseline_days >= $baseline_min_days and site_residual is not null
            then least(greatest(site_residual
                / greatest(baseline_spread, typical_noise, $min_std), -$drift_z_clip),
                $drift_z_clip)
        end as residual_z,
        -- hours with a tight baseline (a controlled night) weigh more than weather-driven ones
        1 / greatest(baseline_spread, typical_noise, $min_std) as residual_weight,
        greatest($drift_z_clip * greatest(baseline_spread, typical_noise, $min_std),
            2 * $oxy_drift_relative_hi * abs(drift_baseline)) as relative_cap
    from pooled_spread
),
drift as (
    select
        *,
        avg(residual) over last_day as day_residual,
        sum(residual_z * residual_weight) over last_day
            / sum(residual_weight) filter (where residual_z is not null) over last_day as day_z,
        count(residual_z) over last_day as day_hours,
        min(baseline_days) over last_day as day_baseline_days,
        -- the same hours' residual relative to their baseline level, inverse-variance weights
        -- (the tight hours tell the level), each hour clipped to the larger of drift_z_clip
        -- spreads and twice the top of drift_relative_range (a short episode in the window is
        -- no drift): biofouling takes a share of the reading; a few % of a tight RAS level
        -- is no drift
        sum(case when residual is not null  -- least/greatest would read a null as the cap
            then greatest(least(residual, relative_cap), -relative_cap) end
            * residual_weight ^ 2) over last_day
            / sum(drift_baseline * residual_weight ^ 2) filter (where residual is not null)
                over last_day as day_relative,
        sum(residual_z * residual_weight ^ 2) over last_hours
            / sum(residual_weight ^ 2) filter (where residual_z is not null) over last_hours
            as recent_z
    from residuals
    window
        last_day as (
            partition by sensor_id order by hour
            range between $drift_window::interval - interval 1 hour preceding and current row
        ),
        last_hours as (
            partition by sensor_id order by hour
            range between $drift_recent::interval - interval 1 hour preceding and current row
        )
),
drift_level as (  -- both the day and the last hours off in the same direction: the smaller;
                  -- only from a day window holding $drift_min_hours hours of residuals (a
                  -- sensor back from a gap is no drift) whose every hour has its hour-of-day
                  -- baseline (day_baseline_days: the first residuals of a starting baseline
                  -- compare against its shortest history; a weather day there read as drift)
    select
        *,
        day_residual as drift_level,
        case when day_hours >= $drift_min_hours and sign(day_z) = sign(recent_z)
                and day_baseline_days >= $baseline_min_days
                -- reported only in hours whose day-to-day spread is below $drift_max_spread
                -- of their level: a drift of a few % cannot be read where the weather moves the
                -- level more (a pond's cloudy afternoon reads low whatever the probe does)
                and baseline_spread <= $drift_max_spread * abs(baseline_median)
            then sign(day_z) * least(abs(day_z), abs(recent_z))
            else 0
        end as drift_z,
        case when day_hours >= $drift_min_hours then day_relative end as drift_relative
    from drift
),
scored as (
    select
        d.sensor_id, d.hour, d.local_hour, d.n, d.median, d.std, d.noise, d.spike_rms,
        d.quantum, d.max_step, d.level_std, d.baseline_median,
        coalesce(d.context_spread, d.baseline_spread) as context_spread, d.baseline_days,
        d.hour_spread,
        d.typical_hours, d.typical_std, d.typical_noise, d.typical_spike, d.typical_quantum,
        d.typical_jump,
        d.drift_level,
        d.drift_z,
        d.drift_relative,
        coalesce(d.site_rel, 0) as site_rel
    from drift_level as d
    join scope as s using (sensor_id)
    where d.hour >= s.changed_from
)
select * from scored
