-- reference_anomalies when nothing is scored yet: no reference minute is left out.
create or replace temp table reference_anomalies (sensor_id varchar, ts timestamp)
