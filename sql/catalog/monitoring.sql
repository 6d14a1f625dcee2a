-- Results of `oxy monitor`: one row per check and scope per monitoring run (append-only).
create table if not exists monitoring (
    time      timestamp not null,  -- when the monitoring run happened (UTC)
    scope     varchar   not null,  -- 'fleet' or a sensor_id
    "check"   varchar   not null,  -- severity_median, anomaly_rate, forecast_rmse, ...
    value     double,              -- the measured value (null when skipped)
    threshold double,              -- the limit it was compared with (alert level)
    status    varchar   not null,  -- 'ok' | 'warn' | 'alert' | 'skipped'
    reason    varchar   not null   -- one line a human can act on
)
