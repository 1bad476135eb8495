//! The revocation feed on PostgreSQL: a full read at start-up, catch-up
//! reads of what changed, and the notifications the triggers send.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgNotification};
use time::OffsetDateTime;
use uuid::Uuid;

use super::PgStore;
use crate::{
    domain::{SessionId, UserId},
    store::{FeedCursor, Notice, Revocation, StoreError},
};

/// The channel the triggers announce changes on.
const CHANNEL: &str = "authd_revocations";

/// Rows per read, so that no single statement outlives its deadline.
const PAGE: i64 = 50_000;

/// How far back a catch-up looks before the instant the previous one
/// began: a row stamped `now()` at the start of its transaction may commit
/// a little later (every write is bounded by the operation deadline).
const OVERLAP: Duration = Duration::from_secs(10);

/// Unix seconds, rounded up: an expiry or a cut-off is never moved earlier.
const UNIX_SECONDS: &str = "ceil(extract(epoch from {}))::bigint";

fn unix(column: &str) -> String {
    UNIX_SECONDS.replace("{}", column)
}

impl PgStore {
    /// Every revocation in force, from the start.
    pub(super) async fn load_feed(
        &self,
        apply: &mut (dyn FnMut(Revocation) + Send),
    ) -> Result<FeedCursor, StoreError> {
        let clock = self.clock().await?;
        let mut last = Uuid::nil();
        // Expired rows (those the purge has not reached yet) are skipped
        // here rather than by the database: with `expires_at` in the
        // `where`, the planner may pick that column's index and sort each
        // page, which made a start-up with a million revocations three
        // times slower. By `jti` alone, every page is a range of the
        // primary key.
        let now = clock.unix_timestamp();
        loop {
            let sql = format!(
                "select jti, {} from revoked_tokens where jti > $1 order by jti limit $2",
                unix("expires_at")
            );
            let rows: Vec<(Uuid, i64)> = self
                .run(async |conn| {
                    sqlx::query_as(sqlx::AssertSqlSafe(sql))
                        .bind(last)
                        .bind(PAGE)
                        .persistent(self.prepares())
                        .fetch_all(&mut *conn)
                        .await
                })
                .await?;
            for &(jti, expires_at) in rows.iter().filter(|(_, expires_at)| *expires_at >= now) {
                apply(Revocation::Token { jti, expires_at });
            }
            match rows.last() {
                Some(&(jti, _)) if rows.len() as i64 == PAGE => last = jti,
                _ => break,
            }
        }
        self.read_users(
            "disabled_at is not null or tokens_valid_after is not null",
            None,
            apply,
        )
        .await?;
        self.read_deleted_users(None, apply).await?;
        self.read_ended_sessions(None, clock, apply).await?;
        Ok(FeedCursor::at(clock))
    }

    /// What changed since `cursor`.
    pub(super) async fn read_feed_since(
        &self,
        cursor: &FeedCursor,
        apply: &mut (dyn FnMut(Revocation) + Send),
    ) -> Result<FeedCursor, StoreError> {
        let clock = self.clock().await?;
        let since = cursor
            .since
            .map_or(OffsetDateTime::UNIX_EPOCH, |s| s - OVERLAP);
        // Pages in (revoked_at, jti) order, each an index range scan; rows
        // that expired already are skipped by the database (a purge's worth
        // of old rows must not slow a catch-up down).
        let (mut after_at, mut after_jti) = (since, Uuid::nil());
        loop {
            let sql = format!(
                "select revoked_at, jti, {} from revoked_tokens \
                 where (revoked_at, jti) > ($1, $2) and expires_at >= $3 \
                 order by revoked_at, jti limit $4",
                unix("expires_at")
            );
            let rows: Vec<(OffsetDateTime, Uuid, i64)> = self
                .run(async |conn| {
                    sqlx::query_as(sqlx::AssertSqlSafe(sql))
                        .bind(after_at)
                        .bind(after_jti)
                        .bind(clock)
                        .bind(PAGE)
                        .persistent(self.prepares())
                        .fetch_all(&mut *conn)
                        .await
                })
                .await?;
            for &(_, jti, expires_at) in &rows {
                apply(Revocation::Token { jti, expires_at });
            }
            match rows.last() {
                Some(&(at, jti, _)) if rows.len() as i64 == PAGE => {
                    (after_at, after_jti) = (at, jti);
                }
                _ => break,
            }
        }
        self.read_users("updated_at >= $1", Some(since), apply)
            .await?;
        self.read_deleted_users(Some(since), apply).await?;
        self.read_ended_sessions(Some(since), clock, apply).await?;
        Ok(FeedCursor::at(clock))
    }

