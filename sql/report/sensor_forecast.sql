-- The latest forecast of run $run_id for one sensor.
select origin_ts, ts, yhat, yhat_lo, yhat_hi
from forecasts
where
    run_id = $run_id
    and sensor_id = $sensor_id
    and origin_ts = (
        select max(origin_ts) from forecasts
        where run_id = $run_id and sensor_id = $sensor_id
    )
order by ts
