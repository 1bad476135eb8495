-- Logins that live on through refresh tokens (see the PostgreSQL migration
-- of the same name); instants in Unix seconds, ids 16-byte blobs.
create table sessions (
    id                blob primary key check (length(id) = 16),
    user_id           blob not null references users (id) on delete cascade,
    created_at        integer not null,
    last_refreshed_at integer not null,
    expires_at        integer not null,
    max_expires_at    integer not null,
    revoked_at        integer null,
    client_address    text null,
    user_agent        text null,
    generation        integer not null check (generation >= 1),
    access_expires_at integer not null
) strict;

create index sessions_user_id_idx on sessions (user_id, created_at desc);
create index sessions_revoked_at_idx on sessions (revoked_at, id) where revoked_at is not null;
create index sessions_access_expires_at_idx on sessions (access_expires_at);

-- A user's cut-off ends the sessions started before it, whoever sets it.
create trigger users_end_sessions after update of tokens_valid_after on users
    for each row when new.tokens_valid_after is not null
        and new.tokens_valid_after is not old.tokens_valid_after
begin
    update sessions set revoked_at = unixepoch()
     where user_id = new.id and revoked_at is null and created_at < new.tokens_valid_after;
end;

-- The session of a logged-out token, when it had one: writing the row ends
-- the session too, in the same statement (one commit).
alter table revoked_tokens add column session_id blob null;

create trigger revoked_tokens_end_session after insert on revoked_tokens
    for each row when new.session_id is not null
begin
    update sessions set revoked_at = coalesce(revoked_at, unixepoch())
     where id = new.session_id and user_id = new.user_id;
end;
