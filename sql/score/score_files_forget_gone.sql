-- Forget the scored lake files of one bucket that are no longer in the lake.
delete from score_files
where bucket = $bucket and list_contains($gone, path)
