-- The months ('YYYY-MM') that the rescored readings fall in.
select distinct strftime(date_trunc('month', ts), '%Y-%m') as month
from int_detector_scores
