-- Per registered sensor, as of $as_of: its last reading, and over the $history before it its
-- usual interval between readings (median) and its usual longest gap of a day (the median over
-- days of each day's longest interval); with the fleet's latest reading (the `stale` check).
with registered as (
    select sensor_id from sensors
),

readings_until as (
    select sensor_id, ts
    from readings
    where ts <= $as_of
),

readings_seen as (
    select sensor_id, max(ts) as last_ts, count(*) as readings
    from readings_until
    group by sensor_id
),

fleet as (
    select max(last_ts) as fleet_latest_ts from readings_seen
),

recent as (
    select r.sensor_id, r.ts
    from readings_until as r
    inner join readings_seen as s using (sensor_id)
    where r.ts > s.last_ts - $history
),

intervals as (
    select
        sensor_id,
        ts,
        epoch(ts - lag(ts) over w) / 60 as interval_min
    from recent
    window w as (partition by sensor_id order by ts)
),

cadence as (
    select sensor_id, median(interval_min) as cadence_min
    from intervals
    where interval_min is not null
    group by sensor_id
),

daily_longest as (
    select sensor_id, date_trunc('day', ts) as day, max(interval_min) as longest_min
    from intervals
    where interval_min is not null
    group by sensor_id, day
),

usual_gap as (
    select sensor_id, median(longest_min) as usual_gap_min, count(*) as days
    from daily_longest
    group by sensor_id
),

last_seen as (
    select
        registered.sensor_id,
        readings_seen.last_ts,
        coalesce(readings_seen.readings, 0) as readings,
        fleet.fleet_latest_ts,
        cadence.cadence_min,
        usual_gap.usual_gap_min,
        coalesce(usual_gap.days, 0) as gap_days
    from registered
    left join readings_seen using (sensor_id)
    left join cadence using (sensor_id)
    left join usual_gap using (sensor_id)
    cross join fleet
)

select * from last_seen order by sensor_id
