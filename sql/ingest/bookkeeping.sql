-- The ingest stage's small bookkeeping queries, one named block each
-- (`sql_text("ingest/bookkeeping:NAME")`). Queries that build a table or view have files of
-- their own (sql/staging/readings_parsed.sql, readings_lake_overlap.sql, sql/ingest/sources.sql).

-- name: ingest_log_same_size
-- How many successful ingests of source $source read a file of $bytes bytes.
select count(*) as ingests
from ingest_log
where bytes = $bytes and source = $source and status = 'ok'

-- name: ingest_log_same_file
-- The first successful ingest of the same file (by sha256) for source $source.
select ingest_id, rows_read, quarantined
from ingest_log
where sha256 = $sha256 and source = $source and status = 'ok'
order by started_at
limit 1

-- name: ingest_log_record
-- Log one ingest of one file.
insert into ingest_log by name
select
    $ingest_id as ingest_id,
    $source as source,
    $path as path,
    $sha256 as sha256,
    $bytes as bytes,
    $rows_read as rows_read,
    $accepted as accepted,
    $duplicates as duplicates,
    $quarantined as quarantined,
    $new_sensors as new_sensors,
    $started_at as started_at,
    $finished_at as finished_at,
    $status as status,
    $note as note,
    $source_unit as source_unit,
    $unit_factor as unit_factor

-- name: quarantine_insert
-- Append the registered frame `quarantine_rows` to the quarantine.
insert into quarantine by name
select * from quarantine_rows

-- name: csv_reject_lines
-- Lines DuckDB's CSV reader rejected (`reject_errors`), one row per line.
select line, any_value(error_type), any_value(csv_line), any_value(error_message)
from reject_errors
group by line
order by line

-- name: bucket_files_overlapping
-- The readings lake files of one bucket whose time span overlaps [$lo, $hi].
select path
from lake_files
where kind = 'readings' and bucket = $bucket and max_ts >= $lo and min_ts <= $hi
order by path

-- name: ingest_log_entry
-- One ingest by id.
select ingest_id, source, path, sha256, status, started_at
from ingest_log
where ingest_id = $ingest_id

-- name: ingest_log_by_path
-- The successful ingests of one file path, oldest first.
select ingest_id, source, path, sha256, status, started_at
from ingest_log
where path = $path and status = 'ok'
order by started_at

-- name: ingest_log_latest
-- The latest ingests (for a message that lists what can be forgotten).
select ingest_id, path
from ingest_log
order by started_at desc
limit $n

-- name: forget_files
-- The lake files one ingest published, with their rows.
select path, bucket, rows
from lake_files
where kind = 'readings' and ends_with(path, '/' || $ingest_id || '.parquet')
order by path

-- name: forget_repeats
-- Skipped ingests that were repeats of the given ones (same source and bytes).
select distinct l.ingest_id
from ingest_log as l
join ingest_log as f on l.sha256 = f.sha256 and l.source = f.source
where f.ingest_id in (select unnest($ids)) and l.status = 'skipped'

-- name: forget_scored_files
-- Which of the lake files $paths `oxy score` has scored.
select path from score_files where path in (select unnest($paths))

-- name: forget_quarantine_count
-- Quarantined rows of the given ingests.
select count(*) from quarantine where ingest_id in (select unnest($ids))

-- name: forget_delete_files
delete from lake_files where path in (select unnest($paths))

-- name: forget_delete_quarantine
delete from quarantine where ingest_id in (select unnest($ids))

-- name: forget_delete_log
delete from ingest_log where ingest_id in (select unnest($ids))

-- name: forget_delete_sensors
delete from sensors where sensor_id in (select unnest($ids))

-- name: forget_later_overlaps
-- Ingests after $started_at that found duplicates or conflicts: they may have lost rows to
-- the ingest being forgotten.
select ingest_id, path
from ingest_log
where started_at > $started_at and status = 'ok' and duplicates + quarantined > 0
    and ingest_id not in (select unnest($ids))
order by started_at
