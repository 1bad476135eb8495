-- Names are matched by a key that authd computes (lower case, then Unicode
-- NFC) instead of the database's lower(), whose result for letters beyond
-- ASCII depends on the server's locale. Existing rows take lower(username),
-- which is the same key for every ASCII name.
alter table users add column username_key text;
update users set username_key = lower(username);
alter table users alter column username_key set not null;

drop index users_username_key;
create unique index users_username_key on users (username_key);
