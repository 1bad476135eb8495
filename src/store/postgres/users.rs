//! The `users` table.

use sqlx::FromRow;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Store, StoreError};
use crate::domain::{UserId, Username};

/// A user as stored.
#[derive(FromRow)]
pub struct UserRecord {
    /// The user's id, the `sub` of its tokens.
    pub id: Uuid,
    /// The name as spelled when the user was added.
    pub username: String,
    /// The argon2 PHC string.
    pub password_hash: String,
    /// Roles copied into every token.
    pub roles: Vec<String>,
    /// Set while the user is disabled.
    pub disabled_at: Option<OffsetDateTime>,
    /// Tokens issued before this instant are revoked.
    pub tokens_valid_after: Option<OffsetDateTime>,
    /// When the user was added.
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("password_hash", &"[REDACTED]")
            .field("roles", &self.roles)
            .field("disabled_at", &self.disabled_at)
            .field("tokens_valid_after", &self.tokens_valid_after)
            .finish_non_exhaustive()
    }
}

/// A user to add.
pub struct NewUser<'a> {
    /// The new user's id.
    pub id: UserId,
    /// The new user's name.
    pub username: &'a Username,
    /// The argon2 PHC string of its password.
    pub password_hash: &'a str,
    /// Its roles.
    pub roles: &'a [String],
}

/// Adding a user failed.
#[derive(Debug, thiserror::Error)]
pub enum AddUserError {
    /// A user of that name (in any letter case) exists.
    #[error("a user with that name already exists")]
    NameTaken,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
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

impl Store {
    /// Finds a user by name, whatever the letter case.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    pub async fn find_user_by_name(
        &self,
        username: &Username,
    ) -> Result<Option<UserRecord>, StoreError> {
        self.bounded(
            sqlx::query_as::<_, UserRecord>(select_users!("where lower(username) = lower($1)"))
                .bind(username.as_str())
                .fetch_optional(&self.pool),
        )
        .await
    }

    /// Every user, by name.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    pub async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.bounded(
            sqlx::query_as::<_, UserRecord>(select_users!("order by lower(username)"))
                .fetch_all(&self.pool),
        )
        .await
    }

    /// Adds a user.
    ///
    /// # Errors
    /// [`AddUserError::NameTaken`] when the name is in use, whatever its case.
    pub async fn add_user(&self, user: NewUser<'_>) -> Result<(), AddUserError> {
        let result = self.bounded(sqlx::query(
            "insert into users (id, username, password_hash, roles) values ($1, $2, $3, $4)",
        )
        .bind(user.id.as_uuid())
        .bind(user.username.as_str())
        .bind(user.password_hash)
        .bind(user.roles)
        .execute(&self.pool))
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

    /// Replaces a user's password hash and revokes the tokens issued before
    /// `cutoff`. Returns false when there is no such user.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    pub async fn set_password(
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
             where lower(username) = lower($1)",
                )
                .bind(username.as_str())
                .bind(password_hash)
                .bind(cutoff)
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Replaces the hash `old` of a user by `new`, leaving its tokens be
    /// (the password is the same, only its hash's cost changes). Returns
    /// false when the hash is no longer `old`: a password change won.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    pub async fn replace_password_hash(
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

    /// Disables a user and revokes the tokens issued before `cutoff`.
    /// Returns false when there is no such user.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    pub async fn disable_user(
        &self,
        username: &Username,
        cutoff: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let done = self
            .bounded(
                sqlx::query(
                    "update users set disabled_at = coalesce(disabled_at, now()), \
             tokens_valid_after = greatest(tokens_valid_after, $2) \
             where lower(username) = lower($1)",
                )
                .bind(username.as_str())
                .bind(cutoff)
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Lets a disabled user log in again. Tokens revoked by the disabling
    /// stay revoked. Returns false when there is no such user.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    pub async fn enable_user(&self, username: &Username) -> Result<bool, StoreError> {
        let done = self
            .bounded(
                sqlx::query(
                    "update users set disabled_at = null where lower(username) = lower($1)",
                )
                .bind(username.as_str())
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes a user; its tokens stop validating because their `sub` no
    /// longer names a user. Returns false when there is no such user.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    pub async fn delete_user(&self, username: &Username) -> Result<bool, StoreError> {
        let done = self
            .bounded(
                sqlx::query("delete from users where lower(username) = lower($1)")
                    .bind(username.as_str())
                    .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