    /// The sessions ended since `since` (all, without it) whose access
    /// tokens may still be current at `clock`, in pages of (revoked_at, id).
    async fn read_ended_sessions(
        &self,
        since: Option<OffsetDateTime>,
        clock: OffsetDateTime,
        apply: &mut (dyn FnMut(Revocation) + Send),
    ) -> Result<(), StoreError> {
        let (mut after_at, mut after_id) =
            (since.unwrap_or(OffsetDateTime::UNIX_EPOCH), Uuid::nil());
        loop {
            let sql = format!(
                "select revoked_at, id, {} from sessions \
                 where revoked_at is not null and (revoked_at, id) > ($1, $2) \
                 and access_expires_at >= $3 order by revoked_at, id limit $4",
                unix("access_expires_at")
            );
            let rows: Vec<(OffsetDateTime, Uuid, i64)> = self
                .run(async |conn| {
                    sqlx::query_as(sqlx::AssertSqlSafe(sql))
                        .bind(after_at)
                        .bind(after_id)
                        .bind(clock)
                        .bind(PAGE)
                        .persistent(self.prepares())
                        .fetch_all(&mut *conn)
                        .await
                })
                .await?;
            for &(_, id, expires_at) in &rows {
                apply(Revocation::Session {
                    id: SessionId::from(id),
                    expires_at,
                });
            }
            match rows.last() {
                Some(&(at, id, _)) if rows.len() as i64 == PAGE => (after_at, after_id) = (at, id),
                _ => return Ok(()),
            }
        }
    }

    /// The database's clock: the cursor is kept in its time, not ours.
    async fn clock(&self) -> Result<OffsetDateTime, StoreError> {
        self.run(async |conn| {
            sqlx::query_scalar("select now()")
                .persistent(self.prepares())
                .fetch_one(conn)
                .await
        })
        .await
    }

    async fn read_users(
        &self,
        filter: &str,
        since: Option<OffsetDateTime>,
        apply: &mut (dyn FnMut(Revocation) + Send),
    ) -> Result<(), StoreError> {
        let sql = format!(
            "select id, disabled_at is not null, {} from users where {filter}",
            unix("tokens_valid_after")
        );
        let mut query = sqlx::query_as::<_, (Uuid, bool, Option<i64>)>(sqlx::AssertSqlSafe(sql));
        if let Some(since) = since {
            query = query.bind(since);
        }
        for (id, disabled, tokens_valid_after) in self
            .run(async |conn| query.persistent(self.prepares()).fetch_all(conn).await)
            .await?
        {
            apply(Revocation::User {
                id: UserId::from(id),
                disabled,
                tokens_valid_after,
            });
        }
        Ok(())
    }

    async fn read_deleted_users(
        &self,
        since: Option<OffsetDateTime>,
        apply: &mut (dyn FnMut(Revocation) + Send),
    ) -> Result<(), StoreError> {
        let ids: Vec<Uuid> = self
            .run(async |conn| {
                sqlx::query_scalar("select user_id from deleted_users where deleted_at >= $1")
                    .bind(since.unwrap_or(OffsetDateTime::UNIX_EPOCH))
                    .persistent(self.prepares())
                    .fetch_all(&mut *conn)
                    .await
            })
            .await?;
        for id in ids {
            apply(Revocation::UserDeleted {
                id: UserId::from(id),
            });
        }
        Ok(())
    }

