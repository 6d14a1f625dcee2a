-- The earliest reading any sensor of `score_scope` needs (its read_from): a constant the lake
-- scan filters on, so Parquet skips what is older before decoding the other columns.
select min(read_from) from score_scope
