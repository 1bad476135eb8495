-- What every instance sharing this database must agree on (see the
-- PostgreSQL migration of the same name): one row; instants in Unix seconds.
create table deployment (
    id                      int primary key default 1 check (id = 1),
    issuer                  text not null,
    audience                text not null,
    max_access_token_ttl_s  integer not null check (max_access_token_ttl_s > 0),
    created_at              integer not null,
    updated_at              integer not null
) strict;
