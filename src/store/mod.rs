//! Storage, the only place that speaks SQL: the [`Storage`] contract, and
//! [`Store`], which runs it on PostgreSQL or an SQLite file as the
//! database URL says.

mod contract;
mod postgres;
mod records;
mod shared;
mod sqlite;

use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

use secrecy::SecretString;
use time::OffsetDateTime;
use uuid::Uuid;

pub use contract::Storage;
pub use records::{
    AddUserError, DeploymentRecord, FailedLogins, KeyEdit, NewUser, PurgeOutcome, Revocation,
    SessionRecord, SessionSelection, StoredKey, UserRecord,
};

use crate::domain::{Role, SessionId, UserId, UserRef};

/// How long one database operation may take unless configured otherwise.
const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the data lives, as given by `DATABASE_URL`.
#[derive(Clone)]
pub enum DatabaseUrl {
    /// A PostgreSQL server: `postgres://…` (the URL may carry a password).
    Postgres(SecretString),
    /// An SQLite file on this host: `sqlite://PATH`.
    Sqlite(PathBuf),
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Postgres(_) => f.write_str("Postgres([REDACTED])"),
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
        }
    }
}

impl FromStr for DatabasePooler {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "none" => Ok(Self::None),
            "transaction" => Ok(Self::Transaction),
            _ => Err("must be `none` or `transaction`".to_owned()),
        }
    }
}

impl fmt::Display for DatabasePooler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Transaction => "transaction",
        })
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(Self::Postgres(SecretString::from(raw.to_owned())));
        }
        match raw.strip_prefix("sqlite://") {
            Some("") => {
                Err("sqlite:// needs a file path, e.g. sqlite://authd-data/authd.db".into())
            }
            Some(path) if path.contains('?') => {
                Err("sqlite:// takes a file path only, without ?options".into())
            }
            Some(path) => Ok(Self::Sqlite(PathBuf::from(path))),
            None => Err("must be a postgres:// or sqlite:// URL".into()),
        }
    }
}

/// What sits between authd and PostgreSQL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DatabasePooler {
    /// Nothing, or a pooler in session mode: one server session per
    /// connection.
    #[default]
    None,
    /// A pooler in transaction mode (PgBouncer's `pool_mode = transaction`):
    /// a server session only for the length of a transaction.
    Transaction,
}

/// How to reach the database and how many connections to keep.
#[derive(Clone, Debug)]
pub struct DatabaseSettings {
    /// Which backend, and where.
    pub url: DatabaseUrl,
    /// What sits between authd and PostgreSQL.
    pub pooler: DatabasePooler,
    /// PostgreSQL itself, past the pooler: for LISTEN and migrations, which
    /// need a session of their own.
    pub direct_url: Option<SecretString>,
    /// The most connections this process opens.
    pub max_connections: u32,
    /// How long a request waits for a connection before it fails as
    /// unavailable (sqlx's default of 30 s would leave clients hanging).
    pub acquire_timeout: Duration,
    /// How long one database operation (waiting for a connection or for
    /// SQLite's write lock included) may take before it fails as
    /// unavailable: a server that stops answering on an open connection
    /// must not hang the caller.
    pub operation_timeout: Duration,
}

impl DatabaseSettings {
    /// Settings with the defaults `authd` uses.
    pub fn new(url: DatabaseUrl) -> Self {
        Self {
            url,
            pooler: DatabasePooler::None,
            direct_url: None,
            max_connections: 16,
            acquire_timeout: Duration::from_secs(3),
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
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
    /// A row changed under every attempt to change it: worth retrying.
    #[error("the row changed under every attempt to change it")]
    Contended,
}

/// Errors of sqlx itself (not of the database) that mean "try again later".
fn is_connection_failure(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    )
}

/// Runs one database operation under `deadline`, sorting its failure with
/// the backend's `unavailable` test.
async fn with_deadline<T>(
    deadline: Duration,
    unavailable: fn(&sqlx::Error) -> bool,
    operation: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(deadline, operation).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) if unavailable(&err) => Err(StoreError::Unavailable(err)),
        Ok(Err(err)) => Err(StoreError::Query(err)),
        Err(_) => Err(StoreError::TimedOut(deadline)),
    }
}

/// Where the last read of the revocation feed left off. Opaque: each
/// backend keeps what it needs.
#[derive(Debug, Clone, Default)]
pub struct FeedCursor {
    /// When the last read began, by the store's clock.
    since: Option<OffsetDateTime>,
    /// SQLite: the last `revoked_tokens.seq` read.
    seq: i64,
}

impl FeedCursor {
    fn at(clock: OffsetDateTime) -> Self {
        Self {
            since: Some(clock),
            seq: 0,
        }
    }
}

/// Notifications of revocations as they commit anywhere, from
/// [`Storage::listen`] where the backend has them.
#[derive(Debug)]
pub struct RevocationNotifications(postgres::Listener);

impl RevocationNotifications {
    /// Waits for the next notice.
    ///
    /// # Errors
    /// [`StoreError`] when the connection cannot be made again.
    pub async fn next(&mut self) -> Result<Notice, StoreError> {
        self.0.next().await
    }
}

