-- extra_readings: readings scored without being in the lake (`score_readings`).
create or replace temp table extra_readings (
    sensor_id varchar,
    ts timestamp,
    value double,
    ingested_at timestamp
)
