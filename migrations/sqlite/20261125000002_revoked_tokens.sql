-- Logged-out tokens, kept until the token could no longer validate anyway.
create table revoked_tokens (
    -- The order rows were committed in (SQLite has one writer at a time):
    -- other processes sharing the file read what is new past the last
    -- `seq` they saw. AUTOINCREMENT: a number is never used twice.
    seq        integer primary key autoincrement,
    jti        blob not null unique check (length(jti) = 16),
    user_id    blob not null,
    -- The token's `exp` plus the validation leeway, in Unix seconds: after
    -- this instant the row can be purged without bringing the token back
    -- to life.
    expires_at integer not null,
    revoked_at integer not null
) strict;

create index revoked_tokens_expires_at_idx on revoked_tokens (expires_at);