/// What [`RevocationNotifications::next`] heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A revocation, as it committed.
    Revoked(Revocation),
    /// The caller must catch up: the signing keys changed, or a payload
    /// did not parse.
    CatchUp,
    /// The connection dropped, and is made again at the next call: what
    /// committed meanwhile was missed, so the caller must catch up too.
    Lost,
}

/// The database, behind a connection pool. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store(Backend);

#[derive(Clone, Debug)]
enum Backend {
    Postgres(postgres::PgStore),
    Sqlite(sqlite::SqliteStore),
}

/// Calls the same method on whichever backend runs.
macro_rules! on_backend {
    ($store:expr, $backend:ident => $call:expr) => {
        match &$store.0 {
            Backend::Postgres($backend) => $call,
            Backend::Sqlite($backend) => $call,
        }
    };
}

impl Store {
    /// Opens the database the URL names: connects to PostgreSQL (creating
    /// the database when the server says it does not exist), or opens the
    /// SQLite file (creating it and its directory when missing).
    ///
    /// # Errors
    /// When the database cannot be reached, opened or created.
    pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        if let DatabaseUrl::Sqlite(_) = settings.url {
            if settings.pooler != DatabasePooler::None {
                anyhow::bail!(
                    "--database-pooler transaction is for PostgreSQL behind a pooler; \
                     an SQLite file has none"
                );
            }
            if settings.direct_url.is_some() {
                anyhow::bail!("--database-direct-url is for PostgreSQL behind a pooler");
            }
        }
        Ok(match &settings.url {
            DatabaseUrl::Postgres(url) => Self(Backend::Postgres(
                postgres::PgStore::connect(url, settings).await?,
            )),
            DatabaseUrl::Sqlite(path) => Self(Backend::Sqlite(
                sqlite::SqliteStore::open(path, settings).await?,
            )),
        })
    }

    /// Whether other processes' revocations arrive only by reading the
    /// database often (an SQLite file), rather than by notification or a
    /// catch-up now and then.
    pub fn polls_for_revocations(&self) -> bool {
        matches!(self.0, Backend::Sqlite(_))
    }
}

