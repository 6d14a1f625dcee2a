-- The user-visible views of the catalog's main schema with their definitions.
select view_name, sql
from duckdb_views()
where database_name = current_database() and schema_name = 'main'
    and not internal and not temporary
order by view_name
