-- Every recorded run for `oxy runs`, newest first.
select run_id, created_at, test_mae, test_rmse, test_mase, promoted, reason
from model_runs
order by created_at desc, run_id desc
