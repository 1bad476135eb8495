-- Logins that live on through refresh tokens. The database holds no value
-- from which a refresh token can be made: a token is the session id and a
-- generation, authenticated with a key derived from the key-encryption key,
-- which is kept outside the database.
create table sessions (
    id                uuid primary key,
    user_id           uuid not null references users (id) on delete cascade,
    created_at        timestamptz not null,
    last_refreshed_at timestamptz not null,
    -- When the refresh token lapses unless used: the last refresh plus the
    -- refresh-token lifetime, never past `max_expires_at`.
    expires_at        timestamptz not null,
    -- The Login plus the session's maximum age.
    max_expires_at    timestamptz not null,
    revoked_at        timestamptz null,
    client_address    text null,
    user_agent        text null,
    -- The generation of the newest refresh token; the one before it is
    -- still taken within the reuse grace of `last_refreshed_at`.
    generation        bigint not null check (generation >= 1),
    -- The latest `exp` plus leeway of an access token the session issued:
    -- a revoked session is held in memory until then, and its row is kept.
    access_expires_at timestamptz not null
);

create index sessions_user_id_idx on sessions (user_id, created_at desc);
create index sessions_revoked_at_idx on sessions (revoked_at, id) where revoked_at is not null;
create index sessions_access_expires_at_idx on sessions (access_expires_at);

-- An ended session is announced on the revocation channel when its
-- transaction commits:
--   session <id> <access_expires_at, Unix seconds>
create function authd_announce_session_end() returns trigger language plpgsql as $$
begin
    perform pg_notify('authd_revocations',
        'session ' || new.id || ' ' || ceil(extract(epoch from new.access_expires_at))::bigint);
    return null;
end;
$$;

create trigger sessions_announce_end
    after update of revoked_at on sessions
    for each row
    when (old.revoked_at is null and new.revoked_at is not null)
    execute function authd_announce_session_end();

-- A user's cut-off (a password change, a disabling, a logout everywhere)
-- ends the sessions started before it, whoever sets it.
create function authd_end_sessions_before_cutoff() returns trigger language plpgsql as $$
begin
    update sessions set revoked_at = now()
     where user_id = new.id and revoked_at is null and created_at < new.tokens_valid_after;
    return null;
end;
$$;

create trigger users_end_sessions
    after update of tokens_valid_after on users
    for each row
    when (new.tokens_valid_after is not null
          and new.tokens_valid_after is distinct from old.tokens_valid_after)
    execute function authd_end_sessions_before_cutoff();

-- The session of a logged-out token, when it had one: writing the row ends
-- the session too, in the same statement.
alter table revoked_tokens add column session_id uuid null;

create function authd_end_session_of_revoked_token() returns trigger language plpgsql as $$
begin
    update sessions set revoked_at = coalesce(revoked_at, now())
     where id = new.session_id and user_id = new.user_id;
    return null;
end;
$$;

create trigger revoked_tokens_end_session
    after insert on revoked_tokens
    for each row
    when (new.session_id is not null)
    execute function authd_end_session_of_revoked_token();
