-- Anomalous minutes and episodes per sensor in events overlapping ($start, $end] (the fleet
-- overview's ranking).
select
    sensor_id,
    sum(minutes) as anomaly_minutes,
    count(*) as events
from anomaly_events
where end_ts > $start and start_ts <= $end
group by sensor_id
