-- Readings per customer and their time span.
select customer, count(*) as n_rows, min(ts) as first_ts, max(ts) as last_ts
from readings
group by customer
