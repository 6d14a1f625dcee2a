-- Rows an ingest refused, with why and where: nothing read is ever silently dropped.
create table if not exists quarantine (
    ingest_id      varchar   not null,  -- ingest_log.ingest_id
    source         varchar   not null,
    source_file    varchar   not null,  -- file name as ingested
    line           bigint,              -- CSV: 1-based line (header = 1); Parquet: 0-based row index
    reason         varchar   not null,  -- category, e.g. 'unparseable timestamp', 'sentinel value'
    detail         varchar,             -- specifics, e.g. the kept value of a conflicting duplicate
    sensor_id      varchar,             -- identity as read (joined with '|'), when there was one
    raw_time       varchar,             -- raw text of the time field
    raw_value      varchar,             -- raw text of the value field
    raw_line       varchar,             -- the whole line, for lines that could not be split
    quarantined_at timestamp not null   -- UTC
)
