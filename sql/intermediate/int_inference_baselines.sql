-- Stored baselines for every hour the readings in scope touch, without re-fitting: the hour's
-- own stored row when it was scored, else the latest stored row of the same local hour
-- (hour-of-day baseline) and of the sensor (typical std and noise, drift level).
-- Inputs: `int_readings_local`, `score_hourly`.
with
hours as (
    select distinct sensor_id, hour, local_hour from int_readings_local
),
stored as (
    select * from score_hourly
),
same_local_hour as (
    select
        h.sensor_id, h.hour, h.local_hour,
        s.baseline_median, s.context_spread, s.baseline_days, s.typical_jump,
        -- the site's movement is known for a scored hour only
        case when s.hour = h.hour then s.site_rel else 0 end as site_rel
    from hours as h
    asof left join stored as s
        on h.sensor_id = s.sensor_id and h.local_hour = s.local_hour and h.hour >= s.hour
),
latest as (
    select
        h.sensor_id, h.hour,
        s.typical_hours, s.typical_std, s.typical_noise, s.typical_spike, s.typical_quantum,
        s.drift_z, s.drift_relative
    from hours as h
    asof left join stored as s
        on h.sensor_id = s.sensor_id and h.hour >= s.hour
),
baselines as (
    select
        l.sensor_id, l.hour, l.local_hour,
        l.baseline_median, l.context_spread, l.baseline_days, l.typical_jump, l.site_rel,
        t.typical_hours, t.typical_std, t.typical_noise, t.typical_spike, t.typical_quantum,
        t.drift_z, t.drift_relative
    from same_local_hour as l
    join latest as t using (sensor_id, hour)
)
select * from baselines
