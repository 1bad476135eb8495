//! What both backends do alike: the statements that read the same in both
//! SQL dialects, written once, and the one place where stored values turn
//! into domain values and back.

use time::OffsetDateTime;
use uuid::Uuid;

use super::{FailedLogins, Revocation, SessionRecord, StoredKey, UserRecord, unix_seconds_up};
use crate::domain::{Role, SessionId, UserId, UserRef, Username};

/// How one backend keeps what the two dialects store differently.
pub(super) trait Dialect {
    /// An instant as stored: `timestamptz`, or Unix seconds.
    type Instant;
    /// A user's roles as stored: `text[]`, or a JSON array.
    type Roles;

    /// `at` as this backend stores it.
    fn instant(at: OffsetDateTime) -> Self::Instant;

    /// A stored instant.
    ///
    /// # Errors
    /// When it is out of range.
    fn read_instant(stored: Self::Instant) -> Result<OffsetDateTime, sqlx::Error>;

    /// `roles` as this backend stores them.
    ///
    /// # Errors
    /// When they cannot be encoded.
    fn roles(roles: &[Role]) -> Result<Self::Roles, sqlx::Error>;

    /// Stored roles, as the text of each.
    ///
    /// # Errors
    /// When they cannot be decoded.
    fn read_roles(stored: Self::Roles) -> Result<Vec<String>, sqlx::Error>;

    /// Whether `err` is the unique index on `users.username_key` refusing a
    /// second user of one name.
    fn is_name_taken(err: &dyn sqlx::error::DatabaseError) -> bool;

    /// `users.username_key` in the order users are listed: by code point,
    /// whatever the database's locale.
    const USERNAME_ORDER: &'static str;

    /// The order of a user's sessions, newest first: by `created_at`, and
    /// where the dialect keeps whole seconds, by insertion within one.
    const NEWEST_FIRST: &'static str;
}

/// The columns of `sessions` the store reads, in the order of
/// [`SESSION_COLUMNS`].
pub(super) type SessionRow<D> = (
    Uuid,
    Uuid,
    <D as Dialect>::Instant,
    <D as Dialect>::Instant,
    <D as Dialect>::Instant,
    <D as Dialect>::Instant,
    Option<<D as Dialect>::Instant>,
    Option<String>,
    Option<String>,
    i64,
    <D as Dialect>::Instant,
);

/// Every column of `sessions`, in the order of [`SessionRow`].
pub(super) const SESSION_COLUMNS: &str = "id, user_id, created_at, last_refreshed_at, expires_at, \
     max_expires_at, revoked_at, client_address, user_agent, generation, access_expires_at";

/// A row of `sessions` as a record.
pub(super) fn session_record<D: Dialect>(row: SessionRow<D>) -> Result<SessionRecord, sqlx::Error> {
    let (
        id,
        user_id,
        created_at,
        last_refreshed_at,
        expires_at,
        max_expires_at,
        revoked_at,
        client_address,
        user_agent,
        generation,
        access_expires_at,
    ) = row;
    Ok(SessionRecord {
        id: SessionId::from(id),
        user_id: UserId::from(user_id),
        created_at: D::read_instant(created_at)?,
        last_refreshed_at: D::read_instant(last_refreshed_at)?,
        expires_at: D::read_instant(expires_at)?,
        max_expires_at: D::read_instant(max_expires_at)?,
        revoked_at: revoked_at.map(D::read_instant).transpose()?,
        client_address,
        user_agent,
        generation: u64::try_from(generation).map_err(|err| sqlx::Error::Decode(err.into()))?,
        access_expires_at: D::read_instant(access_expires_at)?,
    })
}

/// The revocation an ended session makes, from its id and
/// `access_expires_at`.
pub(super) fn session_revocation<D: Dialect>(
    (id, access_expires_at): (Uuid, <D as Dialect>::Instant),
) -> Result<Revocation, sqlx::Error> {
    Ok(Revocation::Session {
        id: SessionId::from(id),
        expires_at: unix_seconds_up(D::read_instant(access_expires_at)?),
    })
}

/// How often a change of one session is decided again after losing to a
/// concurrent one before giving up: each loss means another Refresh of the
/// session committed in between.
pub(super) const MAX_SESSION_ATTEMPTS: usize = 8;

/// A generation as stored.
pub(super) fn stored_generation(generation: u64) -> i64 {
    i64::try_from(generation).unwrap_or(i64::MAX)
}

