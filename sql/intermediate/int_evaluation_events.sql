-- Per labelled event: is it found? A flagged reading within [start - $lead, end + $lag] finds
-- it; a drift event needs >= $drift_fraction of the readings in the second half of its window
-- flagged. Inputs: `eval_flags` (sensor_id, ts, is_anomaly), `eval_labels`
-- (event_id, sensor_id, start_ts, end_ts, type).
with
flags as (
    select sensor_id, ts, is_anomaly from eval_flags
),
labels as (
    select event_id, sensor_id, start_ts, end_ts, type from eval_labels
),
near as (
    select l.event_id, count(f.ts) as flagged_near
    from labels as l
    left join flags as f
        on f.sensor_id = l.sensor_id
        and f.is_anomaly
        and f.ts between l.start_ts - $lead::interval and l.end_ts + $lag::interval
    group by l.event_id
),
drift_labels as (
    select
        event_id, sensor_id, end_ts,
        make_timestamp((epoch_us(start_ts) + epoch_us(end_ts)) // 2) as middle_ts
    from labels
    where type = 'drift'
),
second_half as (
    select
        d.event_id,
        count(f.ts) as readings,
        count(f.ts) filter (where f.is_anomaly) as flagged
    from drift_labels as d
    left join flags as f
        on f.sensor_id = d.sensor_id and f.ts between d.middle_ts and d.end_ts
    group by d.event_id
),
events as (
    select
        l.event_id,
        l.sensor_id,
        l.type,
        n.flagged_near,
        h.readings as second_half_readings,
        h.flagged as second_half_flagged,
        case
            when l.type = 'drift'
                then coalesce(h.readings > 0 and h.flagged >= $drift_fraction * h.readings, false)
            else n.flagged_near > 0
        end as found
    from labels as l
    join near as n using (event_id)
    left join second_half as h using (event_id)
)
select * from events order by event_id
