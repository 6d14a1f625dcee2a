-- score_scope: per sensor in scope the first changed hour (baselines refit from there), the
-- first rescored reading and the first reading the minute windows need.
create or replace temp table score_scope (
    sensor_id varchar primary key,
    changed_from timestamp,
    rescore_from timestamp,
    read_from timestamp
)