impl Storage for Store {
    fn backend_name(&self) -> &'static str {
        on_backend!(self, store => store.backend_name())
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        on_backend!(self, store => store.migrate().await)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        on_backend!(self, store => store.ping().await)
    }

    async fn close(&self) {
        on_backend!(self, store => store.close().await);
    }

    async fn record_deployment(
        &self,
        issuer: &str,
        audience: &str,
        ttl: Duration,
    ) -> Result<DeploymentRecord, StoreError> {
        on_backend!(self, store => store.record_deployment(issuer, audience, ttl).await)
    }

    async fn deployment(&self) -> Result<Option<DeploymentRecord>, StoreError> {
        on_backend!(self, store => store.deployment().await)
    }

    async fn find_user(&self, user: &UserRef) -> Result<Option<UserRecord>, StoreError> {
        on_backend!(self, store => store.find_user(user).await)
    }

    async fn list_users(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<UserRecord>, StoreError> {
        on_backend!(self, store => store.list_users(after, limit).await)
    }

    async fn count_users(&self) -> Result<u64, StoreError> {
        on_backend!(self, store => store.count_users().await)
    }

    async fn add_user(&self, user: NewUser<'_>) -> Result<UserRecord, AddUserError> {
        on_backend!(self, store => store.add_user(user).await)
    }

    async fn set_password(
        &self,
        user: &UserRef,
        password_hash: &str,
        cutoff: OffsetDateTime,
    ) -> Result<Option<UserRecord>, StoreError> {
        on_backend!(self, store => store.set_password(user, password_hash, cutoff).await)
    }

    async fn set_roles(
        &self,
        user: UserId,
        expected: &[Role],
        roles: &[Role],
        cutoff: Option<OffsetDateTime>,
    ) -> Result<Option<UserRecord>, StoreError> {
        on_backend!(self, store => store.set_roles(user, expected, roles, cutoff).await)
    }

    async fn replace_password_hash(
        &self,
        user: UserId,
        old: &str,
        new: &str,
    ) -> Result<bool, StoreError> {
        on_backend!(self, store => store.replace_password_hash(user, old, new).await)
    }

    async fn disable_user(
        &self,
        user: &UserRef,
        cutoff: OffsetDateTime,
    ) -> Result<Option<UserRecord>, StoreError> {
        on_backend!(self, store => store.disable_user(user, cutoff).await)
    }

    async fn enable_user(&self, user: &UserRef) -> Result<Option<UserRecord>, StoreError> {
        on_backend!(self, store => store.enable_user(user).await)
    }

    async fn delete_user(&self, user: &UserRef) -> Result<Option<UserId>, StoreError> {
        on_backend!(self, store => store.delete_user(user).await)
    }

    async fn revoke(
        &self,
        jti: Uuid,
        user: UserId,
        expires_at: OffsetDateTime,
        session: Option<SessionId>,
    ) -> Result<bool, StoreError> {
        on_backend!(self, store => store.revoke(jti, user, expires_at, session).await)
    }

    async fn purge_expired(
        &self,
        now: OffsetDateTime,
        batch_size: u32,
    ) -> Result<PurgeOutcome, StoreError> {
        on_backend!(self, store => store.purge_expired(now, batch_size).await)
    }

    async fn forget_deleted_users(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        on_backend!(self, store => store.forget_deleted_users(before).await)
    }

    async fn load_revocations(
        &self,
        apply: &mut (dyn FnMut(Revocation) + Send),
    ) -> Result<FeedCursor, StoreError> {
        on_backend!(self, store => store.load_revocations(apply).await)
    }

    async fn revocations_since(
        &self,
        cursor: &FeedCursor,
        apply: &mut (dyn FnMut(Revocation) + Send),
    ) -> Result<FeedCursor, StoreError> {
        on_backend!(self, store => store.revocations_since(cursor, apply).await)
    }

    async fn listen(&self) -> Result<Option<RevocationNotifications>, StoreError> {
        on_backend!(self, store => store.listen().await)
    }

    async fn failed_logins(&self, key: &str) -> Result<Option<FailedLogins>, StoreError> {
        on_backend!(self, store => store.failed_logins(key).await)
    }

    async fn update_failed_logins(
        &self,
        key: &str,
        update: impl FnOnce(Option<FailedLogins>) -> Option<FailedLogins> + Send,
    ) -> Result<(), StoreError> {
        on_backend!(self, store => store.update_failed_logins(key, update).await)
    }

    async fn forget_failed_logins(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        on_backend!(self, store => store.forget_failed_logins(before).await)
    }

    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        on_backend!(self, store => store.signing_keys().await)
    }

    async fn edit_signing_keys<T: Send>(
        &self,
        plan: impl FnOnce(Vec<StoredKey>) -> (Vec<KeyEdit>, T) + Send,
    ) -> Result<T, StoreError> {
        on_backend!(self, store => store.edit_signing_keys(plan).await)
    }

    async fn forget_signing_keys(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        on_backend!(self, store => store.forget_signing_keys(before).await)
    }

    async fn cut_off_user(
        &self,
        user: UserId,
        cutoff: OffsetDateTime,
    ) -> Result<Option<Revocation>, StoreError> {
        on_backend!(self, store => store.cut_off_user(user, cutoff).await)
    }

    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        on_backend!(self, store => store.create_session(session).await)
    }

    async fn update_session<T: Send>(
        &self,
        id: SessionId,
        decide: impl Fn(Option<(SessionRecord, UserRecord)>) -> (Option<SessionRecord>, T) + Send + Sync,
    ) -> Result<T, StoreError> {
        on_backend!(self, store => store.update_session(id, decide).await)
    }

    async fn list_sessions(
        &self,
        user: UserId,
        now: OffsetDateTime,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        on_backend!(self, store => store.list_sessions(user, now).await)
    }

    async fn end_sessions(
        &self,
        user: UserId,
        which: SessionSelection,
        at: OffsetDateTime,
    ) -> Result<Vec<Revocation>, StoreError> {
        on_backend!(self, store => store.end_sessions(user, which, at).await)
    }

    async fn forget_sessions(
        &self,
        now: OffsetDateTime,
        batch_size: u32,
    ) -> Result<u64, StoreError> {
        on_backend!(self, store => store.forget_sessions(now, batch_size).await)
    }
}

/// Unix seconds of `at`, rounded up: an expiry or a cut-off is never moved
/// earlier.
pub(crate) fn unix_seconds_up(at: OffsetDateTime) -> i64 {
    at.unix_timestamp() + i64::from(at.nanosecond() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_select_the_backend() {
        assert!(matches!(
            "postgres://u@h/db".parse::<DatabaseUrl>(),
            Ok(DatabaseUrl::Postgres(_))
        ));
        assert!(matches!(
            "postgresql://u@h/db".parse::<DatabaseUrl>(),
            Ok(DatabaseUrl::Postgres(_))
        ));
        match "sqlite:///var/lib/authd/authd.db".parse::<DatabaseUrl>() {
            Ok(DatabaseUrl::Sqlite(path)) => {
                assert_eq!(path, PathBuf::from("/var/lib/authd/authd.db"))
            }
            other => panic!("{other:?}"),
        }
        match "sqlite://data/authd.db".parse::<DatabaseUrl>() {
            Ok(DatabaseUrl::Sqlite(path)) => assert_eq!(path, PathBuf::from("data/authd.db")),
            other => panic!("{other:?}"),
        }
        for bad in [
            "mysql://h/db",
            "sqlite://",
            "sqlite::memory:",
            "sqlite://a.db?mode=ro",
            "",
        ] {
            assert!(bad.parse::<DatabaseUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_postgres_url_is_not_printed() {
        let url: DatabaseUrl = "postgres://u:hunter2@h/db".parse().unwrap();
        assert!(!format!("{url:?}").contains("hunter2"));
    }
}
