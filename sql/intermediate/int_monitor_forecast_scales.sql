-- Each sensor's MASE scale stored with run $run_id's latest forecast (forecast_status).
select sensor_id, mase_scale
from forecast_status
where run_id = $run_id and mase_scale is not null
order by sensor_id
