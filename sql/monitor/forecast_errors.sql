-- Error of each sensor's latest forecast of run $run_id (issued before $as_of) on the minutes
-- that have arrived since its origin (up to $as_of), per sensor and for the fleet. MASE is
-- engine/metrics.py's one definition: the sensor's MAE divided by its scale (the daily
-- seasonal naive's MAE over the 7 days before the forecast's origin), which `oxy forecast`
-- stored in forecast_status.mase_scale for that origin and the caller passes as
-- $scale_sensors / $scale_origins / $scale_values; the fleet's MASE is the mean of its
-- sensors' MASEs, its scale the mean of theirs.
with forecasts_of_run as (
    select sensor_id, origin_ts, ts, yhat
    from forecasts
    where run_id = $run_id and origin_ts < $as_of
),

scales as (
    select
        unnest($scale_sensors::varchar []) as sensor_id,
        unnest($scale_origins::timestamp []) as origin_ts,
        unnest($scale_values::double []) as mase_scale
),

latest_origin as (
    select sensor_id, max(origin_ts) as origin_ts
    from forecasts_of_run
    group by sensor_id
),

arrived as (
    select
        readings.sensor_id,
        f.origin_ts,
        readings.value - f.yhat as error
    from forecasts_of_run as f
    inner join latest_origin using (sensor_id, origin_ts)
    inner join readings on readings.sensor_id = f.sensor_id and readings.ts = f.ts
    where f.ts > f.origin_ts and f.ts <= $as_of
),

per_sensor as (
    select
        arrived.sensor_id,
        count(*) as minutes,
        sqrt(avg(arrived.error * arrived.error)) as rmse,
        avg(abs(arrived.error)) as mae,
        avg(abs(arrived.error)) / nullif(any_value(scales.mase_scale), 0) as mase,
        any_value(scales.mase_scale) as mase_scale
    from arrived
    left join scales using (sensor_id, origin_ts)
    group by arrived.sensor_id
),

fleet as (
    select
        'fleet' as scope,
        sum(minutes) as minutes,
        sqrt(sum(rmse * rmse * minutes) / sum(minutes)) as rmse,
        sum(mae * minutes) / sum(minutes) as mae,
        avg(mase) as mase,
        avg(mase_scale) as mase_scale
    from per_sensor
    having count(*) > 0
),

per_scope as (
    select sensor_id as scope, minutes, rmse, mae, mase, mase_scale from per_sensor
    union all
    select scope, minutes, rmse, mae, mase, mase_scale from fleet
)

select * from per_scope order by scope
