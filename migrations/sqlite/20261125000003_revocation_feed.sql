-- What every process on the file needs to keep its in-memory revocation
-- state current (see the PostgreSQL migration of the same name).

-- A deleted user's row is gone, but its tokens must stay revoked until
-- they expire: the deletion is kept here until then.
create table deleted_users (
    user_id    blob primary key,
    deleted_at integer not null
) strict;
create index deleted_users_deleted_at_idx on deleted_users (deleted_at);

create trigger users_record_delete after delete on users
begin
    insert or ignore into deleted_users (user_id, deleted_at) values (old.id, unixepoch());
end;

-- The catch-up reads the users changed since its last pass, whoever
-- changed them (authd stamps updated_at itself; this catches the rest).
create index users_updated_at_idx on users (updated_at);

create trigger users_set_updated_at after update on users
    for each row when new.updated_at = old.updated_at
begin
    update users set updated_at = unixepoch() where id = new.id;
end;
