-- How many scored readings are anomalous and how many anomaly events there are: every flagged
-- reading lies in exactly one event (its `readings`), so both come from the small events mart.
select coalesce(sum(readings), 0)::bigint as anomalous_readings, count(*) as events
from anomaly_events
