-- One row per source seen in the catalog: files ingested, readings accepted, rows quarantined,
-- sensors first delivered, and the last ingest (for `oxy sources`).
with
logged as (
    select
        source,
        count(*) filter (where status = 'ok') as files,
        coalesce(sum(accepted) filter (where status = 'ok'), 0) as readings,
        coalesce(sum(quarantined) filter (where status = 'ok'), 0) as quarantined,
        max(finished_at) as last_ingest
    from ingest_log
    group by source
),
delivered as (
    select source, count(*) as sensors from sensors group by source
),
sources as (
    select
        coalesce(l.source, d.source) as source,
        coalesce(l.files, 0) as files,
        coalesce(l.readings, 0) as readings,
        coalesce(l.quarantined, 0) as quarantined,
        coalesce(d.sensors, 0) as sensors,
        l.last_ingest
    from logged as l
    full outer join delivered as d on l.source = d.source
)
select * from sources order by source
