-- Under `oxy score --full`: forget which lake files of one bucket were scored.
delete from score_files
where bucket = $bucket
