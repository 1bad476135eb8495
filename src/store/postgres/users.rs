//! The `users` table on PostgreSQL.

use time::OffsetDateTime;

use super::PgStore;
use crate::{
    domain::{UserId, Username},
    store::{AddUserError, NewUser, StoreError, UserRecord},
};

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

impl PgStore {
    pub(in crate::store) async fn find_user_by_name(
        &self,
        username: &Username,
    ) -> Result<Option<UserRecord>, StoreError> {
        self.bounded(
            sqlx::query_as::<_, UserRecord>(select_users!("where username_key = $1"))
                .bind(username.key())
                .fetch_optional(&self.pool),
        )
        .await
    }

    pub(in crate::store) async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.bounded(
            sqlx::query_as::<_, UserRecord>(select_users!("order by username_key"))
                .fetch_all(&self.pool),
        )
        .await
    }

    pub(in crate::store) async fn add_user(&self, user: NewUser<'_>) -> Result<(), AddUserError> {
        let result = self
            .bounded(
                sqlx::query(
                    "insert into users (id, username, username_key, password_hash, roles) \
             values ($1, $2, $3, $4, $5)",
                )
                .bind(user.id.as_uuid())
                .bind(user.username.as_str())
                .bind(user.username.key())
                .bind(user.password_hash)
                .bind(user.roles)
                .execute(&self.pool),
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(StoreError::Query(sqlx::Error::Database(err)))
                if err.constraint() == Some("users_username_key") =>
            {
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
             tokens_valid_after = greatest(tokens_valid_after, $3) \
             where username_key = $1",
                )
                .bind(username.key())
                .bind(password_hash)
                .bind(cutoff)
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
                    "update users set password_hash = $3 where id = $1 and password_hash = $2",
                )
                .bind(user.as_uuid())
                .bind(old)
                .bind(new)
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
        let done = self
            .bounded(
                sqlx::query(
                    "update users set disabled_at = coalesce(disabled_at, now()), \
             tokens_valid_after = greatest(tokens_valid_after, $2) \
             where username_key = $1",
                )
                .bind(username.key())
                .bind(cutoff)
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
                sqlx::query("update users set disabled_at = null where username_key = $1")
                    .bind(username.key())
                    .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(in crate::store) async fn count_users(&self) -> Result<u64, StoreError> {
        let count: i64 = self
            .bounded(sqlx::query_scalar("select count(*) from users").fetch_one(&self.pool))
            .await?;
        Ok(count.unsigned_abs())
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
