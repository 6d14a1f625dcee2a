-- One row per ingested file (committed with its readings): read = accepted + duplicates + quarantined.
create table if not exists ingest_log (
    ingest_id   varchar   not null primary key,  -- also the lake file name of its readings
    source      varchar   not null,   -- [sources.NAME] applied
    path        varchar   not null,   -- the file as given (absolute)
    sha256      varchar   not null,   -- of the file's bytes: the same bytes are never ingested twice
    bytes       bigint    not null,
    rows_read   bigint    not null,   -- data rows (CSV records after the header; Parquet rows)
    accepted    bigint    not null,   -- new readings added to the lake
    duplicates  bigint    not null,   -- identical (sensor_id, ts, value) already present
    quarantined bigint    not null,   -- rows set aside in `quarantine` with a reason
    new_sensors integer   not null,
    started_at  timestamp not null,   -- UTC
    finished_at timestamp not null,   -- UTC
    status      varchar   not null,   -- 'ok' | 'skipped' (same sha256 already ingested)
    note        varchar               -- e.g. the ingest_id a skipped file matched
)
;
-- Added with unit conversion (warehouses written before gain the columns, null there).
alter table ingest_log add column if not exists source_unit varchar;  -- unit as delivered
alter table ingest_log add column if not exists unit_factor double;   -- stored = delivered x this
