-- Every bucket that holds readings or was scored before (its scores may need removing).
select distinct bucket from lake_files where kind = 'readings'
union
select distinct bucket from score_files
order by 1
