-- One sensor's readings in ($start, $end] (naive UTC), from its bucket's lake files $paths.
with sensor_readings as (
    select sensor_id, ts, value
    from read_parquet($paths)
    where sensor_id = $sensor_id and ts > $start and ts <= $end
)

select sensor_id, ts, value
from sensor_readings
order by ts
