-- How many readings were rescored.
select count(*) as readings
from int_detector_scores
