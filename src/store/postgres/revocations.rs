//! The `revoked_tokens` table, and the user state that revokes tokens
//! wholesale (deletion, disabling, the per-user cut-off).

use sqlx::FromRow;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Store, StoreError};
use crate::domain::UserId;

/// Whether the store revokes a token, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromRow)]
pub struct TokenStanding {
    /// The token's `jti` was logged out.
    pub jti_revoked: bool,
    /// The token's user exists.
    pub user_exists: bool,
    /// The token's user is disabled.
    pub user_disabled: bool,
    /// Tokens of this user issued before this instant are revoked.
    pub tokens_valid_after: Option<OffsetDateTime>,
}

impl TokenStanding {
    /// Whether a token with this standing, issued at `issued_at`, is revoked.
    pub fn revokes(&self, issued_at: OffsetDateTime) -> bool {
        self.jti_revoked
            || !self.user_exists
            || self.user_disabled
            || self
                .tokens_valid_after
                .is_some_and(|cutoff| issued_at < cutoff)
    }
}

/// What one purge pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeOutcome {
    /// This many expired rows were deleted.
    Removed(u64),
    /// Another process holds the purge lock; nothing was done.
    Busy,
}

/// The advisory lock that lets one process purge at a time ("authdpur").
const PURGE_LOCK_KEY: i64 = 0x6175_7468_6470_7572;

impl Store {
    /// Reads, in one round trip, everything that could revoke the token
    /// `jti` of `user`.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails: the caller must then treat
    /// the token's state as unknown.
    pub async fn token_standing(
        &self,
        jti: Uuid,
        user: UserId,
    ) -> Result<TokenStanding, StoreError> {
        self.bounded(
            sqlx::query_as::<_, TokenStanding>(
                "select exists (select 1 from revoked_tokens where jti = $1) as jti_revoked, \
                    u.id is not null as user_exists, \
                    u.disabled_at is not null as user_disabled, \
                    u.tokens_valid_after \
             from (values (1)) as one \
             left join users u on u.id = $2",
            )
            .bind(jti)
            .bind(user.as_uuid())
            .fetch_one(&self.pool),
        )
        .await
    }

    /// Records the revocation of token `jti` until `expires_at`. Returns
    /// whether a row was written (false: it was revoked already). The row is
    /// committed when this returns.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails; nothing is then promised.
    pub async fn revoke(
        &self,
        jti: Uuid,
        user: UserId,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let done = self
            .bounded(
                sqlx::query(
                    "insert into revoked_tokens (jti, user_id, expires_at) values ($1, $2, $3) \
             on conflict (jti) do nothing",
                )
                .bind(jti)
                .bind(user.as_uuid())
                .bind(expires_at)
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes the revocations whose `expires_at` is before `now`, at most
    /// `batch_size` rows per statement so no lock is held for long.
    ///
    /// Only one process purges at a time: the pass holds a session advisory
    /// lock on a connection of its own, which is closed afterwards, so even
    /// a pass cut short releases the lock.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails; the batches deleted before
    /// the failure stay deleted.
    pub async fn purge_expired(
        &self,
        now: OffsetDateTime,
        batch_size: u32,
    ) -> Result<PurgeOutcome, StoreError> {
        let mut conn = self.bounded(self.pool.acquire()).await?.detach();
        let locked: bool = self
            .bounded(
                sqlx::query_scalar("select pg_try_advisory_lock($1)")
                    .bind(PURGE_LOCK_KEY)
                    .fetch_one(&mut conn),
            )
            .await?;
        if !locked {
            return Ok(PurgeOutcome::Busy);
        }
        let mut removed = 0;
        loop {
            let done = self
                .bounded(
                    sqlx::query(
                        "delete from revoked_tokens where jti in ( \
                     select jti from revoked_tokens where expires_at < $1 \
                     order by expires_at limit $2)",
                    )
                    .bind(now)
                    .bind(i64::from(batch_size))
                    .execute(&mut conn),
                )
                .await?;
            removed += done.rows_affected();
            if done.rows_affected() < u64::from(batch_size) {
                break;
            }
        }
        self.bounded(
            sqlx::query("select pg_advisory_unlock($1)")
                .bind(PURGE_LOCK_KEY)
                .execute(&mut conn),
        )
        .await?;
        Ok(PurgeOutcome::Removed(removed))
    }
}
