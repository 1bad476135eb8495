-- Users are listed, a page at a time, in the code-point order of their
-- name's key, whatever the database's locale (the order SQLite keeps too).
create index users_username_key_order on users (username_key collate "C");
