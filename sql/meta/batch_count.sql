-- How many readings `batch_readings` holds.
select count(*) as readings
from batch_readings
