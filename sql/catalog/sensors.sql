-- One row per sensor ever ingested: identity, owner, site time zone, unit, partition bucket.
create table if not exists sensors (
    sensor_id  varchar   not null primary key,
    customer   varchar   not null,
    source     varchar   not null,   -- [sources.NAME] that first delivered it
    timezone   varchar   not null,   -- IANA zone of the site: hour-of-day baselines use it
    unit       varchar   not null,   -- 'mg/L' | '%sat'
    bucket     integer   not null,   -- crc32(sensor_id) % warehouse.buckets
    levels     varchar[] not null,   -- tag levels: the sensor_id split on the source's separator
    first_seen timestamp not null
)
