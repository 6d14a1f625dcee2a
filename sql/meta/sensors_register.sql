-- Register sensors from parallel lists (one statement for all; a known sensor keeps its
-- first registration).
insert into sensors by name
select
    unnest($sensor_id) as sensor_id,
    unnest($customer) as customer,
    unnest($source) as source,
    unnest($timezone) as timezone,
    unnest($unit) as unit,
    unnest($bucket) as bucket,
    unnest(cast($levels as varchar[][])) as levels,
    now() as first_seen
on conflict do nothing
