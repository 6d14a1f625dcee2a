-- Per sensor of one bucket: how many of its readings in the reference and in the recent window
-- fall in each bin between the reference window's quantiles $quantiles (input for PSI; a
-- reading equal to an edge goes above it, as numpy's searchsorted side='right'; equal edges
-- merge into one). Reference minutes listed in `reference_anomalies` are left out: the baseline
-- is normal behaviour.
with bucket_readings as (
    select sensor_id, ts, value
    from read_parquet($paths, union_by_name = true, hive_partitioning = false)
    where
        value is not null
        and (
            (ts > $reference_start and ts <= $reference_end)
            or (ts > $recent_start and ts <= $latest)
        )
),

windowed as (
    select r.sensor_id, r.value, r.ts > $recent_start as is_recent
    from bucket_readings as r
    anti join reference_anomalies as a on a.sensor_id = r.sensor_id and a.ts = r.ts
),

edges as (
    select
        sensor_id,
        list_sort(list_distinct(quantile_cont(value, $quantiles))) as edges
    from windowed
    where not is_recent
    group by sensor_id
),

binned as (
    select
        w.sensor_id,
        w.is_recent,
        coalesce(len(list_filter(e.edges, lambda edge: edge <= w.value)), 0) as bin
    from windowed as w
    left join edges as e using (sensor_id)
)

select sensor_id, is_recent, bin, count(*) as readings
from binned
group by sensor_id, is_recent, bin
order by sensor_id, is_recent, bin
