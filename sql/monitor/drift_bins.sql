-- Per sensor of one bucket, per block d = 0 .. $blocks - 1 of length $step before $latest
-- (block d holds ($latest - (d + 1) x $step, $latest - d x $step]): how many readings fall in
-- each bin between the quantiles $quantiles of the sensor's reference window
-- ($reference_start, $reference_end] (a reading equal to an edge goes above it, as numpy's
-- searchsorted side='right'; equal edges merge into one). `readings` counts every reading,
-- `normal` leaves out the minutes listed in `flagged_minutes` (baselines are normal behaviour).
-- Summing blocks gives the bin counts of any window of whole blocks: the judged window's and
-- those of the earlier windows that calibrate it.
with bucket_readings as (
    select sensor_id, ts, value
    from read_parquet($paths, union_by_name = true, hive_partitioning = false)
    where
        value is not null
        and ts > $latest - $blocks * $step
        and ts <= $latest
),

marked as (
    select
        r.sensor_id,
        r.ts,
        r.value,
        f.ts is not null as flagged,
        cast(floor(epoch($latest - r.ts) / epoch($step)) as integer) as block
    from bucket_readings as r
    left join flagged_minutes as f on f.sensor_id = r.sensor_id and f.ts = r.ts
),

edges as (
    select
        sensor_id,
        list_sort(list_distinct(quantile_cont(value, $quantiles))) as edges
    from marked
    where not flagged and ts > $reference_start and ts <= $reference_end
    group by sensor_id
),

binned as (
    select
        m.sensor_id,
        m.block,
        m.flagged,
        coalesce(len(list_filter(e.edges, lambda edge: edge <= m.value)), 0) as bin
    from marked as m
    left join edges as e using (sensor_id)
)

select
    sensor_id,
    block,
    bin,
    count(*) as readings,
    count(*) filter (where not flagged) as normal
from binned
group by sensor_id, block, bin
order by sensor_id, block, bin
