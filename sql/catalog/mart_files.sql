-- Every mart file oxy wrote, with its size and row count then: `oxy check` (and every writer
-- before it writes) finds a file that is missing, truncated or changed since.
create table if not exists mart_files (
    mart       varchar   not null,  -- the folder under marts/ (anomaly_scores, forecasts, ...)
    path       varchar   not null primary key,  -- relative to the warehouse root
    bucket     integer,             -- the file's bucket=NN partition, null when not bucketed
    rows       bigint    not null,
    bytes      bigint    not null,
    min_ts     timestamp,           -- earliest / latest value of its time column (ts, start_ts,
    max_ts     timestamp,           --   origin_ts or time), from the footer statistics
    written_at timestamp not null   -- UTC
)
