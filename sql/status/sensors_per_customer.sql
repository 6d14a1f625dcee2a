-- Registered sensors per customer.
select customer, count(*) as sensors
from sensors
group by customer
