-- Whether a table or a (non-internal) view named $name exists in the open database.
select
    exists (select 1 from duckdb_views() where view_name = $name and not internal)
    or exists (select 1 from duckdb_tables() where table_name = $name)
