-- List one published lake file (with its rows, size and time span) in the catalog.
insert into lake_files (kind, path, bucket, rows, bytes, min_ts, max_ts, created_at)
values ($kind, $path, $bucket, $rows, $bytes, $min_ts, $max_ts, now())
