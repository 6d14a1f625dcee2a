-- model_runs mart: every recorded training run, its test metrics and promotion decision.
with runs as (
    select * from model_runs
),

marked as (
    select
        run_id,
        created_at,
        params,
        metrics,
        test_start,
        test_end,
        test_mae,
        test_rmse,
        test_mase,
        promoted,
        reason,
        recorded_at,
        coalesce(run_id = $production_run_id, false) as is_production
    from runs
)

select * from marked order by created_at, run_id
