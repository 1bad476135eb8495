//! The `failed_logins` table on PostgreSQL: the login throttle's count,
//! shared by every instance.

use time::OffsetDateTime;

use super::PgStore;
use crate::store::{FailedLogins, StoreError};

/// The first key of the advisory locks that serialise updates of one
/// username's count ("afl"); the second is the hash of the username key.
const FAILED_LOGINS_LOCK_CLASS: i32 = 0x0061_666c;

/// One key's count, as both the plain read and the transaction read it.
const SELECT_FAILED_LOGINS: &str =
    "select failures, last_failed_at, blocked_until from failed_logins where username_key = $1";

impl PgStore {
    pub(in crate::store) async fn failed_logins(
        &self,
        key: &str,
    ) -> Result<Option<FailedLogins>, StoreError> {
        let row: Option<(i32, OffsetDateTime, Option<OffsetDateTime>)> = self
            .bounded(
                sqlx::query_as(SELECT_FAILED_LOGINS)
                    .bind(key)
                    .fetch_optional(&self.pool),
            )
            .await?;
        Ok(row.map(record))
    }

    pub(in crate::store) async fn update_failed_logins(
        &self,
        key: &str,
        update: impl FnOnce(Option<FailedLogins>) -> Option<FailedLogins> + Send,
    ) -> Result<(), StoreError> {
        self.bounded(async {
            let mut tx = self.pool.begin().await?;
            // The row may not exist yet, so lock the key rather than the row:
            // concurrent attempts on one name are counted one after another.
            sqlx::query("select pg_advisory_xact_lock($1, hashtext($2))")
                .bind(FAILED_LOGINS_LOCK_CLASS)
                .bind(key)
                .execute(&mut *tx)
                .await?;
            let row: Option<(i32, OffsetDateTime, Option<OffsetDateTime>)> =
                sqlx::query_as(SELECT_FAILED_LOGINS)
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await?;
            let old = row.map(record);
            let new = update(old);
            match new {
                _ if new == old => return Ok(()),
                Some(record) => {
                    sqlx::query(
                        "insert into failed_logins \
                         (username_key, failures, last_failed_at, blocked_until) \
                         values ($1, $2, $3, $4) \
                         on conflict (username_key) do update set failures = excluded.failures, \
                         last_failed_at = excluded.last_failed_at, \
                         blocked_until = excluded.blocked_until",
                    )
                    .bind(key)
                    .bind(i32::try_from(record.failures).unwrap_or(i32::MAX))
                    .bind(record.last_failed_at)
                    .bind(record.blocked_until)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    sqlx::query("delete from failed_logins where username_key = $1")
                        .bind(key)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    pub(in crate::store) async fn forget_failed_logins(
        &self,
        before: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let done = self
            .bounded(
                sqlx::query(
                    "delete from failed_logins where last_failed_at < $1 \
                     and (blocked_until is null or blocked_until < $1)",
                )
                .bind(before)
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected())
    }
}

fn record(
    (failures, last_failed_at, blocked_until): (i32, OffsetDateTime, Option<OffsetDateTime>),
) -> FailedLogins {
    FailedLogins {
        failures: u32::try_from(failures).unwrap_or(0),
        last_failed_at,
        blocked_until,
    }
}
