-- Committed readings of one bucket inside a new file's time range, for duplicate detection.
-- Input: $lake (the bucket's lake files whose [min_ts, max_ts] overlaps), $lo, $hi, and
-- $sensors (the file's sensors of this bucket that were registered before it).
-- The files are sorted by (sensor_id, ts): the filters prune row groups by statistics.
with
lake as (select sensor_id, ts, value from read_parquet($lake)),
in_range as (
    select * from lake
    where ts between $lo and $hi and sensor_id in (select unnest($sensors))
)
select * from in_range
