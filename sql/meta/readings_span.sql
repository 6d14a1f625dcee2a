-- The span of the warehouse's readings: first and last ts, rows, sensors.
select
    min(ts) as first_ts,
    max(ts) as last_ts,
    count(*) as n_rows,
    count(distinct sensor_id) as sensors
from readings
