-- What every instance needs to keep its in-memory revocation state current.

-- A deleted user's row is gone, but its tokens must stay revoked on every
-- instance until they expire: the deletion is kept here until then.
create table deleted_users (
    user_id    uuid primary key,
    deleted_at timestamptz not null default now()
);
create index deleted_users_deleted_at_idx on deleted_users (deleted_at);

-- The periodic catch-up reads what changed since its last pass, in pages
-- ordered by (revoked_at, jti).
create index revoked_tokens_revoked_at_jti_idx on revoked_tokens (revoked_at, jti);
create index users_updated_at_idx on users (updated_at);

-- Every change that revokes tokens is announced on the channel
-- `authd_revocations` when its transaction commits, whoever makes it
-- (authd, its CLI, or an operator's SQL). Payloads:
--   token <jti> <expires_at, Unix seconds>
--   user <id> <disabled: true|false> <tokens_valid_after, Unix seconds, or ->
--   deleted <id>
create function authd_announce_revoked_token() returns trigger language plpgsql as $$
begin
    perform pg_notify('authd_revocations',
        'token ' || new.jti || ' ' || ceil(extract(epoch from new.expires_at))::bigint);
    return null;
end;
$$;

create trigger revoked_tokens_announce
    after insert on revoked_tokens
    for each row execute function authd_announce_revoked_token();

create function authd_announce_user_change() returns trigger language plpgsql as $$
begin
    if tg_op = 'DELETE' then
        insert into deleted_users (user_id) values (old.id) on conflict do nothing;
        perform pg_notify('authd_revocations', 'deleted ' || old.id);
    else
        perform pg_notify('authd_revocations',
            'user ' || new.id || ' ' || (new.disabled_at is not null)::text || ' '
            || coalesce(ceil(extract(epoch from new.tokens_valid_after))::bigint::text, '-'));
    end if;
    return null;
end;
$$;

create trigger users_announce_change
    after update of disabled_at, tokens_valid_after on users
    for each row
    when (old.disabled_at is distinct from new.disabled_at
          or old.tokens_valid_after is distinct from new.tokens_valid_after)
    execute function authd_announce_user_change();

create trigger users_announce_delete
    after delete on users
    for each row execute function authd_announce_user_change();
