-- The views of the catalog's main schema with their comments (oxy tags the lake views with a
-- digest of their definition: an unchanged view is not created again).
select view_name, comment
from duckdb_views()
where database_name = current_database() and schema_name = 'main'
    and not internal and not temporary
order by view_name
