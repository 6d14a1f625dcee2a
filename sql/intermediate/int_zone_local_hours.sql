-- The local hour of day at the start of each step of `local_steps` (step_index, timezone,
-- step_start: a UTC quarter-hour or hour start), in step_index order: `anomaly.zone_local_hours`
-- gathers these per reading instead of converting every reading's time. Every zone's offset
-- and switch is a whole number of quarter hours, so at a quarter-hour step a reading's local
-- hour is that of its quarter; at an hour step it is that of the UTC hour's start (the hourly
-- statistics' hour). A null timezone gives a null hour.
with
steps as (
    select step_index, timezone, step_start from local_steps
),
local_hours as (
    select step_index, hour(timezone(timezone, timezone('UTC', step_start))) as local_hour
    from steps
)
select local_hour from local_hours order by step_index
