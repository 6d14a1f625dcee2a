-- The kinds of file the lake holds (readings, quarantine, ...).
select distinct kind
from lake_files
