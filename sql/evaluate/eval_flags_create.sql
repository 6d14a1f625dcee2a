-- eval_flags: which readings a detector flagged (filled per bucket by the seed's rules).
create or replace temp table eval_flags (
    sensor_id varchar,
    ts timestamp,
    is_anomaly boolean
)
