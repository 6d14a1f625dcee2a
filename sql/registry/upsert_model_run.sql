-- Record (or re-record) one training run and its promotion decision in model_runs.
insert or replace into model_runs by name
select
    $run_id as run_id,
    $created_at as created_at,
    $params as params,
    $metrics as metrics,
    $test_start as test_start,
    $test_end as test_end,
    $test_mae as test_mae,
    $test_rmse as test_rmse,
    $test_mase as test_mase,
    $promoted as promoted,
    $reason as reason,
    now() as recorded_at
