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
    $note as note