    /// A connection listening on the triggers' channel.
    pub(super) async fn listener(&self) -> Result<Listener, StoreError> {
        let server = self.direct.as_ref().unwrap_or(&self.pool);
        let mut listener = self.with_deadline(PgListener::connect_with(server)).await?;
        self.with_deadline(listener.listen(CHANNEL)).await?;
        Ok(Listener { listener })
    }
}

/// Notifications of revocations made anywhere, as they commit.
#[derive(Debug)]
pub(in crate::store) struct Listener {
    listener: PgListener,
}

impl Listener {
    /// The next notice.
    pub(in crate::store) async fn next(&mut self) -> Result<Notice, StoreError> {
        match self.listener.try_recv().await {
            Ok(Some(notification)) => {
                Ok(parse(&notification).map_or(Notice::CatchUp, Notice::Revoked))
            }
            Ok(None) => Ok(Notice::Lost),
            Err(err) => Err(super::classify(err)),
        }
    }
}

/// The payload announcing a change of the signing keys.
const KEYS_CHANGED: &str = "keys";

fn parse(notification: &PgNotification) -> Option<Revocation> {
    let payload = notification.payload();
    // A change of the signing keys: the catch-up this asks for reads them.
    if payload == KEYS_CHANGED {
        return None;
    }
    let parsed = parse_payload(payload);
    if parsed.is_none() {
        tracing::warn!(
            payload,
            "an announcement of a revocation does not parse; catching up"
        );
    }
    parsed
}

fn parse_payload(payload: &str) -> Option<Revocation> {
    let mut words = payload.split(' ');
    let revocation = match (words.next()?, words.next()?) {
        ("token", jti) => Revocation::Token {
            jti: jti.parse().ok()?,
            expires_at: words.next()?.parse().ok()?,
        },
        ("user", id) => Revocation::User {
            id: UserId::from(id.parse::<Uuid>().ok()?),
            disabled: words.next()?.parse().ok()?,
            tokens_valid_after: match words.next()? {
                "-" => None,
                seconds => Some(seconds.parse().ok()?),
            },
        },
        ("deleted", id) => Revocation::UserDeleted {
            id: UserId::from(id.parse::<Uuid>().ok()?),
        },
        ("session", id) => Revocation::Session {
            id: SessionId::from(id.parse::<Uuid>().ok()?),
            expires_at: words.next()?.parse().ok()?,
        },
        _ => return None,
    };
    words.next().is_none().then_some(revocation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_triggers_payloads_parse() {
        let id = Uuid::new_v4();
        assert_eq!(
            parse_payload(&format!("token {id} 1700000000")),
            Some(Revocation::Token {
                jti: id,
                expires_at: 1_700_000_000
            })
        );
        assert_eq!(
            parse_payload(&format!("user {id} true 1700000001")),
            Some(Revocation::User {
                id: UserId::from(id),
                disabled: true,
                tokens_valid_after: Some(1_700_000_001)
            })
        );
        assert_eq!(
            parse_payload(&format!("user {id} false -")),
            Some(Revocation::User {
                id: UserId::from(id),
                disabled: false,
                tokens_valid_after: None
            })
        );
        assert_eq!(
            parse_payload(&format!("deleted {id}")),
            Some(Revocation::UserDeleted {
                id: UserId::from(id)
            })
        );
        assert_eq!(
            parse_payload(&format!("session {id} 1700000002")),
            Some(Revocation::Session {
                id: SessionId::from(id),
                expires_at: 1_700_000_002
            })
        );
        for bad in [
            "",
            &format!("session {id}"),
            "token",
            "token x 1",
            &format!("token {id}"),
            &format!("token {id} 1 2"),
            &format!("user {id} maybe -"),
            &format!("gone {id}"),
        ] {
            assert_eq!(parse_payload(bad), None, "{bad}");
        }
    }
}