/// The columns of `users` the store reads, in the order of
/// [`USER_COLUMNS`].
pub(super) type UserRow<D> = (
    Uuid,
    String,
    String,
    <D as Dialect>::Roles,
    Option<<D as Dialect>::Instant>,
    Option<<D as Dialect>::Instant>,
    <D as Dialect>::Instant,
    <D as Dialect>::Instant,
);

/// The columns of `deployment` the store reads.
pub(super) type DeploymentRow = (String, String, i64);

/// A row of `deployment` as a record.
pub(super) fn deployment_record((issuer, audience, ttl): DeploymentRow) -> super::DeploymentRecord {
    super::DeploymentRecord {
        issuer,
        audience,
        max_access_token_ttl: std::time::Duration::from_secs(ttl.unsigned_abs()),
    }
}

/// Every column of `users` the store reads, in the order of [`UserRow`].
pub(super) const USER_COLUMNS: &str =
    "id, username, password_hash, roles, disabled_at, tokens_valid_after, created_at, updated_at";

/// The condition on `users` that picks the user `user` names, as `$1`;
/// [`bind_user`] binds it.
pub(super) fn user_clause(user: &UserRef) -> &'static str {
    match user {
        UserRef::Id(_) => "id = $1",
        UserRef::Name(_) => "username_key = $1",
    }
}

/// Binds `$1` of a statement picking `user` with [`user_clause`]; a macro,
/// as the statements of both backends are (one `bind` per type).
macro_rules! bind_user {
    ($query:expr, $user:expr) => {
        match $user {
            crate::domain::UserRef::Id(id) => $query.bind(id.as_uuid()),
            crate::domain::UserRef::Name(name) => $query.bind(name.key()),
        }
    };
}
pub(super) use bind_user;

/// Runs a statement that reads at most one row of [`USER_COLUMNS`], and
/// makes it a record.
macro_rules! one_user {
    ($store:expr, $conn:expr, $query:expr) => {
        $query
            .persistent($store.prepares())
            .fetch_optional(&mut *$conn)
            .await?
            .map(user_record::<Self>)
            .transpose()
    };
}
pub(super) use one_user;

/// A row of `users` as a record of domain values. A stored name or role
/// that no longer parses is a decoding error, not a user.
pub(super) fn user_record<D: Dialect>(row: UserRow<D>) -> Result<UserRecord, sqlx::Error> {
    let (
        id,
        username,
        password_hash,
        roles,
        disabled_at,
        tokens_valid_after,
        created_at,
        updated_at,
    ) = row;
    let decode = |err: crate::domain::InvalidInput| sqlx::Error::Decode(err.into());
    Ok(UserRecord {
        id: UserId::from(id),
        username: Username::parse(username).map_err(decode)?,
        password_hash,
        roles: D::read_roles(roles)?
            .into_iter()
            .map(|role| Role::parse(role).map_err(decode))
            .collect::<Result<_, _>>()?,
        disabled_at: disabled_at.map(D::read_instant).transpose()?,
        tokens_valid_after: tokens_valid_after.map(D::read_instant).transpose()?,
        created_at: D::read_instant(created_at)?,
        updated_at: D::read_instant(updated_at)?,
    })
}

/// The columns of `failed_logins` the store reads.
pub(super) type FailedLoginsRow<D> = (
    i64,
    <D as Dialect>::Instant,
    Option<<D as Dialect>::Instant>,
);

/// One key's count, as both the plain read and the transaction read it.
pub(super) const SELECT_FAILED_LOGINS: &str = "select cast(failures as bigint), last_failed_at, \
     blocked_until from failed_logins where username_key = $1";

/// A row of `failed_logins` as the throttle's record.
pub(super) fn failed_logins<D: Dialect>(
    (failures, last_failed_at, blocked_until): FailedLoginsRow<D>,
) -> Result<FailedLogins, sqlx::Error> {
    Ok(FailedLogins {
        failures: u32::try_from(failures).unwrap_or(0),
        last_failed_at: D::read_instant(last_failed_at)?,
        blocked_until: blocked_until.map(D::read_instant).transpose()?,
    })
}

/// The columns of `signing_keys` the store reads, in the order of
/// [`SELECT_SIGNING_KEYS`].
pub(super) type KeyRow<D> = (
    String,
    Vec<u8>,
    Vec<u8>,
    String,
    <D as Dialect>::Instant,
    <D as Dialect>::Instant,
    Option<<D as Dialect>::Instant>,
    Option<<D as Dialect>::Instant>,
);

