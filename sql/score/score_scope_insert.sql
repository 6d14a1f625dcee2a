-- The sensors of the scope (`scope_changes`: sensor_id, changed = its first changed hour):
-- rescored from $gap (the scores' look-ahead) before that hour, read from $minutes (the
-- windows' look-back) before the first rescored reading.
insert into score_scope
select sensor_id, changed, changed - $gap, changed - $gap - $minutes
from scope_changes
