-- Each sensor's MASE scale stored with each forecast of run $run_id (forecast_status).
select sensor_id, origin_ts, mase_scale
from forecast_status
where run_id = $run_id and mase_scale is not null
order by sensor_id, origin_ts
