-- The months ('YYYY-MM') from the first to the last rescored reading (from their span: a scan
-- for distinct months costs more; a month without readings writes no file).
select strftime(month, '%Y-%m') as month
from generate_series(
    (select date_trunc('month', min(ts)) from int_detector_scores),
    (select date_trunc('month', max(ts)) from int_detector_scores),
    interval 1 month
) as months(month)
