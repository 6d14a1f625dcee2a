-- Every committed lake file.
select path
from lake_files
