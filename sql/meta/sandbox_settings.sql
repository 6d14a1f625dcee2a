-- The settings that lock an `oxy sql` sandbox down, as the session sees them.
select name, value
from duckdb_settings()
where name in ('enable_external_access', 'lock_configuration', 'python_enable_replacements')
