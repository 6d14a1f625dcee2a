-- How many scored readings are anomalous.
select count(*) as readings
from anomaly_scores
where is_anomaly
