-- oxy's flag per scored reading, the input of `oxy evaluate`.
select sensor_id, ts, is_anomaly
from anomaly_scores
