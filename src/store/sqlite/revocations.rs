//! The `revoked_tokens` table on SQLite, and the user state that revokes
//! tokens wholesale (deletion, disabling, the per-user cut-off).

use std::fs::{File, TryLockError};

use time::OffsetDateTime;
use uuid::Uuid;

use super::{SqliteStore, open_lock_file, to_unix};
use crate::{
    domain::UserId,
    store::{PurgeOutcome, StoreError},
};

impl SqliteStore {
    pub(in crate::store) async fn revoke(
        &self,
        jti: Uuid,
        user: UserId,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let done = self
            .bounded(
                sqlx::query(
                    "insert into revoked_tokens (jti, user_id, expires_at, revoked_at) \
                     values ($1, $2, $3, $4) on conflict (jti) do nothing",
                )
                .bind(jti)
                .bind(user.as_uuid())
                .bind(to_unix(expires_at))
                .bind(to_unix(OffsetDateTime::now_utc()))
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// One process purges at a time: the pass holds an exclusive lock on
    /// the file `<database>-purge.lock`, which the operating system
    /// releases when the pass ends, even when the process dies.
    pub(in crate::store) async fn purge_expired(
        &self,
        now: OffsetDateTime,
        batch_size: u32,
    ) -> Result<PurgeOutcome, StoreError> {
        let path = self.lock_file("purge");
        let lock = tokio::task::spawn_blocking(move || -> std::io::Result<Option<File>> {
            let file = open_lock_file(&path)?;
            match file.try_lock() {
                Ok(()) => Ok(Some(file)),
                Err(TryLockError::WouldBlock) => Ok(None),
                Err(TryLockError::Error(err)) => Err(err),
            }
        })
        .await
        .map_err(|err| StoreError::Unavailable(sqlx::Error::Io(err.into())))?
        .map_err(|err| StoreError::Unavailable(sqlx::Error::Io(err)))?;
        let Some(_held) = lock else {
            return Ok(PurgeOutcome::Busy);
        };

        // Whole seconds: a row goes once `expires_at` is a full second past,
        // never before the token it revokes has stopped validating.
        let now = to_unix(now);
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
                    .execute(&self.pool),
                )
                .await?;
            removed += done.rows_affected();
            if done.rows_affected() < u64::from(batch_size) {
                break;
            }
        }
        Ok(PurgeOutcome::Removed(removed))
    }
}
