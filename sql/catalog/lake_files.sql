-- Catalog of committed Parquet files; views over the lake list exactly these.
create table if not exists lake_files (
    kind       varchar   not null,  -- 'readings', ...
    path       varchar   not null primary key,  -- relative to the warehouse root
    bucket     integer,             -- hash(sensor_id) % buckets, null when not bucketed
    rows       bigint    not null,
    min_ts     timestamp,
    max_ts     timestamp,
    created_at timestamp not null,
    bytes      bigint               -- file size when published (null: listed by an older oxy)
)
