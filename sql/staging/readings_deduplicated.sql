-- Outcome of every candidate reading of one file in one bucket: accepted, duplicate (same key
-- and value as a kept row) or a conflicting duplicate (same key, other value). First ingested
-- wins: a row already in the lake beats the file; within the file the first line wins.
-- Inputs: relations `candidates` (sensor_id, ts, value, ordinal) and `lake_overlap`
-- (sensor_id, ts, value: committed readings of the bucket in the file's time range).
-- Parameters: $unit, $customer, $source_file, $ingested_at.
with
batch as (select * from candidates),
existing as (select * from lake_overlap),
ranked as (
    select
        sensor_id,
        ts,
        value,
        ordinal,
        row_number() over w as occurrence,
        first(value) over w as first_value,
        first(ordinal) over w as first_ordinal
    from batch
    window w as (partition by sensor_id, ts order by ordinal)
),
compared as (
    select r.*, e.value as existing_value
    from ranked as r
    left join existing as e using (sensor_id, ts)
),
classified as (
    select
        sensor_id,
        ts,
        value,
        ordinal,
        case
            when existing_value is not null and value = existing_value then 'duplicate'
            when existing_value is not null then 'conflict_existing'
            when occurrence > 1 and value = first_value then 'duplicate'
            when occurrence > 1 then 'conflict_in_file'
            else 'accepted'
        end as outcome,
        coalesce(existing_value, first_value) as kept_value,
        first_ordinal as kept_ordinal,
        $unit as unit,
        $customer as customer,
        $source_file as source_file,
        cast($ingested_at as timestamp) as ingested_at
    from compared
)
select * from classified
