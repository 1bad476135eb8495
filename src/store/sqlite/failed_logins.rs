//! The `failed_logins` table on SQLite: the login throttle's count, shared
//! by every process on the file.

use time::OffsetDateTime;

use super::{SqliteStore, from_unix, to_unix};
use crate::store::{FailedLogins, StoreError};

/// One key's count, as both the plain read and the transaction read it.
const SELECT_FAILED_LOGINS: &str =
    "select failures, last_failed_at, blocked_until from failed_logins where username_key = $1";

impl SqliteStore {
    pub(in crate::store) async fn failed_logins(
        &self,
        key: &str,
    ) -> Result<Option<FailedLogins>, StoreError> {
        let row: Option<(i64, i64, Option<i64>)> = self
            .bounded(
                sqlx::query_as(SELECT_FAILED_LOGINS)
                    .bind(key)
                    .fetch_optional(&self.pool),
            )
            .await?;
        row.map(record).transpose().map_err(StoreError::Query)
    }

    pub(in crate::store) async fn update_failed_logins(
        &self,
        key: &str,
        update: impl FnOnce(Option<FailedLogins>) -> Option<FailedLogins> + Send,
    ) -> Result<(), StoreError> {
        self.bounded(async {
            // IMMEDIATE: the write lock is taken before the read, so
            // concurrent attempts on one name, from any process, are counted
            // one after another.
            let mut tx = self.pool.begin_with("begin immediate").await?;
            let row: Option<(i64, i64, Option<i64>)> = sqlx::query_as(SELECT_FAILED_LOGINS)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
            let old = row.map(record).transpose()?;
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
                    .bind(i64::from(record.failures))
                    .bind(to_unix(record.last_failed_at))
                    .bind(record.blocked_until.map(to_unix))
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
        let before = to_unix(before);
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
    (failures, last_failed_at, blocked_until): (i64, i64, Option<i64>),
) -> Result<FailedLogins, sqlx::Error> {
    Ok(FailedLogins {
        failures: u32::try_from(failures).unwrap_or(0),
        last_failed_at: from_unix(last_failed_at)?,
        blocked_until: blocked_until.map(from_unix).transpose()?,
    })
}
