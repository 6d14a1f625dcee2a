-- The first successful ingest of the same file (by sha256) for source $source.
select ingest_id, rows_read, quarantined
from ingest_log
where sha256 = $sha256 and source = $source and status = 'ok'
order by started_at
limit 1
