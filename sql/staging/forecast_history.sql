-- Readings of some sensors in [$since, $until]: warehouse history for 1-step predictions.
with sensor_readings as (
    select sensor_id, ts, value
    from readings
    where list_contains($sensor_ids, sensor_id) and ts >= $since and ts <= $until
)

select * from sensor_readings order by sensor_id, ts
