-- Forget which lake files were scored (the next `oxy score` rescores everything).
delete from score_files
