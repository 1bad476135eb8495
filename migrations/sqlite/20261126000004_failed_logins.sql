-- The login throttle's count of failed Logins per canonical username (see
-- the PostgreSQL migration of the same name).
create table failed_logins (
    username_key   text primary key,
    failures       integer not null check (failures > 0),
    last_failed_at integer not null,
    blocked_until  integer
) strict;
create index failed_logins_last_failed_at_idx on failed_logins (last_failed_at);
