//! The `users` table on SQLite: ids as 16-byte blobs, instants as Unix
//! seconds, roles as a JSON array.

use sqlx::FromRow;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{SqliteStore, from_unix, to_unix};
use crate::{
    domain::{UserId, Username},
    store::{AddUserError, NewUser, StoreError, UserRecord},
};

/// A row of `users` as SQLite returns it.
#[derive(FromRow)]
struct UserRow {
    id: Uuid,
    username: String,
    password_hash: String,
    roles: String,
    disabled_at: Option<i64>,
    tokens_valid_after: Option<i64>,
    created_at: i64,
}

impl UserRow {
    fn into_record(self) -> Result<UserRecord, sqlx::Error> {
        Ok(UserRecord {
            id: self.id,
            username: self.username,
            password_hash: self.password_hash,
            roles: serde_json::from_str(&self.roles)
                .map_err(|err| sqlx::Error::Decode(err.into()))?,
            disabled_at: self.disabled_at.map(from_unix).transpose()?,
            tokens_valid_after: self.tokens_valid_after.map(from_unix).transpose()?,
            created_at: from_unix(self.created_at)?,
        })
    }
}

/// `select … from users`, followed by the given clause, as one static string.
macro_rules! select_users {
    ($tail:literal) => {
        concat!(
            "select id, username, password_hash, roles, disabled_at, tokens_valid_after, created_at \
             from users ",
            $tail
        )
    };
}

impl SqliteStore {
    pub(in crate::store) async fn find_user_by_name(
        &self,
        username: &Username,
    ) -> Result<Option<UserRecord>, StoreError> {
        self.bounded(async {
            sqlx::query_as::<_, UserRow>(select_users!("where username_key = $1"))
                .bind(username.key())
                .fetch_optional(&self.pool)
                .await?
                .map(UserRow::into_record)
                .transpose()
        })
        .await
    }

    pub(in crate::store) async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.bounded(async {
            sqlx::query_as::<_, UserRow>(select_users!("order by username_key"))
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(UserRow::into_record)
                .collect()
        })
        .await
    }

    pub(in crate::store) async fn count_users(&self) -> Result<u64, StoreError> {
        let count: i64 = self
            .bounded(sqlx::query_scalar("select count(*) from users").fetch_one(&self.pool))
            .await?;
        Ok(count.unsigned_abs())
    }

    pub(in crate::store) async fn add_user(&self, user: NewUser<'_>) -> Result<(), AddUserError> {
        let roles = serde_json::to_string(user.roles)
            .map_err(|err| StoreError::Query(sqlx::Error::Encode(err.into())))?;
        let result = self
            .bounded(
                sqlx::query(
                    "insert into users (id, username, username_key, password_hash, roles, \
                     created_at, updated_at) values ($1, $2, $3, $4, $5, $6, $6)",
                )
                .bind(user.id.as_uuid())
                .bind(user.username.as_str())
                .bind(user.username.key())
                .bind(user.password_hash)
                .bind(roles)
                .bind(to_unix(OffsetDateTime::now_utc()))
                .execute(&self.pool),
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            // The id is a fresh UUIDv7: the one unique key that can clash
            // is the name's.
            Err(StoreError::Query(sqlx::Error::Database(err))) if err.is_unique_violation() => {
                Err(AddUserError::NameTaken)
            }
            Err(err) => Err(AddUserError::Store(err)),
        }
    }

    pub(in crate::store) async fn set_password(
        &self,
        username: &Username,
        password_hash: &str,
        cutoff: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let done = self
            .bounded(
                sqlx::query(
                    "update users set password_hash = $2, \
                     tokens_valid_after = max(coalesce(tokens_valid_after, $3), $3), \
                     updated_at = $4 \
                     where username_key = $1",
                )
                .bind(username.key())
                .bind(password_hash)
                .bind(to_unix(cutoff))
                .bind(to_unix(OffsetDateTime::now_utc()))
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(in crate::store) async fn replace_password_hash(
        &self,
        user: UserId,
        old: &str,
        new: &str,
    ) -> Result<bool, StoreError> {
        let done = self
            .bounded(
                sqlx::query(
                    "update users set password_hash = $3, updated_at = $4 \
                     where id = $1 and password_hash = $2",
                )
                .bind(user.as_uuid())
                .bind(old)
                .bind(new)
                .bind(to_unix(OffsetDateTime::now_utc()))
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(in crate::store) async fn disable_user(
        &self,
        username: &Username,
        cutoff: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let now = to_unix(OffsetDateTime::now_utc());
        let done = self
            .bounded(
                sqlx::query(
                    "update users set disabled_at = coalesce(disabled_at, $3), \
                     tokens_valid_after = max(coalesce(tokens_valid_after, $2), $2), \
                     updated_at = $3 \
                     where username_key = $1",
                )
                .bind(username.key())
                .bind(to_unix(cutoff))
                .bind(now)
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(in crate::store) async fn enable_user(
        &self,
        username: &Username,
    ) -> Result<bool, StoreError> {
        let done = self
            .bounded(
                sqlx::query(
                    "update users set disabled_at = null, updated_at = $2 where username_key = $1",
                )
                .bind(username.key())
                .bind(to_unix(OffsetDateTime::now_utc()))
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(in crate::store) async fn delete_user(
        &self,
        username: &Username,
    ) -> Result<bool, StoreError> {
        let done = self
            .bounded(
                sqlx::query("delete from users where username_key = $1")
                    .bind(username.key())
                    .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
