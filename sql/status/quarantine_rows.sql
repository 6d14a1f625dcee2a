-- Quarantined rows in all.
select count(*) as n_rows
from quarantine
