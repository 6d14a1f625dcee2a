-- Forget the scored lake files $gone of $buckets: they are no longer in the lake.
delete from score_files
where list_contains($buckets, bucket) and list_contains($gone, path)
