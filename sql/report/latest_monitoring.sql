-- The checks of the latest `oxy monitor` run, alerts first.
select time, scope, "check", value, threshold, status, reason
from monitoring
where time = (select max(time) from monitoring)
order by
    case status when 'alert' then 0 when 'warn' then 1 when 'ok' then 2 else 3 end,
    scope,
    "check"
