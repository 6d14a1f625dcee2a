-- Minute precision inputs: readings, flagged readings, and flagged readings that lie inside a
-- labelled window (with the $lead / $lag tolerance) of the same sensor.
-- Inputs: `eval_flags` (sensor_id, ts, is_anomaly), `eval_labels` (sensor_id, start_ts, end_ts).
with
flags as (
    select sensor_id, ts, is_anomaly from eval_flags
),
labels as (
    select sensor_id, start_ts, end_ts from eval_labels
),
flagged as (
    select sensor_id, ts from flags where is_anomaly
),
inside as (
    select f.sensor_id, f.ts
    from flagged as f
    semi join labels as l
        on f.sensor_id = l.sensor_id
        and f.ts between l.start_ts - $lead::interval and l.end_ts + $lag::interval
),
totals as (
    select
        (select count(*) from flags) as readings,
        (select count(*) from flagged) as flagged,
        (select count(*) from inside) as flagged_inside
)
select * from totals
