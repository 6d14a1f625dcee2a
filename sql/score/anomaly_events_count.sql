-- How many anomaly events there are.
select count(*) as events
from anomaly_events
