//! The storage contract: every read and write authd makes, as both
//! backends keep it.

use std::future::Future;

use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    AddUserError, DeploymentRecord, FailedLogins, FeedCursor, KeyEdit, NewUser, PurgeOutcome,
    Revocation, RevocationNotifications, SessionRecord, SessionSelection, StoreError, StoredKey,
    UserRecord,
};
use crate::domain::{Role, SessionId, UserId, UserRef};

/// What a storage backend does for authd. [`super::Store`] implements it by
/// handing each call to the backend the database URL chose; the PostgreSQL
/// and SQLite backends implement it over sqlx. Both pass one conformance
/// suite (`tests/api/store.rs`).
///
/// Every operation ends within the configured operation deadline, waiting
/// for a connection or a lock included. A call that returns `Ok` after a
/// write has committed it (on disk); a [`StoreError`] promises nothing, and
/// says whether a retry may help.
pub trait Storage {
    /// Which backend runs, for the log: `postgres` or `sqlite`.
    fn backend_name(&self) -> &'static str;

    /// Applies the migrations that have not run yet; instances starting
    /// together take turns.
    ///
    /// # Errors
    /// When a migration fails or the database cannot be reached.
    fn migrate(&self) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Asks the database for a trivial answer: is it there?
    ///
    /// # Errors
    /// [`StoreError`] when it does not answer.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Closes every connection; awaits the ones in use.
    fn close(&self) -> impl Future<Output = ()> + Send;

