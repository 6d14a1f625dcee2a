-- Distinct sensors in some lake files, limited to $sensors (which of them still have readings).
-- Input: $files (lake files), $sensors.
with
lake as (select sensor_id from read_parquet($files)),
wanted as (select sensor_id from lake where sensor_id in (select unnest($sensors)))
select distinct sensor_id from wanted
