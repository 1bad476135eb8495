-- The keys that sign access tokens (see the PostgreSQL migration of the
-- same name). Every process on the file reads them again at each catch-up.
create table signing_keys (
    kid                text primary key,
    public_key         blob not null check (length(public_key) = 32),
    sealed_private_key blob not null,
    sealed_by          text not null,
    created_at         integer not null,
    activates_at       integer not null,
    retires_at         integer null,
    revoked_at         integer null
) strict;
