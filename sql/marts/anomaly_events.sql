-- anomaly_events of the buckets a run writes: consecutive anomalous readings merged into
-- episodes, each with its sensor's bucket (the file it goes to).
-- A flagged reading continues the episode when the reading before it was flagged too, or when
-- the previous flagged reading is at most $event_merge_gap earlier.
-- Only the sensors in `events_cut` are rebuilt, from their rebuild_from on; every other
-- stored event is kept as it is (an incremental run; a full run stores nothing before).
-- Inputs: the buckets' anomaly_scores files from their first rebuild_from on ($files),
-- `events_cut` (sensor_id, rebuild_from), `previous_events` (the buckets' events as stored),
-- `sensors`.
with
cut as (
    select sensor_id, rebuild_from from events_cut
),
kept as (
    select p.*
    from previous_events as p
    left join cut as c using (sensor_id)
    where c.sensor_id is null or p.start_ts < c.rebuild_from
),
scores as (
    select r.sensor_id, r.ts, r.prev_ts, r.severity, r.anomaly_type, r.is_anomaly
    from read_parquet($files, hive_partitioning = false) as r
    join cut as c using (sensor_id)
    where r.ts >= c.rebuild_from
),
flagged as (
    select *, lag(ts) over by_sensor as prev_flagged_ts
    from scores
    where is_anomaly
    window by_sensor as (partition by sensor_id order by ts)
),
starts as (
    select
        *,
        case
            when prev_flagged_ts is null then 1
            when prev_ts = prev_flagged_ts then 0
            when ts - prev_flagged_ts <= $event_merge_gap::interval then 0
            else 1
        end as is_start
    from flagged
),
numbered as (
    select *, sum(is_start) over by_sensor as episode
    from starts
    window by_sensor as (partition by sensor_id order by ts rows unbounded preceding)
),
events as (
    select
        sensor_id,
        min(ts) as start_ts,
        max(ts) as end_ts,
        date_diff('minute', min(ts), max(ts)) + 1 as minutes,
        count(*) as readings,
        first(anomaly_type order by severity desc, ts) as anomaly_type,
        max(severity) as peak_severity,
        avg(severity) as mean_severity
    from numbered
    group by sensor_id, episode
),
merged as (
    select * from kept
    union all by name
    select * from events
)
select m.*, s.bucket
from merged as m
join sensors as s using (sensor_id)
order by m.sensor_id, m.start_ts
