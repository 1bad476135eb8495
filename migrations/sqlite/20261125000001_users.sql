-- Accounts that can log in. The same table as on PostgreSQL, in SQLite's
-- types: ids are 16-byte UUID blobs, instants whole seconds since the Unix
-- epoch (read them with datetime(col, 'unixepoch')), roles a JSON array.
create table users (
    id                 blob primary key check (length(id) = 16),
    username           text not null check (length(cast(username as blob)) between 1 and 256),
    -- The name as authd matches it (lower case, Unicode NFC).
    username_key       text not null,
    password_hash      text not null,
    roles              text not null default '[]' check (json_valid(roles) and json_type(roles) = 'array'),
    -- Set while the account is disabled; a disabled user cannot log in.
    disabled_at        integer null,
    -- Tokens issued before this instant are revoked (set on disable and on
    -- every password change).
    tokens_valid_after integer null,
    created_at         integer not null,
    updated_at         integer not null
) strict;

-- `Alice` and `alice` are one user.
create unique index users_username_key on users (username_key);
