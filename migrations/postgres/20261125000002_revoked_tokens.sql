-- Logged-out tokens, kept until the token could no longer validate anyway.
create table revoked_tokens (
    jti        uuid primary key,
    user_id    uuid not null,
    -- The token's `exp` plus the validation leeway: after this instant the
    -- row can be purged without bringing the token back to life.
    expires_at timestamptz not null,
    revoked_at timestamptz not null default now()
);

create index revoked_tokens_expires_at_idx on revoked_tokens (expires_at);
