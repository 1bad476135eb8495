-- Logged-out tokens, kept until the token could no longer validate anyway.
create table revoked_tokens (
    jti        blob primary key check (length(jti) = 16),
    user_id    blob not null,
    -- The token's `exp` plus the validation leeway, in Unix seconds: after
    -- this instant the row can be purged without bringing the token back
    -- to life.
    expires_at integer not null,
    revoked_at integer not null
) strict, without rowid;

create index revoked_tokens_expires_at_idx on revoked_tokens (expires_at);
