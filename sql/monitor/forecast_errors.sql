-- Error of each sensor's latest forecast of run $run_id (issued before $as_of) on the minutes
-- that have arrived since its origin (up to $as_of), per sensor and for the fleet. The MASE
-- scale is the mean absolute one-step change of the same arrived readings (naive forecast
-- error).
with forecasts_of_run as (
    select sensor_id, origin_ts, ts, yhat
    from forecasts
    where run_id = $run_id and origin_ts < $as_of
),

latest_origin as (
    select sensor_id, max(origin_ts) as origin_ts
    from forecasts_of_run
    group by sensor_id
),

arrived as (
    select
        readings.sensor_id,
        readings.ts,
        readings.value,
        f.yhat
    from forecasts_of_run as f
    inner join latest_origin using (sensor_id, origin_ts)
    inner join readings on readings.sensor_id = f.sensor_id and readings.ts = f.ts
    where f.ts > f.origin_ts and f.ts <= $as_of
),

with_naive as (
    select
        sensor_id,
        value - yhat as error,
        abs(value - lag(value) over w) as naive_error
    from arrived
    window w as (partition by sensor_id order by ts)
),

per_scope as (
    select
        coalesce(sensor_id, 'fleet') as scope,
        count(*) as minutes,
        sqrt(avg(error * error)) as rmse,
        avg(abs(error)) as mae,
        avg(naive_error) as naive_mae
    from with_naive
    group by grouping sets ((sensor_id), ())
)

select * from per_scope order by scope
