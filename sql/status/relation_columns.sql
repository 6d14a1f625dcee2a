-- Every table and view of the open database with its column names.
select table_name, list(column_name) as columns
from duckdb_columns()
where database_name = current_database() and schema_name = 'main'
group by table_name
