-- Drop the per-bucket list of flagged minutes.
drop table if exists flagged_minutes
