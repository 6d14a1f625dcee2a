-- Lines DuckDB's CSV reader rejected (`reject_errors`), one row per line.
select line, any_value(error_type), any_value(csv_line), any_value(error_message)
from reject_errors
group by line
order by line
