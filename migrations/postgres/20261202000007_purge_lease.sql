-- Behind a pooler in transaction mode a session advisory lock does not
-- hold, so the one-purger-at-a-time rule is a lease instead: one row, taken
-- when absent or expired, renewed by every batch, deleted at the end. (A
-- direct connection keeps using the advisory lock; SQLite, a lock file.)
create table purge_lease (
    id         boolean primary key default true check (id),
    holder     uuid not null,
    expires_at timestamptz not null
);
