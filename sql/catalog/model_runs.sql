-- One row per training run recorded in the registry, with the promotion decision taken then.
create table if not exists model_runs (
    run_id      varchar   not null primary key,  -- folder name under registry/runs/
    created_at  timestamp not null,   -- when the run was trained (UTC)
    params      varchar   not null,   -- JSON: chosen hyper-parameters and feature settings
    metrics     varchar   not null,   -- JSON: {"train"|"valid"|"test": {"mae","rmse","mase"}}
    test_start  timestamp,            -- test window the metrics were measured on (UTC)
    test_end    timestamp,
    test_mae    double,               -- mg/L (or %sat): copied from metrics for BI
    test_rmse   double,
    test_mase   double,               -- unitless: MAE / daily seasonal naive MAE (engine/metrics.py)
    promoted    boolean   not null,   -- the promotion rule made it production when recorded
    reason      varchar   not null,   -- why it was (not) promoted
    recorded_at timestamp not null
)
