-- Open mart journals (.staging/journal-<jid>/): a jid commits with the mart_files rows of its
-- transaction, so a writer that finds a journal knows whether to keep or undo its changes.
create table if not exists mart_journal (
    jid       varchar   not null primary key,
    opened_at timestamp not null
)
