-- Store the refitted hourly baselines.
insert into score_hourly by name
select * from int_hourly_baselines
