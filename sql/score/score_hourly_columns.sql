-- The columns of the stored `score_hourly` table, in order (empty when it does not exist).
select column_name
from information_schema.columns
where table_name = 'score_hourly' and table_schema = 'main'
order by ordinal_position
