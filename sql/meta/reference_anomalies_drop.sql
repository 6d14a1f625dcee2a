-- Drop the per-bucket list of flagged reference minutes.
drop table if exists reference_anomalies
