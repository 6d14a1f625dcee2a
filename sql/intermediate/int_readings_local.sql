-- Readings in the scoring scope: one row per (sensor_id, ts), the site's local hour, and the
-- neighbouring readings (previous/next within $spike_gap) that the detectors compare with.
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
steps as (
    select
        sensor_id, ts, value, unit, hour, local_hour,
        case when prev_ts >= ts - $prev_horizon::interval then prev_ts end as prev_ts,
        case when prev_ts >= ts - $spike_gap::interval then value - prev_value end as step,
        case when next_ts <= ts + $spike_gap::interval then next_value - value end as next_step
    from neighbours
)
select * from steps
