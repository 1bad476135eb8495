-- What every instance sharing this database must agree on, recorded by the
-- first to start: the claims tokens carry (an instance with others refuses
-- to start), and the longest access-token lifetime any instance has
-- issued with, raised by each start, never lowered. The purge keeps deleted
-- users and retired keys for that long (plus the largest leeway allowed),
-- so no instance can outlive another's record of them.
create table deployment (
    id                      boolean primary key default true check (id),
    issuer                  text not null,
    audience                text not null,
    max_access_token_ttl_s  bigint not null check (max_access_token_ttl_s > 0),
    created_at              timestamptz not null default now(),
    updated_at              timestamptz not null default now()
);
