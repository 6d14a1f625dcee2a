-- One sensor's anomaly events that end at or after $since (the page's first reading).
select start_ts, end_ts, minutes, anomaly_type, peak_severity, mean_severity
from anomaly_events
where sensor_id = $sensor_id and end_ts >= $since
order by start_ts
