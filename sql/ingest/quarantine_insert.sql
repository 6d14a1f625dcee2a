-- Append the registered frame `quarantine_rows` to the quarantine.
insert into quarantine by name
select * from quarantine_rows
