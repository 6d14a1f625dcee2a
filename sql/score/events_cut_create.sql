-- events_cut: per sensor in `score_scope`, the first reading its events are rebuilt from.
-- A flagged reading joins the episode before it when the reading before it was flagged (at
-- most $prev_horizon earlier) or when the previous flagged reading is at most
-- $event_merge_gap earlier; rows before rescore_from are as stored. So the stored events
-- ending more than that reach before rescore_from stay as they are, and the rebuild starts at
-- the first stored event ending later (it may grow), or at the reach when there is none.
-- Inputs: `score_scope`, `previous_events` (the bucket's events as stored).
create or replace temp table events_cut as
with
scope as (
    select
        sensor_id,
        rescore_from - greatest($prev_horizon::interval, $event_merge_gap::interval) as reach
    from score_scope
),
cut as (
    select s.sensor_id, least(s.reach, min(e.start_ts)) as rebuild_from
    from scope as s
    left join previous_events as e
        on e.sensor_id = s.sensor_id and e.end_ts >= s.reach
    group by s.sensor_id, s.reach
)
select * from cut
