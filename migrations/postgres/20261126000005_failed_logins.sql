-- The login throttle's count of failed Logins per canonical username
-- (users.username_key; unknown names are counted too, so there is no
-- foreign key). Shared by every instance on the database. Rows are
-- forgotten by the purge task once their last failure is old.
create table failed_logins (
    username_key   text primary key,
    failures       integer not null check (failures > 0),
    last_failed_at timestamptz not null,
    blocked_until  timestamptz
);
create index failed_logins_last_failed_at_idx on failed_logins (last_failed_at);
