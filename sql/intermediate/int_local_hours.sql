-- The site's local hour of day of each UTC hour that holds readings (one row per hour, not per
-- reading: the time-zone conversion is the costly part), and the sensor's unit.
-- Inputs: `reading_hours` (hour_index, sensor_id, hour: a UTC hour start, or a quarter-hour
-- start: every zone's offset and switch is a whole number of quarter hours), `sensors`.
with
hours as (
    select hour_index, sensor_id, hour from reading_hours
),
sites as (
    select sensor_id, timezone, unit from sensors
),
localised as (
    select
        h.hour_index,
        s.unit,
        hour(timezone(s.timezone, timezone('UTC', h.hour))) as local_hour
    from hours as h
    left join sites as s using (sensor_id)  -- every hour keeps its row (gathered by index)
)
select * from localised order by hour_index
