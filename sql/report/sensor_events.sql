-- Every anomaly event of one sensor that overlaps ($start, $end] (naive UTC), in time order.
select start_ts, end_ts, minutes, anomaly_type, peak_severity, mean_severity
from anomaly_events
where sensor_id = $sensor_id and end_ts > $start and start_ts <= $end
order by start_ts
