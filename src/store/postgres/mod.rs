//! The PostgreSQL backend: for production and for several instances
//! sharing one database.

mod feed;

pub(super) use feed::Listener;

use std::time::Duration;

use anyhow::Context as _;
use secrecy::{ExposeSecret as _, SecretString};
use sqlx::{
    ConnectOptions as _, Connection as _, PgConnection, PgPool, Postgres, Transaction,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    AddUserError, DatabasePooler, DatabaseSettings, DeploymentRecord, FailedLogins, FeedCursor,
    KeyEdit, NewUser, PurgeOutcome, Revocation, RevocationNotifications, SessionRecord,
    SessionSelection, Storage, StoreError, StoredKey, UserRecord,
    shared::{
        DELETE_EXPIRED_BATCH, DeploymentRow, Dialect, FailedLoginsRow, KeyRow,
        MAX_SESSION_ATTEMPTS, SELECT_FAILED_LOGINS, SELECT_SIGNING_KEYS, SESSION_COLUMNS,
        SessionRow, USER_COLUMNS, UserRow, bind_user, delete_expired_batches, deployment_record,
        failed_logins, one_user, session_record, session_revocation, shared_statements,
        stored_generation, stored_key, user_clause, user_record,
    },
    unix_seconds_up,
};
use crate::domain::{Role, SessionId, UserId, UserRef};

/// The advisory lock that lets one process purge at a time ("authdpur").
const PURGE_LOCK_KEY: i64 = 0x6175_7468_6470_7572;

/// The advisory lock of migrations through a transaction pooler
/// ("authdmig").
const MIGRATE_LOCK_KEY: i64 = 0x6175_7468_646d_6967;

/// The first key of the advisory locks that serialise updates of one
/// username's count ("afl"); the second is the hash of the username key.
const FAILED_LOGINS_LOCK_CLASS: i32 = 0x0061_666c;

/// The PostgreSQL schema, embedded in the binary.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a purge pass behind a transaction pooler holds its lease
/// without renewing it (it renews it with every batch): a pass cut short
/// lets the next one in after this.
const PURGE_LEASE: Duration = Duration::from_secs(30);

/// A PostgreSQL database behind a connection pool.
#[derive(Clone, Debug)]
pub(super) struct PgStore {
    pool: PgPool,
    /// The bound on each operation.
    deadline: Duration,
    /// Behind a pooler in transaction mode: every operation is a
    /// transaction of its own, its statement deadline set inside it, and no
    /// statement is prepared by name.
    pooled: bool,
    /// `set local statement_timeout = …` at the operation deadline.
    set_deadline: String,
    /// PostgreSQL itself, past the pooler: for LISTEN and migrations.
    direct: Option<PgPool>,
}

impl PgStore {
    /// Connects, creating the database first when the server says it does
    /// not exist, so a new installation needs no manual `createdb`.
    pub(super) async fn connect(
        url: &SecretString,
        settings: &DatabaseSettings,
    ) -> anyhow::Result<Self> {
        let options: PgConnectOptions = url
            .expose_secret()
            .parse()
            .context("DATABASE_URL is not a valid postgres:// URL")?;
        let options = options.log_statements(tracing::log::LevelFilter::Debug);
        let direct = match &settings.direct_url {
            Some(url) => Some(
                url.expose_secret()
                    .parse::<PgConnectOptions>()
                    .context("--database-direct-url is not a valid postgres:// URL")?
                    .log_statements(tracing::log::LevelFilter::Debug),
            ),
            None => None,
        };
        let pooled = settings.pooler == DatabasePooler::Transaction;
        // Through a pooler, the database is made (when missing) past it.
        match (&direct, pooled) {
            (Some(direct), _) => create_database_if_missing(direct).await?,
            (None, false) => create_database_if_missing(&options).await?,
            (None, true) => {}
        }
        // The server ends a statement that runs past the operation deadline
        // itself: when a caller gives up on a silent or slow server, the
        // statement does not run on, holding its locks. A transaction pooler
        // refuses startup options: there, each transaction sets it.
        let deadline_ms = settings.operation_timeout.as_millis().to_string();
        let options = if pooled {
            options.statement_cache_capacity(0)
        } else {
            options.options([("statement_timeout", deadline_ms.as_str())])
        };

        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            // A call waits this long for a connection, then fails as
            // unavailable (sqlx's default would be 30 s).
            .acquire_timeout(settings.acquire_timeout)
            // A connection the server dropped while idle is found out here,
            // not by the query of a client.
            .test_before_acquire(true)
            // Connections are renewed every half hour (spreading the load
            // after a failover, picking up server settings) and closed
            // after ten idle minutes.
            .max_lifetime(Duration::from_secs(30 * 60))
            .idle_timeout(Duration::from_secs(10 * 60))
            .connect_with(options)
            .await
            .context("cannot connect to the database")?;
        let direct = direct.map(|options| {
            // LISTEN and migrations: a connection or two, made when needed.
            PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(settings.acquire_timeout)
                .connect_lazy_with(options)
        });
        if pooled && direct.is_none() {
            tracing::warn!(
                "behind a transaction pooler without --database-direct-url: revocations made by \
                 other instances arrive by the catch-up alone, within about a second"
            );
        }
        Ok(Self {
            pool,
            deadline: settings.operation_timeout,
            pooled,
            set_deadline: format!("set local statement_timeout = {deadline_ms}"),
            direct,
        })
    }

