//! The SQLite backend: one file on this host, the default when no
//! `DATABASE_URL` is given. Several authd processes on the host may share
//! it: WAL lets readers run beside the one writer, writers wait for each
//! other (busy timeout), and the purge and the migrations take file locks
//! beside the database so that one process at a time runs them.

mod failed_logins;
mod feed;
mod revocations;
mod users;

use std::{
    fs::{File, OpenOptions},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use sqlx::{
    ConnectOptions as _, SqlitePool,
    migrate::Migrator,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use time::OffsetDateTime;

use super::{DatabaseSettings, StoreError};

/// The SQLite schema, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// An SQLite database file behind a connection pool.
#[derive(Clone, Debug)]
pub(super) struct SqliteStore {
    pool: SqlitePool,
    /// The database file; its lock files sit beside it.
    path: PathBuf,
    /// The bound on each operation.
    deadline: Duration,
}

impl SqliteStore {
    /// Opens the database file, creating it (mode 0600: it holds password
    /// hashes) and its directory (mode 0700) when missing.
    pub(super) async fn open(path: &Path, settings: &DatabaseSettings) -> anyhow::Result<Self> {
        let path = path.to_owned();
        let prepared = path.clone();
        tokio::task::spawn_blocking(move || create_private_file(&prepared))
            .await?
            .with_context(|| format!("cannot create the database file {}", path.display()))?;

        let options = SqliteConnectOptions::new()
            .filename(&path)
            .journal_mode(SqliteJournalMode::Wal)
            // Every commit reaches the disk before it is acknowledged: a
            // Logout that returned OK survives a power cut.
            .synchronous(SqliteSynchronous::Full)
            // Wait for another writer (this process's or another's) rather
            // than fail with "database is locked"; the operation deadline
            // bounds the wait the caller sees.
            .busy_timeout(settings.operation_timeout)
            .foreign_keys(true)
            .log_statements(tracing::log::LevelFilter::Debug);
        // The first connection turns a new file to WAL, which needs the
        // file to itself: processes starting together take turns (SQLite
        // may answer "database is locked" at once rather than wait).
        let held = hold_lock(lock_path(&path, "migrate")).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options)
            .await
            .with_context(|| format!("cannot open the database file {}", path.display()))?;
        drop(held);
        Ok(Self {
            pool,
            path,
            deadline: settings.operation_timeout,
        })
    }

    /// Runs one database operation under the operation deadline.
    async fn bounded<T>(
        &self,
        operation: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        super::bounded(self.deadline, is_unavailable, operation).await
    }

    pub(super) async fn migrate(&self) -> anyhow::Result<()> {
        // Instances starting together on a new file take turns, so no two
        // run the same migration.
        let _held = hold_lock(self.lock_file("migrate")).await?;
        Ok(MIGRATOR.run(&self.pool).await?)
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(sqlx::query("select 1").execute(&self.pool))
            .await?;
        Ok(())
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }

    /// The lock file for `purpose`, beside the database (`authd.db-purge.lock`).
    fn lock_file(&self, purpose: &str) -> PathBuf {
        lock_path(&self.path, purpose)
    }
}

fn lock_path(database: &Path, purpose: &str) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(format!("-{purpose}.lock"));
    PathBuf::from(name)
}

/// Waits for the exclusive lock on the file `path`; held until dropped.
async fn hold_lock(path: PathBuf) -> anyhow::Result<File> {
    tokio::task::spawn_blocking(move || -> std::io::Result<File> {
        let file = open_lock_file(&path)?;
        file.lock()?;
        Ok(file)
    })
    .await?
    .context("cannot lock the database file")
}

fn create_private_file(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    // SQLite gives its -wal and -shm files the mode of the database file.
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    Ok(())
}

fn open_lock_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        // The primary result code is the low byte of the extended one:
        // BUSY 5, LOCKED 6, NOMEM 7, IOERR 10, FULL 13, CANTOPEN 14,
        // PROTOCOL 15.
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| matches!(code & 0xff, 5 | 6 | 7 | 10 | 13 | 14 | 15)),
        other => super::is_connection_failure(other),
    }
}

/// An instant as SQLite keeps it: whole seconds since the Unix epoch.
fn to_unix(at: OffsetDateTime) -> i64 {
    at.unix_timestamp()
}

/// An instant read back from SQLite.
fn from_unix(seconds: i64) -> Result<OffsetDateTime, sqlx::Error> {
    OffsetDateTime::from_unix_timestamp(seconds).map_err(|err| sqlx::Error::Decode(err.into()))
}
