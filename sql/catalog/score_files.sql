-- Lake files whose readings `oxy score` has scored (the incremental scoring watermark).
create table if not exists score_files (
    path      varchar   not null primary key,  -- lake_files.path
    bucket    integer   not null,
    min_ts    timestamp,                      -- earliest reading in the file (rescoring starts here if it vanishes)
    scored_at timestamp not null
)
