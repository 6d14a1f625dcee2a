-- The user-visible views of the catalog's main schema with their definitions and comments
-- (oxy tags the lake views with a digest of their definition: an unchanged view is kept).
select view_name, sql, comment
from duckdb_views()
where database_name = current_database() and schema_name = 'main'
    and not internal and not temporary
order by view_name
