-- The calibration history of a check that cannot be recomputed from the warehouse (a
-- forecast's error on the minutes that arrived after it): per scope, the first $limit values
-- that monitoring runs in [$since, $now) recorded for check $check, i.e. what the production
-- run scored while fresh (a model that slowly goes stale is judged against itself then).
with recorded as (
    select scope, time, value
    from monitoring
    where
        "check" = $check
        and time >= $since
        and time < $now
        and value is not null
        and status <> 'skipped'
),

ranked as (
    select scope, value, row_number() over (partition by scope order by time) as n
    from recorded
)

select scope, list(value order by n) as history
from ranked
where n <= $limit
group by scope
