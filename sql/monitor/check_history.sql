-- The calibration history of a check that cannot be recomputed from the warehouse (a
-- forecast's error on the minutes that arrived after it): per scope, the latest $limit values
-- that earlier monitoring runs (before $now) recorded for check $check.
with recorded as (
    select scope, time, value
    from monitoring
    where "check" = $check and time < $now and value is not null and status <> 'skipped'
),

ranked as (
    select scope, value, row_number() over (partition by scope order by time desc) as n
    from recorded
)

select scope, list(value order by n) as history
from ranked
where n <= $limit
group by scope
