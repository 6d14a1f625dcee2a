-- Anomalous minutes and episodes per sensor (the fleet overview's ranking).
select
    sensor_id,
    sum(minutes) as anomaly_minutes,
    count(*) as events
from anomaly_events
group by sensor_id
