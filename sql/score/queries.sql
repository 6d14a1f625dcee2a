-- The bookkeeping queries of `oxy score` (engine/anomaly.py), one named block each.
-- Tables that scoring builds have their own files (sql/catalog, sql/intermediate, sql/marts).

-- name: buckets
-- Every bucket that holds readings or was scored before (its scores may need removing).
select distinct bucket from lake_files where kind = 'readings'
union
select distinct bucket from score_files
order by 1

-- name: readings_files
-- Every readings lake file with its bucket and first reading.
select bucket, path, min_ts
from lake_files
where kind = 'readings'

-- name: scored_files
-- Every lake file `oxy score` already scored, with its bucket and first reading.
select bucket, path, min_ts
from score_files

-- name: first_new_readings
-- Per sensor of the new lake files $files: its earliest new reading, and the sparsest hourly
-- median step (seconds) of its scored hours in the two days before it (null: none scored),
-- which bounds how far the windows of the readings before it reach.
with
new as (
    select sensor_id, min(ts) as first_ts
    from read_parquet($files)
    group by sensor_id
)
select n.sensor_id, n.first_ts, max(h.dt_med) as sparsest_step
from new as n
left join score_hourly as h
    on h.sensor_id = n.sensor_id
    and h.hour >= n.first_ts - interval 2 days
    and h.hour < n.first_ts
group by n.sensor_id, n.first_ts

-- name: bucket_sizes
-- Per bucket of $buckets: the readings stored, the sensors registered and the latest reading.
with
wanted as (
    select unnest($buckets) as bucket
),
stored as (
    select bucket, sum(rows) as readings, max(max_ts) as last_ts
    from lake_files
    where kind = 'readings'
    group by bucket
),
registered as (
    select bucket, count(*) as sensors
    from sensors
    group by bucket
)
select w.bucket, coalesce(s.readings, 0) as readings, coalesce(r.sensors, 0) as sensors, s.last_ts
from wanted as w
left join stored as s using (bucket)
left join registered as r using (bucket)

-- name: site_sensors
-- Every sensor with its bucket, time zone, unit and site, the group whose shared movement is
-- no anomaly of one probe: the customer and the first $site_levels tag levels (weather, tide
-- or a plankton bloom moves every probe of a pond farm or a RAS hall; fouling fouls one). A
-- sensor without a deeper tag level, or $site_levels = 0, has no site (null).
select
    sensor_id,
    bucket,
    timezone,
    unit,
    case when $site_levels > 0 and len(levels) > $site_levels
        then customer || chr(31) || array_to_string(levels[1:$site_levels], chr(31))
    end as site
from sensors
order by sensor_id

-- name: readings_files_in_scope
-- The readings lake files of $buckets that hold a reading at or after $read_from (or have no
-- stored span).
select path
from lake_files
where kind = 'readings'
    and list_contains($buckets, bucket)
    and (max_ts is null or max_ts >= $read_from)
order by path

-- name: score_files_forget_bucket
-- Under `oxy score --full`: forget which lake files of one bucket were scored.
delete from score_files
where bucket = $bucket

-- name: score_files_forget_all
-- Forget which lake files were scored (the next `oxy score` rescores everything).
delete from score_files

-- name: score_files_forget_gone
-- Forget the scored lake files $gone of $buckets: they are no longer in the lake.
delete from score_files
where list_contains($buckets, bucket) and list_contains($gone, path)

-- name: score_files_record_new
-- Record the new lake files $new as scored.
insert into score_files
select path, bucket, min_ts, now()
from lake_files
where kind = 'readings' and list_contains($new, path)

-- name: score_hourly_columns
-- The columns of the stored `score_hourly` table, in order (empty when it does not exist).
select column_name
from information_schema.columns
where table_name = 'score_hourly' and table_schema = 'main'
order by ordinal_position

-- name: score_hourly_forget_all
delete from score_hourly

-- name: site_hourly_forget_all
delete from site_hourly

-- name: score_hourly_stored
-- The stored hourly statistics of the sensors of `hourly_wanted` (sensor_id, since, until):
-- their hours in [since, until).
select h.*
from score_hourly as h
join hourly_wanted as w using (sensor_id)
where h.hour >= w.since and h.hour < w.until
order by h.sensor_id, h.hour

-- name: score_hourly_forget_changed
-- Forget the stored hours of the sensors of `score_scope` from their first changed hour on.
delete from score_hourly
where exists (
    select 1 from score_scope as s
    where s.sensor_id = score_hourly.sensor_id and score_hourly.hour >= s.rescore_from
)

-- name: score_hourly_store
insert into score_hourly by name
select * from new_hourly

-- name: score_hourly_store_files
-- Store the hourly statistics a cluster worker staged ($files: Parquet of score_hourly's
-- columns).
insert into score_hourly by name
select * from read_parquet($files)

-- name: site_hourly_stored
-- The stored movement of the sites of `site_wanted` (site, since) from `since` on.
select h.site, h.hour, h.ctx_move, h.drift_move
from site_hourly as h
join site_wanted as w using (site)
where h.hour >= w.since
order by h.site, h.hour

-- name: site_hourly_forget
-- Forget the stored movement of the sites of `site_wanted` from their `since` on.
delete from site_hourly
where exists (
    select 1 from site_wanted as w
    where w.site = site_hourly.site and site_hourly.hour >= w.since
)

-- name: site_hourly_store
insert into site_hourly by name
select * from new_site_hourly

-- name: site_lake_files
-- The readings lake files of $buckets that hold a reading at or after $read_from, with their
-- rows.
select bucket, path, rows
from lake_files
where kind = 'readings'
    and list_contains($buckets, bucket)
    and (max_ts is null or max_ts >= $read_from)
order by bucket, path

-- name: readings_raw
-- The lake rows of the sensors of `read_scope` (sensor_id, read_from) from their read_from
-- on, duplicates of a (sensor_id, ts) included (the first ingested wins, in
-- anomaly.first_ingested, as in ingest). $read_from: the earliest, pushed into the scan.
select r.sensor_id, r.ts, r.value, r.ingested_at
from read_parquet($files) as r
join read_scope as s using (sensor_id)
where r.ts >= $read_from and r.ts >= s.read_from

-- name: anomaly_totals
-- How many scored readings are anomalous and how many anomaly events there are: every flagged
-- reading lies in exactly one event (its `readings`), so both come from the small events mart.
select coalesce(sum(readings), 0)::bigint as anomalous_readings, count(*) as events
from anomaly_events

-- name: events_first_rebuilt
-- Per bucket, the first reading any of its sensors' events are rebuilt from (`events_cut`):
-- the bucket's score files that end before it are not read.
select s.bucket, min(c.rebuild_from) as rebuild_from
from events_cut as c
join sensors as s using (sensor_id)
group by s.bucket

-- name: score_scope_create
-- score_scope: per sensor in scope the first rescored hour (its hourly statistics, baselines
-- and readings are recomputed from there on).
create or replace temp table score_scope (
    sensor_id varchar primary key,
    rescore_from timestamp
)

-- name: score_scope_insert
insert into score_scope select sensor_id, rescore_from from scope_changes

-- name: new_readings_unregistered
-- How many distinct sensors of `new_readings` are not registered.
select count(distinct n.sensor_id) - count(distinct s.sensor_id) as sensors
from new_readings as n
left join sensors as s using (sensor_id)
