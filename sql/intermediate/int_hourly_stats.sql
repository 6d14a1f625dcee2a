-- Per sensor and UTC hour from the first changed hour on: robust statistics of the readings.
-- Inputs: `int_readings_local`, `score_scope` (sensor_id, changed_from: an hour start).
with
readings as (
    select * from int_readings_local where value is not null
),
scope as (
    select sensor_id, changed_from from score_scope
),
changed as (
    select r.*
    from readings as r
    join scope as s using (sensor_id)
    where r.hour >= s.changed_from
),
hourly as (
    select
        sensor_id,
        hour,
        min(local_hour) as local_hour,
        count(*) as n,
        median(value) as median,
        coalesce(stddev_samp(value), 0) as std,
        sqrt(avg(step * step) / 2) as noise,
        sqrt(avg(spike_residual * spike_residual)) as spike_rms,
        -- the sensor's resolution shows as its smallest non-zero step
        min(abs(step)) filter (where step <> 0) as quantum,
        max(abs(step)) as max_step,
        -- the spread of the mean level around each reading (fast swings averaged out)
        coalesce(stddev_samp(context_level), 0) as level_std
    from changed
    group by sensor_id, hour
)
select * from hourly
