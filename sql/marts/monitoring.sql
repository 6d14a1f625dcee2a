-- monitoring mart: every check of every `oxy monitor` run.
with checks as (
    select * from monitoring
)

select
    time,
    scope,
    "check",
    value,
    threshold,
    status,
    reason
from checks
order by time, scope, "check"
