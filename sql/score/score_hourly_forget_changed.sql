-- Forget the stored hourly baselines of the hours in scope (they are refitted).
delete from score_hourly
where exists (
    select 1 from score_scope as s
    where s.sensor_id = score_hourly.sensor_id and score_hourly.hour >= s.changed_from
)
