//! The SQLite backend: one file on this host, which several processes may
//! share (WAL; file locks beside it for the purge and the migrations).

mod feed;

use std::{
    fs::{File, OpenOptions, TryLockError},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use sqlx::{
    ConnectOptions as _, Sqlite, SqlitePool, Transaction,
    migrate::Migrator,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    AddUserError, DatabaseSettings, DeploymentRecord, FailedLogins, FeedCursor, KeyEdit, NewUser,
    PurgeOutcome, Revocation, RevocationNotifications, SessionRecord, SessionSelection, Storage,
    StoreError, StoredKey, UserRecord,
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

/// The SQLite schema, embedded in the binary.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

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

    /// Statements are prepared and kept, per connection.
    fn prepares(&self) -> bool {
        true
    }

    /// Runs one operation under the operation deadline on a connection of
    /// the pool.
    async fn run<T>(
        &self,
        operation: impl AsyncFnOnce(&mut sqlx::SqliteConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, StoreError> {
        self.with_deadline(async {
            let mut conn = self.pool.acquire().await?;
            operation(&mut conn).await
        })
        .await
    }

    /// Runs one database operation under the operation deadline.
    async fn with_deadline<T>(
        &self,
        operation: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        super::with_deadline(self.deadline, is_unavailable, operation).await
    }

    /// A transaction in which edits of the signing keys, from any process,
    /// run one after another: IMMEDIATE takes the write lock before the read.
    async fn begin_signing_keys_edit(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.pool.begin_with("begin immediate").await
    }

    /// A transaction in which updates of one failed-Login count, from any
    /// process, run one after another: IMMEDIATE takes the write lock
    /// before the read.
    async fn begin_failed_logins_update(
        &self,
        _key: &str,
    ) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.pool.begin_with("begin immediate").await
    }

    /// The lock file for `purpose`, beside the database (`authd.db-purge.lock`).
    fn lock_file(&self, purpose: &str) -> PathBuf {
        lock_path(&self.path, purpose)
    }
}

impl Dialect for SqliteStore {
    type Instant = i64;
    type Roles = String;

    /// Whole seconds since the Unix epoch.
    fn instant(at: OffsetDateTime) -> i64 {
        at.unix_timestamp()
    }

    fn read_instant(stored: i64) -> Result<OffsetDateTime, sqlx::Error> {
        OffsetDateTime::from_unix_timestamp(stored).map_err(|err| sqlx::Error::Decode(err.into()))
    }

    fn roles(roles: &[Role]) -> Result<String, sqlx::Error> {
        let names: Vec<&str> = roles.iter().map(Role::as_str).collect();
        serde_json::to_string(&names).map_err(|err| sqlx::Error::Encode(err.into()))
    }

    fn read_roles(stored: String) -> Result<Vec<String>, sqlx::Error> {
        serde_json::from_str(&stored).map_err(|err| sqlx::Error::Decode(err.into()))
    }

    /// The id is a fresh UUIDv7: the one unique key that can clash is the
    /// name's.
    const NEWEST_FIRST: &'static str = "created_at desc, rowid desc";

    /// SQLite compares text by its bytes: UTF-8's order is code points'.
    const USERNAME_ORDER: &'static str = "username_key";

    fn is_name_taken(err: &dyn sqlx::error::DatabaseError) -> bool {
        err.is_unique_violation()
    }
}

impl Storage for SqliteStore {
    shared_statements!(now = "unixepoch()");

    fn backend_name(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        // Instances starting together on a new file take turns, so no two
        // run the same migration.
        let _held = hold_lock(self.lock_file("migrate")).await?;
        Ok(MIGRATOR.run(&self.pool).await?)
    }

    /// One process purges at a time: the pass holds an exclusive lock on
    /// the file `<database>-purge.lock`, which the operating system
    /// releases when the pass ends, even when the process dies.
    async fn purge_expired(
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
        let mut conn = self.with_deadline(self.pool.acquire()).await?;
        let removed = delete_expired_batches!(self, &mut *conn, Self::instant(now), batch_size);
        Ok(PurgeOutcome::Removed(removed))
    }

    async fn load_revocations(
        &self,
        apply: &mut (dyn FnMut(Revocation) + Send),
    ) -> Result<FeedCursor, StoreError> {
        self.read_feed(&FeedCursor::default(), apply).await
    }

    async fn revocations_since(
        &self,
        cursor: &FeedCursor,
        apply: &mut (dyn FnMut(Revocation) + Send),
    ) -> Result<FeedCursor, StoreError> {
        self.read_feed(cursor, apply).await
    }

    /// Processes sharing the file have no notifications: they read
    /// [`Storage::revocations_since`] often instead.
    async fn listen(&self) -> Result<Option<RevocationNotifications>, StoreError> {
        Ok(None)
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
