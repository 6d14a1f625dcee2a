-- The first reading any sensor's events are rebuilt from (`events_cut`): score files that end
-- before it are not read.
select min(rebuild_from) from events_cut
