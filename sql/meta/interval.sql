-- A duration setting such as '60 minutes' as an interval.
select cast($text as interval) as duration
