-- The anomaly severity at quantile $quantile: training leaves out readings above it.
select quantile_cont(severity, $quantile) as cutoff
from anomaly_scores
