-- Inference scores exactly the new readings: rescore from the first new one.
update score_scope
set rescore_from = changed_from
