-- One sensor of the scope: rescored from $gap (the scores' look-ahead) before its first
-- changed hour $changed, read from $minutes (the windows' look-back) before that.
insert into score_scope
values ($sensor_id, $changed, $changed - $gap, $changed - $gap - $minutes)
