//! The revocation feed on SQLite. Processes sharing the file have no
//! notifications: they read what is new, often. Revocations carry the
//! order they were committed in (`seq`; SQLite has one writer at a time),
//! so a read past the last `seq` seen misses nothing and re-reads nothing.

use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use super::SqliteStore;
use crate::{
    domain::{SessionId, UserId},
    store::{FeedCursor, Revocation, StoreError, shared::Dialect as _},
};

/// Rows per read, so that no single statement outlives its deadline.
const PAGE: i64 = 50_000;

/// How far back the read of changed users looks before the previous
/// read began: a change is stamped before it waits for the write lock.
const OVERLAP: Duration = Duration::from_secs(10);

impl SqliteStore {
    /// Everything committed after `cursor`, and the users changed since.
    pub(super) async fn read_feed(
        &self,
        cursor: &FeedCursor,
        apply: &mut (dyn FnMut(Revocation) + Send),
    ) -> Result<FeedCursor, StoreError> {
        let clock = OffsetDateTime::now_utc();
        let now = Self::instant(clock);
        // Everything committed up to `upto` is read; rows that expired
        // already are skipped by the database, not carried here (a purge's
        // worth of old rows must not slow a catch-up down).
        let upto: i64 = self
            .with_deadline(
                sqlx::query_scalar("select coalesce(max(seq), 0) from revoked_tokens")
                    .fetch_one(&self.pool),
            )
            .await?;
        let mut seq = cursor.seq;
        while seq < upto {
            let rows: Vec<(i64, Uuid, i64)> = self
                .with_deadline(
                    sqlx::query_as(
                        "select seq, jti, expires_at from revoked_tokens \
                         where seq > $1 and seq <= $2 and expires_at >= $3 \
                         order by seq limit $4",
                    )
                    .bind(seq)
                    .bind(upto)
                    .bind(now)
                    .bind(PAGE)
                    .fetch_all(&self.pool),
                )
                .await?;
            for &(_, jti, expires_at) in &rows {
                apply(Revocation::Token { jti, expires_at });
            }
            match rows.last() {
                Some(&(last, _, _)) if (rows.len() as i64) == PAGE => seq = last,
                _ => seq = upto,
            }
        }

        let users: Vec<(Uuid, bool, Option<i64>)> = match cursor.since {
            None => {
                self.with_deadline(
                    sqlx::query_as(
                        "select id, disabled_at is not null, tokens_valid_after from users \
                         where disabled_at is not null or tokens_valid_after is not null",
                    )
                    .fetch_all(&self.pool),
                )
                .await?
            }
            Some(since) => {
                self.with_deadline(
                    sqlx::query_as(
                        "select id, disabled_at is not null, tokens_valid_after from users \
                         where updated_at >= $1",
                    )
                    .bind(Self::instant(since - OVERLAP))
                    .fetch_all(&self.pool),
                )
                .await?
            }
        };
        for (id, disabled, tokens_valid_after) in users {
            apply(Revocation::User {
                id: UserId::from(id),
                disabled,
                tokens_valid_after,
            });
        }

        let since = cursor
            .since
            .map_or(i64::MIN, |since| Self::instant(since - OVERLAP));
        let deleted: Vec<Uuid> = self
            .with_deadline(
                sqlx::query_scalar("select user_id from deleted_users where deleted_at >= $1")
                    .bind(since)
                    .fetch_all(&self.pool),
            )
            .await?;
        for id in deleted {
            apply(Revocation::UserDeleted {
                id: UserId::from(id),
            });
        }

        // Ended sessions, in pages of (revoked_at, id), skipping those whose
        // access tokens have all expired.
        let (mut after_at, mut after_id) = (since, Uuid::nil());
        loop {
            let rows: Vec<(i64, Uuid, i64)> = self
                .with_deadline(
                    sqlx::query_as(
                        "select revoked_at, id, access_expires_at from sessions \
                         where revoked_at is not null and (revoked_at, id) > ($1, $2) \
                         and access_expires_at >= $3 order by revoked_at, id limit $4",
                    )
                    .bind(after_at)
                    .bind(after_id)
                    .bind(now)
                    .bind(PAGE)
                    .fetch_all(&self.pool),
                )
                .await?;
            for &(_, id, expires_at) in &rows {
                apply(Revocation::Session {
                    id: SessionId::from(id),
                    expires_at,
                });
            }
            match rows.last() {
                Some(&(at, id, _)) if rows.len() as i64 == PAGE => (after_at, after_id) = (at, id),
                _ => break,
            }
        }
        Ok(FeedCursor {
            since: Some(clock),
            seq: upto.max(cursor.seq),
        })
    }
}