/// Every signing key, in the order they activate.
pub(super) const SELECT_SIGNING_KEYS: &str = "select kid, public_key, sealed_private_key, sealed_by, \
     created_at, activates_at, retires_at, revoked_at from signing_keys order by activates_at, kid";

/// A row of `signing_keys` as a record.
pub(super) fn stored_key<D: Dialect>(row: KeyRow<D>) -> Result<StoredKey, sqlx::Error> {
    let (
        kid,
        public_key,
        sealed_private_key,
        sealed_by,
        created_at,
        activates_at,
        retires_at,
        revoked_at,
    ) = row;
    Ok(StoredKey {
        kid,
        public_key,
        sealed_private_key,
        sealed_by,
        created_at: D::read_instant(created_at)?,
        activates_at: D::read_instant(activates_at)?,
        retires_at: retires_at.map(D::read_instant).transpose()?,
        revoked_at: revoked_at.map(D::read_instant).transpose()?,
    })
}

/// The statements both backends share, as the items of a
/// [`Storage`](super::Storage) impl: a macro each backend expands, rather
/// than functions generic over sqlx's `Database`, which would each restate
/// sqlx's executor and encoding bounds; the expansion is checked against
/// each backend's concrete types. `now` is the dialect's SQL for the
/// database's clock, in its stored form. The backend's type must implement
/// [`Dialect`] and have a `pool` and a `with_deadline` method, and a
/// `begin_failed_logins_update(key)` that starts a transaction in which
/// concurrent updates of one key are serialised, and a
/// `begin_signing_keys_edit()` that starts one in which edits of the
/// signing keys are.
macro_rules! shared_statements {
    (now = $now:literal) => {
        async fn ping(&self) -> Result<(), StoreError> {
            self.run(async |conn| {
                sqlx::query("select 1")
                    .persistent(self.prepares())
                    .execute(conn)
                    .await
            })
                .await?;
            Ok(())
        }

        async fn close(&self) {
            self.pool.close().await;
        }

        async fn record_deployment(
            &self,
            issuer: &str,
            audience: &str,
            ttl: std::time::Duration,
        ) -> Result<DeploymentRecord, StoreError> {
            let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1);
            // A start with other claims changes nothing: the caller refuses.
            let recorded: Option<DeploymentRow> = self
                .run(async |conn| {
                    sqlx::query_as(concat!(
                        "insert into deployment (issuer, audience, max_access_token_ttl_s, \
                         created_at, updated_at) values ($1, $2, $3, ",
                        $now,
                        ", ",
                        $now,
                        ") on conflict (id) do update set max_access_token_ttl_s = \
                         case when deployment.max_access_token_ttl_s > $3 \
                         then deployment.max_access_token_ttl_s else $3 end, updated_at = ",
                        $now,
                        " where deployment.issuer = $1 and deployment.audience = $2 \
                         returning issuer, audience, max_access_token_ttl_s"
                    ))
                    .bind(issuer)
                    .bind(audience)
                    .bind(ttl)
                    .persistent(self.prepares())
                    .fetch_optional(&mut *conn)
                    .await
                })
                .await?;
            match recorded {
                Some(row) => Ok(deployment_record(row)),
                None => self.deployment().await?.ok_or_else(|| {
                    StoreError::Query(sqlx::Error::RowNotFound)
                }),
            }
        }

        async fn deployment(&self) -> Result<Option<DeploymentRecord>, StoreError> {
            let row: Option<DeploymentRow> = self
                .run(async |conn| {
                    sqlx::query_as(
                        "select issuer, audience, max_access_token_ttl_s from deployment",
                    )
                    .persistent(self.prepares())
                    .fetch_optional(&mut *conn)
                    .await
                })
                .await?;
            Ok(row.map(deployment_record))
        }

        async fn find_user(&self, user: &UserRef) -> Result<Option<UserRecord>, StoreError> {
            let sql = format!("select {USER_COLUMNS} from users where {}", user_clause(user));
            self.run(async |conn| {
                one_user!(self, conn, bind_user!(sqlx::query_as::<_, UserRow<Self>>(sqlx::AssertSqlSafe(sql)), user))
            })
            .await
        }

        async fn list_users(
            &self,
            after: Option<&str>,
            limit: u32,
        ) -> Result<Vec<UserRecord>, StoreError> {
            // `username_key` is unique: the order is total, and a page
            // starts right after the last name of the one before.
            let sql = format!(
                "select {USER_COLUMNS} from users where $1 is null or {key} > $1 \
                 order by {key} limit $2",
                key = Self::USERNAME_ORDER,
            );
            self.run(async |conn| {
                sqlx::query_as::<_, UserRow<Self>>(sqlx::AssertSqlSafe(sql))
                    .bind(after)
                    .bind(i64::from(limit))
                    .persistent(self.prepares()).fetch_all(&mut *conn)
                    .await?
                    .into_iter()
                    .map(user_record::<Self>)
                    .collect()
            })
            .await
        }

        async fn count_users(&self) -> Result<u64, StoreError> {
            let count: i64 = self
                .run(async |conn| {
                    sqlx::query_scalar("select count(*) from users").persistent(self.prepares()).fetch_one(&mut *conn)
                        .await
                })
                .await?;
            Ok(count.unsigned_abs())
        }

        async fn add_user(&self, user: NewUser<'_>) -> Result<UserRecord, AddUserError> {
            let roles = Self::roles(user.roles).map_err(StoreError::Query)?;
            let sql = format!(
                "insert into users (id, username, username_key, password_hash, roles, \
                 created_at, updated_at) values ($1, $2, $3, $4, $5, {now}, {now}) \
                 returning {USER_COLUMNS}",
                now = $now,
            );
            let result = self
                .run(async |conn| {
                    sqlx::query_as::<_, UserRow<Self>>(sqlx::AssertSqlSafe(sql))
                        .bind(user.id.as_uuid())
                        .bind(user.username.as_str())
                        .bind(user.username.key())
                        .bind(user.password_hash)
                        .bind(&roles)
                        .persistent(self.prepares())
                        .fetch_one(&mut *conn)
                        .await
                        .and_then(user_record::<Self>)
                })
                .await;
            match result {
                Ok(record) => Ok(record),
                Err(StoreError::Query(sqlx::Error::Database(err)))
                    if Self::is_name_taken(err.as_ref()) =>
                {
                    Err(AddUserError::NameTaken)
                }
                Err(err) => Err(AddUserError::Store(err)),
            }
        }

        async fn set_password(
            &self,
            user: &UserRef,
            password_hash: &str,
            cutoff: OffsetDateTime,
        ) -> Result<Option<UserRecord>, StoreError> {
            // A later cut-off in place stays: `null > $3` is null, so a
            // user without one gets `$3`.
            let sql = format!(
                "update users set password_hash = $2, tokens_valid_after = \
                 case when tokens_valid_after > $3 then tokens_valid_after else $3 end, \
                 updated_at = {now} where {which} returning {USER_COLUMNS}",
                now = $now,
                which = user_clause(user),
            );
            self.run(async |conn| {
                one_user!(self, conn, bind_user!(sqlx::query_as::<_, UserRow<Self>>(sqlx::AssertSqlSafe(sql)), user)
                    .bind(password_hash)
                    .bind(Self::instant(cutoff)))
            })
            .await
        }

        async fn set_roles(
            &self,
            user: UserId,
            expected: &[Role],
            roles: &[Role],
            cutoff: Option<OffsetDateTime>,
        ) -> Result<Option<UserRecord>, StoreError> {
            let expected = Self::roles(expected).map_err(StoreError::Query)?;
            let roles = Self::roles(roles).map_err(StoreError::Query)?;
            let sql = format!(
                "update users set roles = $3, tokens_valid_after = case when $4 is null \
                 or tokens_valid_after > $4 then tokens_valid_after else $4 end, \
                 updated_at = {now} where id = $1 and roles = $2 returning {USER_COLUMNS}",
                now = $now,
            );
            self.run(async |conn| {
                one_user!(self, conn, sqlx::query_as::<_, UserRow<Self>>(sqlx::AssertSqlSafe(sql))
                    .bind(user.as_uuid())
                    .bind(&expected)
                    .bind(&roles)
                    .bind(cutoff.map(Self::instant)))
            })
            .await
        }

        async fn replace_password_hash(
            &self,
            user: UserId,
            old: &str,
            new: &str,
        ) -> Result<bool, StoreError> {
            let done = self
                .run(async |conn| {
                    sqlx::query(concat!(
                        "update users set password_hash = $3, updated_at = ",
                        $now,
                        " where id = $1 and password_hash = $2"
                    ))
                    .bind(user.as_uuid())
                    .bind(old)
                    .bind(new)
                    .persistent(self.prepares()).execute(&mut *conn)
                        .await
                })
                .await?;
            Ok(done.rows_affected() > 0)
        }

        async fn disable_user(
            &self,
            user: &UserRef,
            cutoff: OffsetDateTime,
        ) -> Result<Option<UserRecord>, StoreError> {
            let sql = format!(
                "update users set disabled_at = coalesce(disabled_at, {now}), \
                 tokens_valid_after = \
                 case when tokens_valid_after > $2 then tokens_valid_after else $2 end, \
                 updated_at = {now} where {which} returning {USER_COLUMNS}",
                now = $now,
                which = user_clause(user),
            );
            self.run(async |conn| {
                one_user!(self, conn, bind_user!(sqlx::query_as::<_, UserRow<Self>>(sqlx::AssertSqlSafe(sql)), user)
                    .bind(Self::instant(cutoff)))
            })
            .await
        }

        async fn enable_user(&self, user: &UserRef) -> Result<Option<UserRecord>, StoreError> {
            let sql = format!(
                "update users set disabled_at = null, updated_at = {now} where {which} \
                 returning {USER_COLUMNS}",
                now = $now,
                which = user_clause(user),
            );
            self.run(async |conn| {
                one_user!(self, conn, bind_user!(sqlx::query_as::<_, UserRow<Self>>(sqlx::AssertSqlSafe(sql)), user))
            })
            .await
        }

        async fn delete_user(&self, user: &UserRef) -> Result<Option<UserId>, StoreError> {
            let sql = format!("delete from users where {} returning id", user_clause(user));
            let deleted: Option<Uuid> = self
                .run(async |conn| {
                    bind_user!(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)), user)
                        .persistent(self.prepares()).fetch_optional(&mut *conn)
                        .await
                })
                .await?;
            Ok(deleted.map(UserId::from))
        }

        async fn revoke(
            &self,
            jti: Uuid,
            user: UserId,
            expires_at: OffsetDateTime,
            session: Option<SessionId>,
        ) -> Result<bool, StoreError> {
            // A trigger ends the session in the same statement.
            let done = self
                .run(async |conn| {
                    sqlx::query(concat!(
                        "insert into revoked_tokens (jti, user_id, expires_at, revoked_at, \
                         session_id) values ($1, $2, $3, ",
                        $now,
                        ", $4) on conflict (jti) do nothing"
                    ))
                    .bind(jti)
                    .bind(user.as_uuid())
                    .bind(Self::instant(expires_at))
                    .bind(session.map(|id| id.as_uuid()))
                    .persistent(self.prepares()).execute(&mut *conn)
                        .await
                })
                .await?;
            Ok(done.rows_affected() > 0)
        }

        async fn forget_deleted_users(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
            let done = self
                .run(async |conn| {
                    sqlx::query("delete from deleted_users where deleted_at < $1")
                        .bind(Self::instant(before))
                        .persistent(self.prepares()).execute(&mut *conn)
                        .await
                })
                .await?;
            Ok(done.rows_affected())
        }

        async fn failed_logins(&self, key: &str) -> Result<Option<FailedLogins>, StoreError> {
            let row: Option<FailedLoginsRow<Self>> = self
                .run(async |conn| {
                    sqlx::query_as(SELECT_FAILED_LOGINS)
                        .bind(key)
                        .persistent(self.prepares()).fetch_optional(&mut *conn)
                        .await
                })
                .await?;
            row.map(failed_logins::<Self>)
                .transpose()
                .map_err(StoreError::Query)
        }

        async fn update_failed_logins(
            &self,
            key: &str,
            update: impl FnOnce(Option<FailedLogins>) -> Option<FailedLogins> + Send,
        ) -> Result<(), StoreError> {
            self.with_deadline(async {
                let mut tx = self.begin_failed_logins_update(key).await?;
                let row: Option<FailedLoginsRow<Self>> = sqlx::query_as(SELECT_FAILED_LOGINS)
                    .bind(key)
                    .persistent(self.prepares()).fetch_optional(&mut *tx)
                    .await?;
                let old = row.map(failed_logins::<Self>).transpose()?;
                let new = update(old);
                match new {
                    _ if new == old => return Ok(()),
                    Some(record) => {
                        sqlx::query(
                            "insert into failed_logins \
                             (username_key, failures, last_failed_at, blocked_until) \
                             values ($1, $2, $3, $4) \
                             on conflict (username_key) do update set \
                             failures = excluded.failures, \
                             last_failed_at = excluded.last_failed_at, \
                             blocked_until = excluded.blocked_until",
                        )
                        .bind(key)
                        .bind(i32::try_from(record.failures).unwrap_or(i32::MAX))
                        .bind(Self::instant(record.last_failed_at))
                        .bind(record.blocked_until.map(Self::instant))
                        .persistent(self.prepares()).execute(&mut *tx)
                        .await?;
                    }
                    None => {
                        sqlx::query("delete from failed_logins where username_key = $1")
                            .bind(key)
                            .persistent(self.prepares()).execute(&mut *tx)
                            .await?;
                    }
                }
                tx.commit().await?;
                Ok(())
            })
            .await
        }

        async fn forget_failed_logins(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
            let done = self
                .run(async |conn| {
                    sqlx::query(
                        "delete from failed_logins where last_failed_at < $1 \
                         and (blocked_until is null or blocked_until < $1)",
                    )
                    .bind(Self::instant(before))
                    .persistent(self.prepares()).execute(&mut *conn)
                        .await
                })
                .await?;
            Ok(done.rows_affected())
        }

        async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
            self.run(async |conn| {
                sqlx::query_as::<_, KeyRow<Self>>(SELECT_SIGNING_KEYS)
                    .persistent(self.prepares()).fetch_all(&mut *conn)
                    .await?
                    .into_iter()
                    .map(stored_key::<Self>)
                    .collect()
            })
            .await
        }

        async fn edit_signing_keys<T: Send>(
            &self,
            plan: impl FnOnce(Vec<StoredKey>) -> (Vec<KeyEdit>, T) + Send,
        ) -> Result<T, StoreError> {
            self.with_deadline(async {
                let mut tx = self.begin_signing_keys_edit().await?;
                let keys = sqlx::query_as::<_, KeyRow<Self>>(SELECT_SIGNING_KEYS)
                    .persistent(self.prepares()).fetch_all(&mut *tx)
                    .await?
                    .into_iter()
                    .map(stored_key::<Self>)
                    .collect::<Result<Vec<_>, _>>()?;
                let (edits, outcome) = plan(keys);
                if edits.is_empty() {
                    return Ok(outcome);
                }
                for edit in edits {
                    match edit {
                        KeyEdit::Insert(key) => {
                            sqlx::query(
                                "insert into signing_keys (kid, public_key, sealed_private_key, \
                                 sealed_by, created_at, activates_at, retires_at, revoked_at) \
                                 values ($1, $2, $3, $4, $5, $6, $7, $8)",
                            )
                            .bind(key.kid)
                            .bind(key.public_key)
                            .bind(key.sealed_private_key)
                            .bind(key.sealed_by)
                            .bind(Self::instant(key.created_at))
                            .bind(Self::instant(key.activates_at))
                            .bind(key.retires_at.map(Self::instant))
                            .bind(key.revoked_at.map(Self::instant))
                            .persistent(self.prepares()).execute(&mut *tx)
                            .await?;
                        }
                        KeyEdit::Reschedule(key) => {
                            sqlx::query(
                                "update signing_keys set activates_at = $2, retires_at = $3, \
                                 revoked_at = $4 where kid = $1",
                            )
                            .bind(key.kid)
                            .bind(Self::instant(key.activates_at))
                            .bind(key.retires_at.map(Self::instant))
                            .bind(key.revoked_at.map(Self::instant))
                            .persistent(self.prepares()).execute(&mut *tx)
                            .await?;
                        }
                    }
                }
                tx.commit().await?;
                Ok(outcome)
            })
            .await
        }

        async fn cut_off_user(
            &self,
            user: UserId,
            cutoff: OffsetDateTime,
        ) -> Result<Option<Revocation>, StoreError> {
            let row: Option<(bool, Option<<Self as Dialect>::Instant>)> = self
                .run(async |conn| {
                    sqlx::query_as(concat!(
                        "update users set tokens_valid_after = \
                         case when tokens_valid_after > $2 then tokens_valid_after else $2 end, \
                         updated_at = ",
                        $now,
                        " where id = $1 returning disabled_at is not null, tokens_valid_after"
                    ))
                    .bind(user.as_uuid())
                    .bind(Self::instant(cutoff))
                    .persistent(self.prepares())
                    .fetch_optional(&mut *conn)
                    .await
                })
                .await?;
            row.map(|(disabled, tokens_valid_after)| {
                Ok(Revocation::User {
                    id: user,
                    disabled,
                    tokens_valid_after: tokens_valid_after
                        .map(Self::read_instant)
                        .transpose()?
                        .map(unix_seconds_up),
                })
            })
            .transpose()
            .map_err(StoreError::Query)
        }

        async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
            let sql = format!(
                "insert into sessions ({SESSION_COLUMNS}) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            );
            self.run(async |conn| {
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(session.id.as_uuid())
                    .bind(session.user_id.as_uuid())
                    .bind(Self::instant(session.created_at))
                    .bind(Self::instant(session.last_refreshed_at))
                    .bind(Self::instant(session.expires_at))
                    .bind(Self::instant(session.max_expires_at))
                    .bind(session.revoked_at.map(Self::instant))
                    .bind(session.client_address.as_deref())
                    .bind(session.user_agent.as_deref())
                    .bind(stored_generation(session.generation))
                    .bind(Self::instant(session.access_expires_at))
                    .persistent(self.prepares())
                    .execute(&mut *conn)
                    .await
            })
            .await?;
            Ok(())
        }

        async fn update_session<T: Send>(
            &self,
            id: SessionId,
            decide: impl Fn(Option<(SessionRecord, UserRecord)>) -> (Option<SessionRecord>, T)
                + Send
                + Sync,
        ) -> Result<T, StoreError> {
            let select_session = format!("select {SESSION_COLUMNS} from sessions where id = $1");
            let select_user = format!("select {USER_COLUMNS} from users where id = $1");
            // Optimistic: read without a lock, decide, and write only if
            // the session is still in the generation the decision read, not
            // ended. No lock is held across the decision (on SQLite, the
            // file's one write lock would be), and a write that lost to
            // another decides again from what that one left.
            for _ in 0..MAX_SESSION_ATTEMPTS {
                let found = self
                    .run(async |conn| {
                        let Some(session) =
                            sqlx::query_as::<_, SessionRow<Self>>(sqlx::AssertSqlSafe(
                                select_session.clone(),
                            ))
                            .bind(id.as_uuid())
                            .persistent(self.prepares())
                            .fetch_optional(&mut *conn)
                            .await?
                            .map(session_record::<Self>)
                            .transpose()?
                        else {
                            return Ok(None);
                        };
                        Ok(sqlx::query_as::<_, UserRow<Self>>(sqlx::AssertSqlSafe(
                            select_user.clone(),
                        ))
                        .bind(session.user_id.as_uuid())
                        .persistent(self.prepares())
                        .fetch_optional(&mut *conn)
                        .await?
                        .map(user_record::<Self>)
                        .transpose()?
                        .map(|user| (session, user)))
                    })
                    .await?;
                let read = found.as_ref().map(|(session, _)| session.generation);
                let (new, outcome) = decide(found);
                let (Some(new), Some(read)) = (new, read) else {
                    return Ok(outcome);
                };
                // Concurrent grants of one generation commute: the access
                // tokens' bound only grows.
                let done = self
                    .run(async |conn| {
                        sqlx::query(
                            "update sessions set generation = $2, last_refreshed_at = $3, \
                             expires_at = $4, access_expires_at = \
                             case when access_expires_at > $5 then access_expires_at else $5 end, \
                             revoked_at = $6 \
                             where id = $1 and generation = $7 and revoked_at is null",
                        )
                        .bind(id.as_uuid())
                        .bind(stored_generation(new.generation))
                        .bind(Self::instant(new.last_refreshed_at))
                        .bind(Self::instant(new.expires_at))
                        .bind(Self::instant(new.access_expires_at))
                        .bind(new.revoked_at.map(Self::instant))
                        .bind(stored_generation(read))
                        .persistent(self.prepares())
                        .execute(&mut *conn)
                        .await
                    })
                    .await?;
                if done.rows_affected() > 0 {
                    return Ok(outcome);
                }
            }
            Err(StoreError::Contended)
        }

        async fn list_sessions(
            &self,
            user: UserId,
            now: OffsetDateTime,
        ) -> Result<Vec<SessionRecord>, StoreError> {
            // Sessions started before the user's cut-off ended with it; one
            // that raced it (a Login checked before, stored after) is left
            // out here as Refresh refuses it.
            let sql = format!(
                "select {SESSION_COLUMNS} from sessions where user_id = $1 \
                 and revoked_at is null and expires_at > $2 \
                 and created_at >= coalesce( \
                     (select tokens_valid_after from users where id = $1), created_at) \
                 order by {}",
                Self::NEWEST_FIRST
            );
            self.run(async |conn| {
                sqlx::query_as::<_, SessionRow<Self>>(sqlx::AssertSqlSafe(sql))
                    .bind(user.as_uuid())
                    .bind(Self::instant(now))
                    .persistent(self.prepares())
                    .fetch_all(&mut *conn)
                    .await?
                    .into_iter()
                    .map(session_record::<Self>)
                    .collect()
            })
            .await
        }

        async fn end_sessions(
            &self,
            user: UserId,
            which: SessionSelection,
            at: OffsetDateTime,
        ) -> Result<Vec<Revocation>, StoreError> {
            let (sql, session) = match which {
                SessionSelection::One(id) => (
                    "update sessions set revoked_at = coalesce(revoked_at, $3) \
                     where user_id = $1 and id = $2 returning id, access_expires_at",
                    id.as_uuid(),
                ),
                // All: all but the nil id, which no session has.
                SessionSelection::AllBut(_) | SessionSelection::All => (
                    "update sessions set revoked_at = $3 \
                     where user_id = $1 and id <> $2 and revoked_at is null \
                     returning id, access_expires_at",
                    match which {
                        SessionSelection::AllBut(id) => id.as_uuid(),
                        _ => Uuid::nil(),
                    },
                ),
            };
            self.run(async |conn| {
                sqlx::query_as::<_, (Uuid, <Self as Dialect>::Instant)>(sql)
                    .bind(user.as_uuid())
                    .bind(session)
                    .bind(Self::instant(at))
                    .persistent(self.prepares())
                    .fetch_all(&mut *conn)
                    .await?
                    .into_iter()
                    .map(session_revocation::<Self>)
                    .collect()
            })
            .await
        }

        async fn forget_sessions(
            &self,
            now: OffsetDateTime,
            batch_size: u32,
        ) -> Result<u64, StoreError> {
            let mut removed = 0;
            loop {
                let done = self
                    .run(async |conn| {
                        sqlx::query(
                            "delete from sessions where id in (select id from sessions \
                             where access_expires_at < $1 \
                             and (revoked_at is not null or expires_at < $1) limit $2)",
                        )
                        .bind(Self::instant(now))
                        .bind(i64::from(batch_size))
                        .persistent(self.prepares())
                        .execute(&mut *conn)
                        .await
                    })
                    .await?;
                removed += done.rows_affected();
                if done.rows_affected() < u64::from(batch_size) {
                    return Ok(removed);
                }
            }
        }

        async fn forget_signing_keys(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
            let done = self
                .run(async |conn| {
                    sqlx::query(
                        "delete from signing_keys where retires_at < $1 or revoked_at < $1",
                    )
                    .bind(Self::instant(before))
                    .persistent(self.prepares()).execute(&mut *conn)
                        .await
                })
                .await?;
            Ok(done.rows_affected())
        }
    };
}

pub(super) use shared_statements;

/// One batch of the purge of expired revocations: `$1` now, `$2` the
/// batch size.
pub(super) const DELETE_EXPIRED_BATCH: &str = "delete from revoked_tokens where jti in ( \
     select jti from revoked_tokens where expires_at < $1 order by expires_at limit $2)";

/// Deletes expired revocations in batches on `conn`, which holds the purge
/// lock where the lock is the connection's.
macro_rules! delete_expired_batches {
    ($store:expr, $conn:expr, $now:expr, $batch_size:expr) => {{
        let mut removed = 0;
        loop {
            let done = $store
                .with_deadline(
                    sqlx::query(DELETE_EXPIRED_BATCH)
                        .bind($now)
                        .bind(i64::from($batch_size))
                        .persistent($store.prepares())
                        .execute(&mut *$conn),
                )
                .await?;
            removed += done.rows_affected();
            if done.rows_affected() < u64::from($batch_size) {
                break;
            }
        }
        removed
    }};
}

pub(super) use delete_expired_batches;