    /// Records that an instance issuing tokens with `issuer`, `audience`
    /// and lifetime `ttl` starts: the first such record sets the claims;
    /// every one raises the longest lifetime to `ttl` if shorter. Returns
    /// the record as it then stands; when its claims differ from these, it
    /// is returned unchanged, for the caller to refuse.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    fn record_deployment(
        &self,
        issuer: &str,
        audience: &str,
        ttl: std::time::Duration,
    ) -> impl Future<Output = Result<DeploymentRecord, StoreError>> + Send;

    /// The deployment record, if an instance has ever started.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    fn deployment(
        &self,
    ) -> impl Future<Output = Result<Option<DeploymentRecord>, StoreError>> + Send;

    /// Finds a user by id, or by name whatever the letter case.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    fn find_user(
        &self,
        user: &UserRef,
    ) -> impl Future<Output = Result<Option<UserRecord>, StoreError>> + Send;

    /// At most `limit` users, in the order of their name's key
    /// ([`Username::key`](crate::domain::Username::key), unique, so the order is total), starting after
    /// the key `after`.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    fn list_users(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<UserRecord>, StoreError>> + Send;

    /// How many users there are.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    fn count_users(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Adds a user, and returns it as stored.
    ///
    /// # Errors
    /// [`AddUserError::NameTaken`] when the name is in use, whatever its case.
    fn add_user(
        &self,
        user: NewUser<'_>,
    ) -> impl Future<Output = Result<UserRecord, AddUserError>> + Send;

    /// Replaces a user's password hash and revokes the tokens issued before
    /// `cutoff` (a later cut-off already in place stays). Returns the user
    /// as changed, or `None` when there is no such user.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    fn set_password(
        &self,
        user: &UserRef,
        password_hash: &str,
        cutoff: OffsetDateTime,
    ) -> impl Future<Output = Result<Option<UserRecord>, StoreError>> + Send;

    /// Replaces the roles of `user` by `roles` if they are still
    /// `expected`, and with `cutoff`, revokes the tokens issued before it
    /// (a later cut-off already in place stays). Returns the user as
    /// changed, or `None` when there is no such user or its roles are no
    /// longer `expected`.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    fn set_roles(
        &self,
        user: UserId,
        expected: &[Role],
        roles: &[Role],
        cutoff: Option<OffsetDateTime>,
    ) -> impl Future<Output = Result<Option<UserRecord>, StoreError>> + Send;

    /// Replaces the hash `old` of a user by `new`, leaving its tokens be
    /// (the password is the same, only its hash's cost changes). Returns
    /// false when the hash is no longer `old`: a password change won.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    fn replace_password_hash(
        &self,
        user: UserId,
        old: &str,
        new: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Disables a user and revokes the tokens issued before `cutoff`.
    /// Returns the user as changed, or `None` when there is no such user.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    fn disable_user(
        &self,
        user: &UserRef,
        cutoff: OffsetDateTime,
    ) -> impl Future<Output = Result<Option<UserRecord>, StoreError>> + Send;

    /// Lets a disabled user log in again. Tokens revoked by the disabling
    /// stay revoked. Returns the user as changed, or `None` when there is
    /// no such user.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    fn enable_user(
        &self,
        user: &UserRef,
    ) -> impl Future<Output = Result<Option<UserRecord>, StoreError>> + Send;

    /// Deletes a user; its tokens stop validating because their `sub` no
    /// longer names a user (the deletion is remembered in `deleted_users`).
    /// Returns the deleted user's id, or `None` when there is no such user.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    fn delete_user(
        &self,
        user: &UserRef,
    ) -> impl Future<Output = Result<Option<UserId>, StoreError>> + Send;

    /// Records the revocation of token `jti` until `expires_at`; when the
    /// token names `session`, a session of `user`, it ends with it, in the
    /// same statement. Returns whether a row was written (false: it was
    /// revoked already).
    ///
    /// # Errors
    /// [`StoreError`] when the database fails; nothing is then promised.
    fn revoke(
        &self,
        jti: Uuid,
        user: UserId,
        expires_at: OffsetDateTime,
        session: Option<SessionId>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes the revocations whose `expires_at` is before `now`, at most
    /// `batch_size` rows per statement so no lock is held for long. One
    /// process purges at a time; another gets [`PurgeOutcome::Busy`].
    ///
    /// # Errors
    /// [`StoreError`] when the database fails; the batches deleted before
    /// the failure stay deleted.
    fn purge_expired(
        &self,
        now: OffsetDateTime,
        batch_size: u32,
    ) -> impl Future<Output = Result<PurgeOutcome, StoreError>> + Send;

    /// Deletes the records of users deleted before `before`: no token of
    /// theirs can be current any more. Returns how many.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    fn forget_deleted_users(
        &self,
        before: OffsetDateTime,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Reads every revocation still in force: what the in-memory state
    /// starts from. Returns where a later [`Storage::revocations_since`]
    /// picks up.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    fn load_revocations(
        &self,
        apply: &mut (dyn FnMut(Revocation) + Send),
    ) -> impl Future<Output = Result<FeedCursor, StoreError>> + Send;

    /// Reads the revocations made since `cursor` (and a little before: a
    /// revocation may be given again), wherever they were made.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    fn revocations_since(
        &self,
        cursor: &FeedCursor,
        apply: &mut (dyn FnMut(Revocation) + Send),
    ) -> impl Future<Output = Result<FeedCursor, StoreError>> + Send;

    /// Notifications of revocations as they commit anywhere, where the
    /// backend has them (PostgreSQL, unless behind a transaction pooler
    /// without a direct URL); `None` where it does not: read
    /// [`Storage::revocations_since`] instead, often on SQLite.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    fn listen(
        &self,
    ) -> impl Future<Output = Result<Option<RevocationNotifications>, StoreError>> + Send;

    /// The failed-Login count of `key` (a canonical username), if any.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    fn failed_logins(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<FailedLogins>, StoreError>> + Send;

    /// Replaces the failed-Login count of `key` (a canonical username) with
    /// what `update` makes of the current one (`None` deletes it), as one
    /// transaction: concurrent updates of one key, from any process on the
    /// database, run one after another.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails; nothing is then changed.
    fn update_failed_logins(
        &self,
        key: &str,
        update: impl FnOnce(Option<FailedLogins>) -> Option<FailedLogins> + Send,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes the failed-Login counts whose last failure, and back-off,
    /// ended before `before`. Returns how many.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    fn forget_failed_logins(
        &self,
        before: OffsetDateTime,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Every signing key, in the order they activate.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    fn signing_keys(&self) -> impl Future<Output = Result<Vec<StoredKey>, StoreError>> + Send;

    /// Changes the signing keys as `plan` decides from the current ones, as
    /// one transaction: concurrent edits, from any process on the database,
    /// run one after another, each planned from what the one before left.
    /// Returns what `plan` returned beside its edits.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails; nothing is then changed.
    fn edit_signing_keys<T: Send>(
        &self,
        plan: impl FnOnce(Vec<StoredKey>) -> (Vec<KeyEdit>, T) + Send,
    ) -> impl Future<Output = Result<T, StoreError>> + Send;

    /// Deletes the keys retired or revoked before `before`: none of their
    /// tokens can be current. Returns how many.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    fn forget_signing_keys(
        &self,
        before: OffsetDateTime,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Sets the cut-off of user `user`: its tokens issued before `cutoff`
    /// are revoked, and its sessions started before it end (a later cut-off
    /// already in place stays). Returns the user's standing as the
    /// in-memory state takes it, or `None` when there is no such user.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    fn cut_off_user(
        &self,
        user: UserId,
        cutoff: OffsetDateTime,
    ) -> impl Future<Output = Result<Option<Revocation>, StoreError>> + Send;

    /// Stores a new session.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails (a session id is never
    /// reused: a clash is an error too).
    fn create_session(
        &self,
        session: &SessionRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Changes session `id` as `decide` does from it and its user, as one
    /// conditional write: the new state is written only if the session is
    /// still in the generation `decide` saw, and not ended; otherwise
    /// `decide` runs again on what the concurrent change left. Concurrent
    /// changes of one session, from any process on the database, thus take
    /// effect one after another, each decided from the one before (a new
    /// state of the same generation raises `access_expires_at`, never
    /// lowers it, so such changes commute). `decide` gets `None` when there
    /// is no such session, and returns the new state (`None`: unchanged)
    /// beside what to return.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails, or
    /// [`StoreError::Contended`] after a few lost attempts; nothing is then
    /// changed.
    fn update_session<T: Send>(
        &self,
        id: SessionId,
        decide: impl Fn(Option<(SessionRecord, UserRecord)>) -> (Option<SessionRecord>, T) + Send + Sync,
    ) -> impl Future<Output = Result<T, StoreError>> + Send;

    /// The live sessions of `user` at `now` (not ended, not expired, not
    /// started before the user's cut-off), newest first.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    fn list_sessions(
        &self,
        user: UserId,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Vec<SessionRecord>, StoreError>> + Send;

    /// Ends, as of `at`, the sessions of `user` that `which` selects, and
    /// returns the revocations that makes, as the in-memory state takes
    /// them (for [`SessionSelection::One`], also when it had ended before;
    /// empty when it is not the user's).
    ///
    /// # Errors
    /// [`StoreError`] when the database fails; nothing is then promised.
    fn end_sessions(
        &self,
        user: UserId,
        which: SessionSelection,
        at: OffsetDateTime,
    ) -> impl Future<Output = Result<Vec<Revocation>, StoreError>> + Send;

    /// Deletes the sessions that can neither refresh nor have a current
    /// access token at `now` (ended or expired, and past their last access
    /// token's expiry), at most `batch_size` rows per statement. Returns
    /// how many.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails; the batches deleted before
    /// the failure stay deleted.
    fn forget_sessions(
        &self,
        now: OffsetDateTime,
        batch_size: u32,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}