    /// Whether statements may be prepared by name and kept: not behind a
    /// transaction pooler, where the next transaction may run on another
    /// server session.
    fn prepares(&self) -> bool {
        !self.pooled
    }

    /// Runs one operation under the operation deadline on a connection of
    /// the pool; behind a transaction pooler, as a transaction of its own
    /// whose statement timeout is the deadline.
    async fn run<T>(
        &self,
        operation: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, StoreError> {
        self.with_deadline(async {
            if self.pooled {
                let mut tx = self.begin().await?;
                let value = operation(&mut tx).await?;
                tx.commit().await?;
                Ok(value)
            } else {
                let mut conn = self.pool.acquire().await?;
                operation(&mut conn).await
            }
        })
        .await
    }

    /// A transaction; behind a transaction pooler, with the statement
    /// deadline set inside it.
    async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if self.pooled {
            sqlx::query(sqlx::AssertSqlSafe(self.set_deadline.clone()))
                .persistent(false)
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    /// Whether LISTEN can be had: on a server session of its own, which a
    /// transaction pooler does not give.
    pub(super) fn has_notifications(&self) -> bool {
        !self.pooled || self.direct.is_some()
    }

    /// Runs one database operation under the operation deadline.
    async fn with_deadline<T>(
        &self,
        operation: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        super::with_deadline(self.deadline, is_unavailable, operation).await
    }

    /// A transaction in which edits of the signing keys, from any process,
    /// run one after another. The lock conflicts with itself and with
    /// writes, not with plain reads.
    async fn begin_signing_keys_edit(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let mut tx = self.begin().await?;
        sqlx::query("lock table signing_keys in share row exclusive mode")
            .persistent(self.prepares())
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// A transaction in which updates of `key`'s failed-Login count run one
    /// after another: the row may not exist yet, so the key is locked
    /// rather than the row.
    async fn begin_failed_logins_update(
        &self,
        key: &str,
    ) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let mut tx = self.begin().await?;
        sqlx::query("select pg_advisory_xact_lock($1, hashtext($2))")
            .bind(FAILED_LOGINS_LOCK_CLASS)
            .bind(key)
            .persistent(self.prepares())
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

impl Dialect for PgStore {
    type Instant = OffsetDateTime;
    type Roles = Vec<String>;

    fn instant(at: OffsetDateTime) -> OffsetDateTime {
        at
    }

    fn read_instant(stored: OffsetDateTime) -> Result<OffsetDateTime, sqlx::Error> {
        Ok(stored)
    }

    fn roles(roles: &[Role]) -> Result<Vec<String>, sqlx::Error> {
        Ok(roles.iter().map(|role| role.as_str().to_owned()).collect())
    }

    fn read_roles(stored: Vec<String>) -> Result<Vec<String>, sqlx::Error> {
        Ok(stored)
    }

    const NEWEST_FIRST: &'static str = "created_at desc, id desc";

    /// Indexed so (`users_username_key_order`).
    const USERNAME_ORDER: &'static str = "username_key collate \"C\"";

    fn is_name_taken(err: &dyn sqlx::error::DatabaseError) -> bool {
        err.constraint() == Some("users_username_key")
    }
}

impl Storage for PgStore {
    shared_statements!(now = "now()");

    fn backend_name(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        if self.pooled && self.direct.is_none() {
            return self.migrate_through_the_pooler().await;
        }
        // A migration may take longer than one call's statement timeout:
        // run them over a connection of their own without it (a later
        // setting of the same name wins), to PostgreSQL itself.
        let server = self.direct.as_ref().unwrap_or(&self.pool);
        let options = PgConnectOptions::clone(&server.connect_options())
            .options([("statement_timeout", "0")]);
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        // sqlx holds an advisory lock while migrating: instances starting
        // together take turns.
        let migrated = MIGRATOR.run(&pool).await;
        pool.close().await;
        Ok(migrated?)
    }

    /// Only one process purges at a time: the pass holds a session advisory
    /// lock on a connection of its own, which is closed afterwards, so even
    /// a pass cut short releases the lock.
    async fn purge_expired(
        &self,
        now: OffsetDateTime,
        batch_size: u32,
    ) -> Result<PurgeOutcome, StoreError> {
        if self.pooled {
            return self.purge_under_lease(now, batch_size).await;
        }
        let mut conn = self.with_deadline(self.pool.acquire()).await?.detach();
        let locked: bool = self
            .with_deadline(
                sqlx::query_scalar("select pg_try_advisory_lock($1)")
                    .bind(PURGE_LOCK_KEY)
                    .fetch_one(&mut conn),
            )
            .await?;
        if !locked {
            return Ok(PurgeOutcome::Busy);
        }
        let removed = delete_expired_batches!(self, &mut conn, now, batch_size);
        self.with_deadline(
            sqlx::query("select pg_advisory_unlock($1)")
                .bind(PURGE_LOCK_KEY)
                .execute(&mut conn),
        )
        .await?;
        Ok(PurgeOutcome::Removed(removed))
    }

    async fn load_revocations(
        &self,
        apply: &mut (dyn FnMut(Revocation) + Send),
    ) -> Result<FeedCursor, StoreError> {
        self.load_feed(apply).await
    }

    async fn revocations_since(
        &self,
        cursor: &FeedCursor,
        apply: &mut (dyn FnMut(Revocation) + Send),
    ) -> Result<FeedCursor, StoreError> {
        self.read_feed_since(cursor, apply).await
    }

    async fn listen(&self) -> Result<Option<RevocationNotifications>, StoreError> {
        if !self.has_notifications() {
            return Ok(None);
        }
        Ok(Some(RevocationNotifications(self.listener().await?)))
    }
}

impl PgStore {
    /// The migrations through a transaction pooler: all in one transaction,
    /// so that they keep one server session, serialised by a lock that ends
    /// with it. Named statements left on that session by other clients are
    /// dropped first, as sqlx's migrator names its own.
    async fn migrate_through_the_pooler(&self) -> anyhow::Result<()> {
        let mut migrator = sqlx::migrate!("./migrations/postgres");
        migrator.set_locking(false);
        let mut tx = self.pool.begin().await?;
        sqlx::raw_sql("set local statement_timeout = 0; deallocate all")
            .execute(&mut *tx)
            .await?;
        sqlx::query("select pg_advisory_xact_lock($1)")
            .bind(MIGRATE_LOCK_KEY)
            .persistent(false)
            .execute(&mut *tx)
            .await?;
        migrator.run_direct(None, &mut *tx, false).await?;
        // Nor leave ours behind for the next client of that session.
        sqlx::raw_sql("deallocate all").execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The purge behind a transaction pooler, where a session lock does not
    /// hold: a lease row, taken when free or expired, renewed in the
    /// transaction of every batch (so a batch deletes only under a lease
    /// still held), and given back at the end.
    async fn purge_under_lease(
        &self,
        now: OffsetDateTime,
        batch_size: u32,
    ) -> Result<PurgeOutcome, StoreError> {
        let holder = Uuid::new_v4();
        let lease_ms = i64::try_from(PURGE_LEASE.as_millis()).unwrap_or(i64::MAX);
        let taken = self
            .run(async |conn| {
                sqlx::query(
                    "insert into purge_lease (id, holder, expires_at) \
                     values (true, $1, now() + make_interval(secs => $2 / 1000.0)) \
                     on conflict (id) do update set holder = excluded.holder, \
                     expires_at = excluded.expires_at where purge_lease.expires_at < now()",
                )
                .bind(holder)
                .bind(lease_ms)
                .persistent(false)
                .execute(conn)
                .await
            })
            .await?;
        if taken.rows_affected() == 0 {
            return Ok(PurgeOutcome::Busy);
        }
        let mut removed = 0;
        loop {
            let deleted = self
                .run(async |conn| {
                    let renewed = sqlx::query(
                        "update purge_lease set expires_at = now() + make_interval(secs => $2 / 1000.0) \
                         where holder = $1",
                    )
                    .bind(holder)
                    .bind(lease_ms)
                    .persistent(false)
                    .execute(&mut *conn)
                    .await?;
                    if renewed.rows_affected() == 0 {
                        return Ok(None);
                    }
                    let done = sqlx::query(DELETE_EXPIRED_BATCH)
                        .bind(now)
                        .bind(i64::from(batch_size))
                        .persistent(false)
                        .execute(&mut *conn)
                        .await?;
                    Ok(Some(done.rows_affected()))
                })
                .await?;
            let Some(deleted) = deleted else {
                tracing::warn!("the purge lost its lease to another instance; stopping this pass");
                break;
            };
            removed += deleted;
            if deleted < u64::from(batch_size) {
                break;
            }
        }
        self.run(async |conn| {
            sqlx::query("delete from purge_lease where holder = $1")
                .bind(holder)
                .persistent(false)
                .execute(conn)
                .await
        })
        .await?;
        Ok(PurgeOutcome::Removed(removed))
    }
}

/// A failure outside [`PgStore::with_deadline`], sorted the same way.
fn classify(err: sqlx::Error) -> StoreError {
    if is_unavailable(&err) {
        StoreError::Unavailable(err)
    } else {
        StoreError::Query(err)
    }
}

fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        // 08: connection exception; 53: insufficient resources;
        // 57P: the server is shutting down or restarting; 57014: the
        // server ended the statement at the operation deadline (its
        // statement timeout), which the caller may retry as it would a
        // deadline of its own.
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code == "57014" || ["08", "53", "57P"].iter().any(|c| code.starts_with(c))
        }),
        other => super::is_connection_failure(other),
    }
}

async fn create_database_if_missing(options: &PgConnectOptions) -> anyhow::Result<()> {
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    match PgConnection::connect_with(options).await {
        Ok(conn) => {
            let _ = conn.close().await;
            return Ok(());
        }
        Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some("3D000") => {}
        // Any other failure shows up, with its context, when the pool connects.
        Err(_) => return Ok(()),
    }
    let mut conn = PgConnection::connect_with(&options.clone().database("postgres"))
        .await
        .with_context(|| {
            format!(
                "database {name:?} does not exist and the server cannot be reached to create it"
            )
        })?;
    let create = format!("create database \"{}\"", name.replace('"', "\"\""));
    match sqlx::query(sqlx::AssertSqlSafe(create))
        .execute(&mut conn)
        .await
    {
        Ok(_) => tracing::info!(database = %name, "created the database"),
        // 42P04: another instance created it a moment ago.
        Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some("42P04") => {}
        Err(err) => {
            return Err(err).with_context(|| format!("cannot create database {name:?}"));
        }
    }
    let _ = conn.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DatabaseUrl;

    #[tokio::test]
    async fn the_server_ends_statements_at_the_operation_deadline() {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let url = SecretString::from(url);
        let mut settings = DatabaseSettings::new(DatabaseUrl::Postgres(url.clone()));
        settings.operation_timeout = Duration::from_millis(200);
        let store = PgStore::connect(&url, &settings).await.unwrap();

        // Not through `with_deadline`: the server itself must cancel it.
        let err = sqlx::query("select pg_sleep(5)")
            .execute(&store.pool)
            .await
            .unwrap_err();
        let code = err.as_database_error().and_then(|e| e.code());
        assert_eq!(code.as_deref(), Some("57014"), "query_canceled: {err}");
        store.close().await;
    }

    #[tokio::test]
    async fn behind_a_transaction_pooler_the_server_still_ends_statements_at_the_deadline() {
        let Ok(url) = std::env::var("AUTHD_PGBOUNCER_URL") else {
            let why = std::env::var("AUTHD_PGBOUNCER_SKIP")
                .expect("AUTHD_PGBOUNCER_URL or AUTHD_PGBOUNCER_SKIP (scripts/test sets one)");
            eprintln!("SKIPPED: no PgBouncer to test through: {why}");
            return;
        };
        let url = SecretString::from(url);
        let mut settings = DatabaseSettings::new(DatabaseUrl::Postgres(url.clone()));
        settings.operation_timeout = Duration::from_millis(200);
        settings.pooler = DatabasePooler::Transaction;
        let store = PgStore::connect(&url, &settings).await.unwrap();

        // The deadline is set inside each transaction, as every operation
        // runs; not through `with_deadline`: the server must cancel it.
        let mut tx = store.begin().await.unwrap();
        let err = sqlx::query("select pg_sleep(5)")
            .persistent(false)
            .execute(&mut *tx)
            .await
            .unwrap_err();
        let code = err.as_database_error().and_then(|e| e.code());
        assert_eq!(code.as_deref(), Some("57014"), "query_canceled: {err}");
        drop(tx);
        store.close().await;
    }
}
