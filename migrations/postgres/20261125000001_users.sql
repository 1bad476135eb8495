-- Accounts that can log in.
create table users (
    id                 uuid primary key,
    username           text not null,
    password_hash      text not null,
    roles              text[] not null default '{}',
    -- Set while the account is disabled; a disabled user cannot log in.
    disabled_at        timestamptz null,
    -- Tokens issued before this instant are revoked (set on disable and on
    -- every password change).
    tokens_valid_after timestamptz null,
    created_at         timestamptz not null default now(),
    updated_at         timestamptz not null default now(),
    constraint users_username_length check (octet_length(username) between 1 and 256)
);

-- `Alice` and `alice` are one user.
create unique index users_username_key on users (lower(username));

create function set_updated_at() returns trigger language plpgsql as $$
begin
    new.updated_at = now();
    return new;
end;
$$;

create trigger users_set_updated_at
    before update on users
    for each row execute function set_updated_at();
