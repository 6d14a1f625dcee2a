-- The first month ('YYYY-MM') holding a rescored reading.
select strftime(min(rescore_from), '%Y-%m') as month
from score_scope
