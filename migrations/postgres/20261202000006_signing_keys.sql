-- The keys that sign access tokens, shared by every instance. A key's
-- state follows from its instants: pending before `activates_at`, active
-- until `retires_at` (its successor's activation), then retired and still
-- published until its last token has expired; revoked once `revoked_at` is
-- set. Private keys are sealed with the key-encryption key, never stored
-- in plaintext.
create table signing_keys (
    -- The RFC 7638 thumbprint of the public key, as in the tokens' `kid`.
    kid                text primary key,
    public_key         bytea not null check (length(public_key) = 32),
    -- AES-256-GCM of the PKCS#8 document, bound to the kid.
    sealed_private_key bytea not null,
    -- The id of the key-encryption key that sealed it.
    sealed_by          text not null,
    created_at         timestamptz not null,
    activates_at       timestamptz not null,
    retires_at         timestamptz null,
    revoked_at         timestamptz null
);

-- Every change is announced on the revocation channel, so each instance
-- reads the key set again at once (a revoked key stops verifying within the
-- bound of a revocation).
create function authd_announce_key_change() returns trigger language plpgsql as $$
begin
    perform pg_notify('authd_revocations', 'keys');
    return null;
end;
$$;

create trigger signing_keys_announce
    after insert or update or delete on signing_keys
    for each statement execute function authd_announce_key_change();
