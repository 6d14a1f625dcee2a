-- Bookkeeping of the warehouse's files (engine/warehouse.py): what the catalog recorded when
-- each file was written, the mart journal, and the checks `oxy check` runs on them.

-- name: lake_files_listed
-- Every committed lake file with its size and row count when published.
select kind, path, bucket, rows, bytes, min_ts, max_ts
from lake_files
order by path

-- name: lake_files_have_bytes
-- Whether lake_files has its bytes column (catalogs of an older oxy have none).
select count(*) > 0
from duckdb_columns()
where database_name = current_database() and table_name = 'lake_files' and column_name = 'bytes'

-- name: lake_files_add_bytes
alter table lake_files add column bytes bigint

-- name: lake_files_without_bytes
-- Lake files listed without a size (by an older oxy).
select path, rows
from lake_files
where bytes is null

-- name: lake_file_bytes
update lake_files set bytes = $bytes where path = $path

-- name: ingest_sources
-- The source file and mapping of the ingests $ids (a lake file is named after its ingest).
select ingest_id, path, source
from ingest_log
where list_contains($ids, ingest_id)

-- name: mart_files_listed
-- Every mart file oxy wrote, with its size and row count then.
select mart, path, bucket, rows, bytes, min_ts, max_ts
from mart_files
order by path

-- name: mart_file_paths
select path
from mart_files

-- name: mart_file_record
-- Record one mart file as written now (replacing the record of the file it replaced).
insert or replace into mart_files (mart, path, bucket, rows, bytes, min_ts, max_ts, written_at)
values ($mart, $path, $bucket, $rows, $bytes, $min_ts, $max_ts, now())

-- name: mart_files_forget
delete from mart_files
where list_contains($paths, path)

-- name: mart_journal_open
insert into mart_journal (jid, opened_at)
values ($jid, now())

-- name: mart_journal_committed
-- Whether the transaction of journal $jid committed (and its closing did not, yet).
select count(*)
from mart_journal
where jid = $jid

-- name: mart_journal_close
delete from mart_journal
where jid = $jid

-- name: mart_journal_clear
delete from mart_journal

-- name: scores_against_lake
-- anomaly_scores rows (as written) against the readings of the lake files scored, and how many
-- scored files are gone from the lake (their rows leave the scores at the next `oxy score`).
select
    (select coalesce(sum(rows), 0) from mart_files where mart = 'anomaly_scores') as score_rows,
    (
        select coalesce(sum(l.rows), 0)
        from lake_files as l
        join score_files as s using (path)
    ) as scored_readings,
    (
        select count(*)
        from score_files
        where path not in (select path from lake_files)
    ) as gone

-- name: lake_files_count
select count(*)
from lake_files

-- name: mart_files_count
select count(*)
from mart_files

-- name: score_files_forget_overlapping
-- The scorer's watermark forgets the readings lake files of bucket $bucket whose span meets
-- [$min_ts, $max_ts] (null: every one of the bucket), so that `oxy score` rescores them.
delete from score_files
where
    bucket = $bucket
    and path in (
        select path
        from lake_files
        where
            kind = 'readings'
            and bucket = $bucket
            and ($max_ts is null or coalesce(min_ts, $max_ts) <= $max_ts)
            and ($min_ts is null or coalesce(max_ts, $min_ts) >= $min_ts)
    )
