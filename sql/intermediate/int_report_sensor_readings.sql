-- One sensor's readings over the last $history (an interval text) before its latest reading,
-- from its bucket's lake files $paths.
with sensor_readings as (
    select sensor_id, ts, value
    from read_parquet($paths)
    where sensor_id = $sensor_id
)

select sensor_id, ts, value
from sensor_readings
where ts > (select max(ts) from sensor_readings) - cast($history as interval)
order by ts
