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
    AddUserError, DatabaseSettings, FailedLogins, FeedCursor, KeyEdit, NewUser, PurgeOutcome,
    Revocation, RevocationNotifications, Storage, StoreError, StoredKey, UserRecord,
    shared::{
        Dialect, FailedLoginsRow, KeyRow, SELECT_FAILED_LOGINS, SELECT_SIGNING_KEYS, SELECT_USERS,
        UserRow, delete_expired_batches, failed_logins, shared_statements, stored_key, user_record,
    },
};
use crate::domain::{Role, UserId, Username};

/// The advisory lock that lets one process purge at a time ("authdpur").
const PURGE_LOCK_KEY: i64 = 0x6175_7468_6470_7572;

/// The first key of the advisory locks that serialise updates of one
/// username's count ("afl"); the second is the hash of the username key.
const FAILED_LOGINS_LOCK_CLASS: i32 = 0x0061_666c;

/// The PostgreSQL schema, embedded in the binary.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// A PostgreSQL database behind a connection pool.
#[derive(Clone, Debug)]
pub(super) struct PgStore {
    pool: PgPool,
    /// The bound on each operation.
    deadline: Duration,
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
        create_database_if_missing(&options).await?;
        // The server ends a statement that runs past the operation deadline
        // itself: when a caller gives up on a silent or slow server, the
        // statement does not run on, holding its locks.
        let deadline_ms = settings.operation_timeout.as_millis().to_string();
        let options = options.options([("statement_timeout", deadline_ms.as_str())]);

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
        Ok(Self {
            pool,
            deadline: settings.operation_timeout,
        })
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
        let mut tx = self.pool.begin().await?;
        sqlx::query("lock table signing_keys in share row exclusive mode")
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
        let mut tx = self.pool.begin().await?;
        sqlx::query("select pg_advisory_xact_lock($1, hashtext($2))")
            .bind(FAILED_LOGINS_LOCK_CLASS)
            .bind(key)
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
        // A migration may take longer than one call's statement timeout:
        // run them over a connection of their own without it (a later
        // setting of the same name wins).
        let options = PgConnectOptions::clone(&self.pool.connect_options())
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
        Ok(Some(RevocationNotifications(self.listener().await?)))
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
        // 57P: the server is shutting down or restarting.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| ["08", "53", "57P"].iter().any(|c| code.starts_with(c))),
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
}
