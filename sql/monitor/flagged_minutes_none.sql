-- flagged_minutes when nothing is scored yet: no minute is left out of a drift baseline.
create or replace temp table flagged_minutes (sensor_id varchar, ts timestamp)
