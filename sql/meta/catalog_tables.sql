-- The base tables of the catalog's main schema (not temporary ones).
select table_name
from duckdb_tables()
where database_name = current_database() and schema_name = 'main' and not temporary
order by table_name
