//! PostgreSQL storage: the only place that speaks SQL, one module per table.

mod revocations;
mod users;

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::{
    ConnectOptions, Connection, PgConnection, PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

pub use revocations::{PurgeOutcome, TokenStanding};
pub use users::{AddUserError, NewUser, UserRecord};

/// The schema, embedded in the binary; used by `authd migrate`, by
/// `authd serve` at start-up and by the tests.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// How to reach the database and how many connections to keep.
#[derive(Clone, Debug)]
pub struct DatabaseSettings {
    /// A `postgres://` URL; it may carry a password, hence the secret.
    pub url: SecretString,
    /// The most connections this process opens.
    pub max_connections: u32,
    /// How long a request waits for a connection before it fails as
    /// unavailable (sqlx's default of 30 s would leave clients hanging).
    pub acquire_timeout: Duration,
    /// How long one database operation (waiting for a connection included)
    /// may take before it fails as unavailable: a server that stops
    /// answering on an open connection must not hang the caller.
    pub operation_timeout: Duration,
}

impl DatabaseSettings {
    /// Settings with the defaults `authd` uses.
    pub fn new(url: SecretString) -> Self {
        Self {
            url,
            max_connections: 16,
            acquire_timeout: Duration::from_secs(3),
            operation_timeout: Duration::from_secs(3),
        }
    }
}

/// A failed database operation, sorted by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached right now: worth retrying later.
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// The database did not answer in time (it may be stopped, or the
    /// network may have dropped it without a word).
    #[error("the database did not answer within {0:?}")]
    TimedOut(Duration),
    /// The database answered with an error that a retry will not fix.
    #[error("a database query failed")]
    Query(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if is_unavailable(&err) {
            Self::Unavailable(err)
        } else {
            Self::Query(err)
        }
    }
}

fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // 08: connection exception; 53: insufficient resources;
        // 57P: the server is shutting down or restarting.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| ["08", "53", "57P"].iter().any(|c| code.starts_with(c))),
        _ => false,
    }
}

/// The database, behind a connection pool. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
    /// The bound on each operation, from [`DatabaseSettings::operation_timeout`].
    deadline: Duration,
}

impl Store {
    /// Connects to the database, creating it first when the server says it
    /// does not exist, so a new installation needs no manual `createdb`.
    ///
    /// # Errors
    /// When the URL is not a valid PostgreSQL URL, the server cannot be
    /// reached, or the database does not exist and cannot be created.
    pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        use anyhow::Context as _;

        let options: PgConnectOptions = settings
            .url
            .expose_secret()
            .parse()
            .context("DATABASE_URL is not a valid postgres:// URL")?;
        let options = options.log_statements(tracing::log::LevelFilter::Debug);
        create_database_if_missing(&options).await?;

        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .test_before_acquire(true)
            .connect_with(options)
            .await
            .context("cannot connect to the database")?;
        Ok(Self {
            pool,
            deadline: settings.operation_timeout,
        })
    }

    /// Wraps a pool made elsewhere (the tests make their own), with the
    /// default operation timeout.
    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            pool,
            deadline: DatabaseSettings::new(SecretString::from(String::new())).operation_timeout,
        }
    }

    /// Runs one database operation under the operation deadline.
    async fn bounded<T>(
        &self,
        operation: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.deadline, operation).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(StoreError::TimedOut(self.deadline)),
        }
    }

    /// Applies the migrations that have not run yet.
    ///
    /// # Errors
    /// When a migration fails or the database cannot be reached.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        MIGRATOR.run(&self.pool).await
    }

    /// Asks the database for a trivial answer: is it there?
    ///
    /// # Errors
    /// [`StoreError`] when it does not answer.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(sqlx::query("select 1").execute(&self.pool))
            .await?;
        Ok(())
    }

    /// Closes every connection; awaits the ones in use.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn create_database_if_missing(options: &PgConnectOptions) -> anyhow::Result<()> {
    use anyhow::Context as _;

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
