-- One row per reading from the sensor's rescore_from on: every detector's score in [0, 1].
-- Inputs: `int_readings_local` (with steps to the neighbouring readings, the point detector's
-- z, the collective window and the window sums of `anomaly.detector_windows`, and the hour's
-- baselines it gathers from `hourly_baselines`), `score_scope` (sensor_id, rescore_from).
-- Time-based windows only (rolling_*_by over ts): gaps never pull old readings into a window.
with
readings as (
    select * from int_readings_local
),
scope as (
    select sensor_id, rescore_from from score_scope
),
with_baselines as (  -- the hour's baselines come with the readings (anomaly.detector_windows
                     -- gathers `hourly_baselines` per reading: baseline_median,
                     -- baseline_spread = the hour's contextual spread, baseline_days, drift_z,
                     -- drift_relative, hour_typical_*, and prev_/next_ median and spread of
                     -- the hours before and after)
    select
        * exclude (
            hour_typical_hours, hour_typical_noise, hour_typical_spike, hour_typical_quantum,
            prev_median, prev_spread, next_median, next_spread
        ),
        -- typical scales need $typical_min_hours of history; before that, no score uses them
        -- (sigma, the typical std, comes with the readings)
        case when hour_typical_hours >= $typical_min_hours
            then greatest(hour_typical_noise, $min_std) end as typical_noise,
        case when hour_typical_hours >= $typical_min_hours
            then greatest(hour_typical_spike, $min_std) end as typical_spike,
        -- a window of identical readings only shows that the spread is below the sensor's
        -- resolution: the std of rounding to a step of `quantum` is quantum / sqrt(12)
        coalesce(hour_typical_quantum, 0) / sqrt(12) as resolution_std,
        (value - baseline_median) / nullif(abs(baseline_median), 0) as reading_relative,
        -- the hour's median stands for its middle: towards either end the contextual baseline
        -- moves linearly to the neighbouring hour's (a steep diel ramp is no step at :00)
        abs(epoch(ts - hour) / 3600 - 0.5) as towards,
        case when epoch(ts - hour) / 3600 < 0.5 then prev_median else next_median
            end as neighbour_median,
        case when epoch(ts - hour) / 3600 < 0.5 then prev_spread else next_spread
            end as neighbour_spread
    from readings
),
interpolated as (
    select
        *,
        case when neighbour_median is null then baseline_median
            else (1 - towards) * baseline_median + towards * neighbour_median
        end as context_median,
        case when neighbour_spread is null then baseline_spread
            else (1 - towards) * baseline_spread + towards * neighbour_spread
        end as context_spread
    from with_baselines
),
rolling as (  -- the windows come with the readings (anomaly.detector_windows: polars
              -- rolling_*_by over the sensor's time windows; [a, b] = ts - a .. ts + b):
              -- sigma: the hour's typical std (null before $typical_min_hours of history);
              -- point_z: |value - mean of the point window before it| / the larger of that
              --   window's std, sigma and the hour's typical largest step / $point_jump_ratio
              --   (a daily switch of aerators or feeders is no point anomaly); null without sigma;
              -- collective_z: avg(point_z) over ($collective_window - 1 us, 0];
              -- point_n / point_sum / point_sumsq: count, sum, sum of squares of value over
              --   ($point_window - 1 us, 0]; ahead_n / ahead_sum / ahead_sumsq: the same over
              --   [0, $point_window - 1 us] (a reading that starts a flat window is stuck too);
              -- clipped_ss: least(step * step, ($noise_step_clip * typical_noise) ^ 2) (one
              --   spike must not read as an hour of noise); noise_before_ss / noise_before_n:
              --   sum(clipped_ss), count(step) over [$noise_step_window / 2, 0], noise_after_ss /
              --   noise_after_n over [0, $noise_step_window / 2] (the window is centred);
              -- sparse_n / sparse_std: count, stddev_samp of value over
              --   [$stuck_sparse_window - 1 us, 0] (the stuck window for sparse cadence)
    select * from interpolated
),
window_stats as (  -- the point window's spread, behind and ahead of the reading
    select
        *,
        sqrt(greatest(
            (point_sumsq - point_sum * point_sum / point_n) / nullif(point_n - 1, 0), 0))
            as window_std,
        sqrt(greatest(
            (ahead_sumsq - ahead_sum * ahead_sum / ahead_n) / nullif(ahead_n - 1, 0), 0))
            as ahead_std,
        coalesce(noise_before_ss, 0) + coalesce(noise_after_ss, 0) - coalesce(clipped_ss, 0)
            as noise_ss,
        noise_before_n + noise_after_n - (step is not null)::int as noise_n
    from rolling
),
z_scores as (
    select
        *,
        case when baseline_days >= $contextual_min_days
            -- the smaller departure of the reading and of the mean level around it
            -- (context_level): a limit cycle or a lone noisy reading is no change of context;
            -- the stored spread holds the day-to-day spread of the hour and that level's own
            -- spread within the hour (int_hourly_baselines)
            then least(abs(value - context_median),
                    abs(coalesce(context_level, value) - context_median))
                / greatest(context_spread, $min_std)
                / (1 + $contextual_few_days / baseline_days)  -- few days: a less certain spread
        end as contextual_z,
        -- spike: the residual in units of the typical residual, and the jump into it (the
        -- step, when it goes the residual's way; at most the residual) in units of the typical
        -- step (typical noise x sqrt 2); their geometric mean. A trend or a slow swing leaves a
        -- residual without a jump, a step change a jump without a residual; a limit cycle's
        -- residual is wide but its steps are small. At sparse cadence (no other reading in the
        -- level window before) the residual comes from the neighbouring steps themselves, and
        -- after a gap there is no step: the residual alone, on its own range.
        case when step is not null and has_level
            then sqrt(abs(spike_residual) / typical_spike
                * case when sign(step) = sign(spike_residual)
                    then least(abs(step), abs(spike_residual)) else 0 end
                / (typical_noise * sqrt(2)))
        end as spike_z,
        case when step is null or not has_level
            then abs(spike_residual) / typical_spike
        end as sparse_spike_z,
        case when noise_n >= $noise_min_readings
            then sqrt(noise_ss / noise_n / 2) / typical_noise
        end as noise_ratio
    from window_stats
),
saturation as (  -- mg/L as % of Benson-Krause solubility at the configured fallback T and S
    select
        *,
        case when unit = '%sat' then value
            else 100 * value / exp(
                -139.34411 + 1.575701e5 / $kelvin - 6.642308e7 / ($kelvin ^ 2)
                + 1.243800e10 / ($kelvin ^ 3) - 8.621949e11 / ($kelvin ^ 4)
                - $salinity * (0.017674 - 10.754 / $kelvin + 2140.7 / ($kelvin ^ 2)))
        end as saturation_pct,
        case when unit = '%sat' then $dropout_sat else $dropout_mgl end as dropout_level
    from z_scores
),
scored as (
    select
        c.sensor_id,
        c.ts,
        c.value,
        c.prev_ts,
        coalesce(least(greatest(
            (c.point_z - $oxy_point_z_lo) / ($oxy_point_z_hi - $oxy_point_z_lo), 0), 1), 0)
            as score_point,
        coalesce(least(greatest(
            (c.collective_z - $oxy_collective_lo) / ($oxy_collective_hi - $oxy_collective_lo), 0), 1), 0)
            as score_collective,
        coalesce(least(greatest(
            (c.contextual_z - $oxy_contextual_z_lo) / ($oxy_contextual_z_hi - $oxy_contextual_z_lo), 0), 1), 0)
            as score_contextual,
        case
            when c.point_n >= $stuck_min_readings and greatest(c.window_std, c.resolution_std)
                < $stuck_std_ratio * c.sigma then 1.0::double
            when c.ahead_n >= $stuck_min_readings and greatest(c.ahead_std, c.resolution_std)
                < $stuck_std_ratio * c.sigma then 1.0::double
            when c.point_n < $stuck_min_readings and c.sparse_n >= $stuck_min_readings
                and greatest(c.sparse_std, c.resolution_std) < $stuck_std_ratio * c.sigma
                then 1.0::double
            else 0.0::double
        end as score_stuck,
        coalesce(least(greatest(  -- greatest() skips nulls: one of the two holds a z
            (c.spike_z - $oxy_spike_z_lo) / ($oxy_spike_z_hi - $oxy_spike_z_lo),
            (c.sparse_spike_z - $oxy_sparse_spike_z_lo)
                / ($oxy_sparse_spike_z_hi - $oxy_sparse_spike_z_lo), 0), 1), 0)
            as score_spike,
        coalesce(least(greatest(
            (c.noise_ratio - $oxy_noise_ratio_lo) / ($oxy_noise_ratio_hi - $oxy_noise_ratio_lo), 0), 1), 0)
            as score_noise,
        least(  -- drift: unusual for the sensor (z), a sizeable share of its level (relative),
                -- and this reading itself that far off its hour's baseline (a cleaned probe, or
                -- one back from a short episode, stops drifting at its next reading)
            coalesce(least(greatest((case $drift_direction when 'down' then -c.drift_z
                when 'up' then c.drift_z else abs(c.drift_z) end - $oxy_drift_z_lo)
                / ($oxy_drift_z_hi - $oxy_drift_z_lo), 0), 1), 0),
            coalesce(least(greatest((case $drift_direction when 'down' then -c.drift_relative
                when 'up' then c.drift_relative else abs(c.drift_relative) end
                - $oxy_drift_relative_lo) / ($oxy_drift_relative_hi - $oxy_drift_relative_lo),
                0), 1), 0),
            coalesce(least(greatest((case $drift_direction when 'down' then -c.reading_relative
                when 'up' then c.reading_relative else abs(c.reading_relative) end
                - $oxy_drift_relative_lo) / ($oxy_drift_relative_hi - $oxy_drift_relative_lo),
                0), 1), 0)
        ) as score_drift,
        case when c.value <= c.dropout_level then 1.0::double else 0.0::double end
            as score_dropout,
        case when c.value < 0 then 1.0::double
            else coalesce(least(greatest((c.saturation_pct - $range_suspect_sat)
                / ($range_fail_sat - $range_suspect_sat), 0), 1), 0)
        end as score_range,
        c.saturation_pct
    from saturation as c
    join scope as s using (sensor_id)
    where c.ts >= s.rescore_from
)
select * from scored
