//! The `revoked_tokens` table on PostgreSQL, and the user state that
//! revokes tokens wholesale (deletion, disabling, the per-user cut-off).

use time::OffsetDateTime;
use uuid::Uuid;

use super::PgStore;
use crate::{
    domain::UserId,
    store::{PurgeOutcome, StoreError},
};

/// The advisory lock that lets one process purge at a time ("authdpur").
const PURGE_LOCK_KEY: i64 = 0x6175_7468_6470_7572;

impl PgStore {
    pub(in crate::store) async fn revoke(
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

    /// Only one process purges at a time: the pass holds a session advisory
    /// lock on a connection of its own, which is closed afterwards, so even
    /// a pass cut short releases the lock.
    pub(in crate::store) async fn purge_expired(
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
