-- Under `oxy score --full`: forget every stored hourly baseline of one bucket's sensors.
delete from score_hourly
where sensor_id in (select sensor_id from sensors where bucket = $bucket)
