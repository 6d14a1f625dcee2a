-- Readings in the scoring scope: one row per (sensor_id, ts), the site's local hour, and the
-- neighbouring readings (previous/next within $spike_gap) that the detectors compare with,
-- and the spike residual (the reading minus the level around it).
-- Inputs: lake files $files, `extra_readings` (readings not in the lake yet, e.g. inference;
-- the lake rows win at the same ts: first ingested wins, as in ingest),
-- `score_scope` (sensor_id, read_from), `sensors`.
with
lake as (
    select sensor_id, ts, value, ingested_at from read_parquet($files)
),
extra as (
    select sensor_id, ts, value, ingested_at from extra_readings
),
scope as (
    select sensor_id, read_from from score_scope
),
sites as (
    select sensor_id, timezone, unit from sensors
),
in_scope as (
    select r.*
    from (select * from lake union all select * from extra) as r
    join scope as s using (sensor_id)
    where r.ts >= s.read_from
),
deduplicated as (  -- first ingested wins (the ingest rule)
    select sensor_id, ts, arg_min(value, ingested_at) as value
    from in_scope
    group by sensor_id, ts
),
localised as (
    select
        d.sensor_id,
        d.ts,
        d.value,
        s.unit,
        date_trunc('hour', d.ts) as hour,
        hour(timezone(s.timezone, timezone('UTC', date_trunc('hour', d.ts)))) as local_hour
    from deduplicated as d
    join sites as s using (sensor_id)
),
neighbours as (
    select
        *,
        lag(ts) over w as prev_ts,
        lag(value) over w as prev_value,
        lead(ts) over w as next_ts,
        lead(value) over w as next_value
    from localised
    window w as (partition by sensor_id order by ts)
),
levels as (  -- mean level just before and just after each reading (skipping a spike's tail);
             -- frames that end at the current row are fast, so windows are differences of them
             -- (forward ones in descending time)
    select
        *,
        (sum(value) over before_w - value) / nullif(count(value) over before_w - 1, 0)
            as before_level,
        (sum(value) over reach_w - sum(value) over near_w)
            / nullif(count(value) over reach_w - count(value) over near_w, 0) as after_level
    from neighbours
    window
        before_w as (
            partition by sensor_id order by ts
            range between $spike_ref_window::interval preceding and current row
        ),
        near_w as (  -- descending time: "preceding" reaches forward
            partition by sensor_id order by ts desc
            range between $spike_ref_gap::interval - interval 1 microsecond preceding
                and current row
        ),
        reach_w as (
            partition by sensor_id order by ts desc
            range between $spike_ref_gap::interval + $spike_ref_window::interval
                    - interval 1 microsecond preceding
                and current row
        )
),
steps as (
    select
        sensor_id, ts, value, unit, hour, local_hour,
        case when prev_ts >= ts - $prev_horizon::interval then prev_ts end as prev_ts,
        case when prev_ts >= ts - $spike_gap::interval then value - prev_value end as step,
        case when next_ts <= ts + $spike_gap::interval then next_value - value end as next_step,
        before_level,
        after_level
    from levels
),
spikes as (  -- deviation from the levels before and after, when it has the same sign against
             -- both (the smaller one: a trend or a nearby spike gives opposite signs);
             -- at sparse cadence, from the neighbours when the reading is a local extreme
    select
        * exclude (before_level, after_level),
        coalesce(
            case when sign(value - before_level) = sign(value - after_level)
                then sign(value - before_level)
                    * least(abs(value - before_level), abs(value - after_level))
                when before_level is not null and after_level is not null then 0
            end,
            value - before_level,
            case when step * next_step < 0
                then sign(step) * least(abs(step - next_step) / 2,
                    2 * least(abs(step), abs(next_step)))
            end
        ) as spike_residual
    from steps
)
select * from spikes
