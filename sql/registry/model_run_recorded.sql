-- Whether run $run_id is recorded in model_runs.
select exists (select 1 from model_runs where run_id = $run_id)
