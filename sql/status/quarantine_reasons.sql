-- Quarantined rows per reason, most frequent first.
select reason, count(*) as n_rows
from quarantine
group by reason
order by n_rows desc, reason
