-- How many successful ingests of source $source read a file of $bytes bytes.
select count(*) as ingests
from ingest_log
where bytes = $bytes and source = $source and status = 'ok'
