//! The use cases: log in, log out, validate a token, manage accounts.
//! Nothing here knows about gRPC; storage is reached through [`Store`].

mod access;
mod accounts;
pub mod deployment;
mod keys;
mod password;
mod revocations;
mod sessions;
mod signing_keys;
mod throttle;
mod tokens;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use secrecy::SecretString;
use time::OffsetDateTime;

pub use access::Access;
pub use accounts::{AccountError, Accounts, UserPage};
pub use authd_token::VerifiedTokens;
pub use keys::{
    KeyEncryptionKey, KeyInfo, KeyRing, KeyState, NoSigner, PublicJwk, PublicKey, RevokeRefusal,
    Rotation, SealError, SigningKey, ensure_private, write_private_file_once,
};
pub use password::{
    HashCost, HashingPriority, Overloaded, PasswordCheck, PasswordError, PasswordPolicy, Passwords,
    QueuePlace,
};
pub use revocations::{
    HeldRevocations, NumberedChange, RevocationChange, RevocationState, RevocationWatch, WatchStart,
};
pub use sessions::{ClientInfo, RefreshTokenKey, RefreshTokens, SessionSettings, UserSession};
pub use signing_keys::{KeyError, KeyFiles, SigningKeys};
pub use throttle::{LoginThrottle, ThrottleMode, ThrottleSettings};
pub use tokens::{AccessTokens, Claims, InvalidToken, IssueError, TokenSettings};

use self::throttle::{Refusal, Settlement};
use crate::{
    domain::{AccessToken, Password, SessionId, UserId, UserRef, Username},
    store::{
        Revocation, SessionRecord, SessionSelection, Storage as _, Store, StoreError, UserRecord,
    },
    telemetry::metrics::Meter,
};

/// The longest a Login waits for the user's cut-off second to pass.
const MAX_CUTOFF_WAIT: Duration = Duration::from_secs(1);

/// Why a use case failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown user, wrong password or disabled user: deliberately one case.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// The token given to Logout is not a current token of ours.
    #[error("the access token is {0}")]
    InvalidToken(InvalidToken),
    /// Not a refresh token of ours, spent, or its session has ended:
    /// deliberately one case.
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    /// A spent refresh token was used again: someone holds a copy, and its
    /// session has just been ended. Told apart from
    /// [`AuthError::InvalidRefreshToken`] for the client's code only; the
    /// message is the same.
    #[error("invalid refresh token")]
    RefreshTokenReused,
    /// The caller's user has no session of that id.
    #[error("no such session")]
    SessionNotFound,
    /// The database could not be reached; the caller may retry.
    #[error("the database is unavailable")]
    Unavailable(#[source] StoreError),
    /// Too many Logins are waiting for a password check: refused at once
    /// rather than answered late.
    #[error("too many logins in progress")]
    Overloaded,
    /// Too many failed Logins for this name or from this address: refused
    /// without a password check until the back-off ends.
    #[error("too many failed logins; retry in {0:?}")]
    Throttled(Duration),
    /// The revocation state has not been brought up to date for too long
    /// to be trusted: whether a token is revoked cannot be known.
    #[error("the revocation state is out of date")]
    RevocationsStale,
    /// Anything else: a bug or a broken deployment.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<Refusal> for AuthError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::BackingOff(wait) => Self::Throttled(wait),
            Refusal::Busy => Self::Overloaded,
            Refusal::Store(err) => err.into(),
        }
    }
}

impl From<PasswordError> for AuthError {
    fn from(err: PasswordError) -> Self {
        match err {
            PasswordError::Overloaded(_) => Self::Overloaded,
            other => Self::Internal(other.into()),
        }
    }
}

impl From<Overloaded> for AuthError {
    fn from(Overloaded: Overloaded) -> Self {
        Self::Overloaded
    }
}

impl From<StoreError> for AuthError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(_) | StoreError::TimedOut(_) | StoreError::Contended => {
                Self::Unavailable(err)
            }
            StoreError::Query(_) => Self::Internal(err.into()),
        }
    }
}

/// What [`Authenticator::login`] and [`Authenticator::refresh`] issue.
#[derive(Debug)]
pub struct Grant {
    /// The signed JWT.
    pub access_token: SecretString,
    /// Its lifetime from issue to expiry.
    pub expires_in: Duration,
    /// Its `exp`, seconds since the epoch.
    pub expires_at: u64,
    /// The user it was issued to.
    pub user_id: UserId,
    /// The session's refresh token.
    pub refresh_token: SecretString,
    /// When the refresh token lapses unless used.
    pub refresh_expires_at: OffsetDateTime,
    /// The session.
    pub session_id: SessionId,
}

/// What a Logout ends besides its token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogoutScope {
    /// The token's session.
    #[default]
    Session,
    /// Every session and every token of the user.
    User,
    /// Every session of the user but the token's.
    OtherSessions,
}

/// The answer of [`Authenticator::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validity {
    /// Signed by us, current, not revoked; shared with the verified-token
    /// cache, so that answering from memory copies nothing.
    Valid(Arc<Claims>),
    /// Not valid, and why.
    Invalid(InvalidToken),
}

/// What [`Authenticator::logout`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutOutcome {
    /// The revocation is committed.
    Revoked,
    /// The token was revoked already, or has expired: nothing was written.
    AlreadyInvalid,
}

/// Login, Refresh, Logout, ValidateToken and a user's own sessions.
#[derive(Debug)]
pub struct Authenticator {
    store: Store,
    tokens: AccessTokens,
    refresh_tokens: RefreshTokens,
    verified: VerifiedTokens,
    passwords: Passwords,
    throttle: LoginThrottle,
    revocations: Arc<RevocationState>,
    meter: Meter,
}

impl Authenticator {
    /// The use cases over `store`, issuing `tokens` and `refresh_tokens`
    /// (remembering the tokens it verified in `verified`), checking
    /// `passwords` (failures counted by `throttle`), answering revocation
    /// questions from `revocations`.
    pub fn new(
        store: Store,
        (tokens, refresh_tokens): (AccessTokens, RefreshTokens),
        verified: VerifiedTokens,
        passwords: Passwords,
        throttle: LoginThrottle,
        revocations: Arc<RevocationState>,
    ) -> Self {
        Self {
            store,
            tokens,
            refresh_tokens,
            verified,
            passwords,
            throttle,
            revocations,
            meter: Meter::off(),
        }
    }

    /// The same use cases, counting their outcomes with `meter`.
    #[must_use]
    pub fn metered(self, meter: Meter) -> Self {
        Self { meter, ..self }
    }

    /// Checks a user's password and starts a session, unless failed Logins
    /// for this name or from `client` are being throttled.
    ///
    /// Exactly one argon2 verification runs whether the user exists or not,
    /// so the answer's timing does not reveal which names exist.
    ///
    /// # Errors
    /// [`AuthError::InvalidCredentials`] for an unknown user, a wrong
    /// password or a disabled user; [`AuthError::Throttled`] during a
    /// back-off, whatever the password; [`AuthError::Overloaded`] when the
    /// hashing queue is full (before the database is asked anything) or the
    /// check has not started a second after the Login arrived;
    /// [`AuthError::Unavailable`] when the database cannot be reached.
    #[tracing::instrument(skip_all, fields(username = %username))]
    pub async fn login(
        &self,
        username: &Username,
        password: &Password,
        client: &ClientInfo,
    ) -> Result<Grant, AuthError> {
        let outcome = self.attempt_login(username, password, client).await;
        self.meter.logged_in(&outcome);
        outcome
    }

    async fn attempt_login(
        &self,
        username: &Username,
        password: &Password,
        client: &ClientInfo,
    ) -> Result<Grant, AuthError> {
        let arrived = Instant::now();
        let turn = self.throttle.begin(username, client.address).await?;
        // A Login the hashing threads would not get to within about a
        // second is refused here, before it costs a database read.
        let place = self.passwords.queue_place(arrived)?;
        let attempt = turn.admit().await?;
        let outcome = self.check_password(username, password, place).await;
        attempt
            .settle(match &outcome {
                Ok(_) => Settlement::Succeeded,
                Err(AuthError::InvalidCredentials) => Settlement::Failed,
                Err(_) => Settlement::NotTried,
            })
            .await;
        let (user, rehash) = outcome?;
        self.issue(user, rehash, password, client).await
    }

    /// The user named `username`, when it exists, is enabled and
    /// `password` is its password; and whether its hash wants renewing.
    /// Refused as overload when the check, in `place`, cannot start within
    /// about a second of the Login's arrival.
    async fn check_password(
        &self,
        username: &Username,
        password: &Password,
        place: QueuePlace,
    ) -> Result<(UserRecord, bool), AuthError> {
        let user = self
            .store
            .find_user(&UserRef::Name(username.clone()))
            .await?;
        let stored_hash = user.as_ref().map(|u| u.password_hash.as_str());
        let check = self.passwords.verify(place, password, stored_hash).await?;
        match (user, check) {
            (Some(user), PasswordCheck::Matches { rehash }) if user.disabled_at.is_none() => {
                Ok((user, rehash))
            }
            _ => Err(AuthError::InvalidCredentials),
        }
    }

    /// Starts a session of `user`, whose `password` was just checked.
    async fn issue(
        &self,
        user: UserRecord,
        rehash: bool,
        password: &Password,
        client: &ClientInfo,
    ) -> Result<Grant, AuthError> {
        if rehash {
            self.upgrade_hash(&user, password).await;
        }

        // `iat` has whole seconds, and a token counts as revoked when its
        // `iat` is before the user's cut-off. A fresh cut-off is the next
        // whole second, so wait it out rather than issue a token born
        // revoked. One further ahead means another instance's clock runs
        // fast: waiting would not help, so say so instead.
        if let Some(cutoff) = user.tokens_valid_after
            && let Ok(ahead) = Duration::try_from(cutoff - OffsetDateTime::now_utc())
        {
            if ahead <= MAX_CUTOFF_WAIT {
                tokio::time::sleep(ahead).await;
            } else {
                tracing::warn!(
                    user_id = %user.id,
                    ahead = %humantime::format_duration(ahead),
                    "the user's token cut-off lies in the future: are the clocks of all instances in sync? \
                     Tokens issued before it will not validate"
                );
            }
        }
        let now = OffsetDateTime::now_utc();
        let issued_at = jsonwebtoken::get_current_timestamp();
        let session = self.new_session(user.id, now, self.access_expires_at(issued_at)?, client);
        self.store.create_session(&session).await?;
        let grant = self.grant(&user, &session, issued_at)?;
        tracing::info!(user_id = %user.id, session_id = %session.id, "started a session");
        Ok(grant)
    }

    /// A new access token for `user` in `session`, issued at `issued_at`,
    /// and the session's refresh token.
    fn grant(
        &self,
        user: &UserRecord,
        session: &SessionRecord,
        issued_at: u64,
    ) -> Result<Grant, AuthError> {
        let issued = self
            .tokens
            .issue(
                user.id,
                session.id,
                user.username.as_str(),
                &user.roles,
                issued_at,
            )
            .map_err(|err| AuthError::Internal(err.into()))?;
        tracing::debug!(user_id = %user.id, jti = %issued.claims.jti, "issued a token");
        Ok(Grant {
            access_token: issued.token,
            expires_in: self.tokens.settings().ttl,
            expires_at: issued.claims.exp,
            user_id: user.id,
            refresh_token: self.refresh_token_of(session),
            refresh_expires_at: session.expires_at,
            session_id: session.id,
        })
    }

    /// Checks a token's signature, expiry and revocation state, without a
    /// database round trip: a token verified before skips the signature
    /// check, and revocations are held in memory.
    ///
    /// # Errors
    /// [`AuthError::RevocationsStale`] when the revocation state is too old
    /// to trust: the token is then neither valid nor invalid, and must not
    /// be trusted.
    pub fn validate(&self, token: &AccessToken) -> Result<Validity, AuthError> {
        let outcome = self.validity(token);
        self.meter.validated(&outcome);
        outcome
    }

    fn validity(&self, token: &AccessToken) -> Result<Validity, AuthError> {
        let claims = match self.verify(token) {
            Ok(claims) => claims,
            Err(reason) => return Ok(Validity::Invalid(reason)),
        };
        if self.is_revoked(&claims)? {
            return Ok(Validity::Invalid(InvalidToken::Revoked));
        }
        Ok(Validity::Valid(claims))
    }

    /// The token's claims, from the cache or by verifying it.
    fn verify(&self, token: &AccessToken) -> Result<Arc<Claims>, InvalidToken> {
        let text = token.expose();
        // Read before verifying: a key revoked meanwhile moves it on, and
        // the entry is never used.
        let generation = self.tokens.key_generation();
        if let Some(claims) =
            self.verified
                .get(text, jsonwebtoken::get_current_timestamp(), generation)
        {
            return Ok(claims);
        }
        let claims = Arc::new(self.tokens.verify(text)?);
        self.verified.insert(text, claims.clone(), generation);
        Ok(claims)
    }

    /// A watcher of the revocation state, resuming after change `after`
    /// (of the incarnation named) where it can, else from a snapshot.
    pub fn watch_revocations(&self, after: Option<(u64, u64)>) -> RevocationWatch {
        self.revocations.watch(after)
    }

    /// What tells this process's revocation change numbers from others'.
    pub fn revocation_incarnation(&self) -> u64 {
        self.revocations.incarnation()
    }

    /// When the revocation state last matched the store.
    pub fn revocations_as_of(&self) -> Option<std::time::SystemTime> {
        self.revocations.synced_as_of()
    }

    /// The public keys that verify this service's tokens, for clients that
    /// check signatures themselves.
    pub fn published_keys(&self) -> Vec<PublicJwk> {
        self.tokens.published_keys()
    }

    /// Revokes a token until it expires, and ends what `scope` says; all of
    /// it is committed before this returns.
    ///
    /// # Errors
    /// [`AuthError::InvalidToken`] when the token is not a token of ours
    /// (or, for the scopes beyond the session, not valid);
    /// [`AuthError::RevocationsStale`] when that cannot be known;
    /// [`AuthError::Unavailable`] when the database cannot be reached.
    pub async fn logout(
        &self,
        token: &AccessToken,
        scope: LogoutScope,
    ) -> Result<LogoutOutcome, AuthError> {
        let claims = match self.verify(token) {
            Ok(claims) => claims,
            // Expired, but its session may live on: end it.
            Err(InvalidToken::Expired) if scope == LogoutScope::Session => {
                let claims = self
                    .tokens
                    .verify_ignoring_expiry(token.expose())
                    .map_err(AuthError::InvalidToken)?;
                if let Some(sid) = claims.sid {
                    self.end(claims.sub, SessionSelection::One(SessionId::from(sid)))
                        .await?;
                }
                return Ok(LogoutOutcome::AlreadyInvalid);
            }
            Err(reason) => return Err(AuthError::InvalidToken(reason)),
        };
        let user = UserId::from(claims.sub);
        match scope {
            LogoutScope::Session => self.logout_session(&claims).await,
            LogoutScope::User => {
                // Every token issued so far, this one included, and with the
                // cut-off every session started before it.
                if self.is_revoked(&claims)? {
                    return Err(AuthError::InvalidToken(InvalidToken::Revoked));
                }
                let cutoff = revocation_cutoff(OffsetDateTime::now_utc());
                if let Some(standing) = self.store.cut_off_user(user, cutoff).await? {
                    self.revocations.apply(standing);
                }
                tracing::info!(user_id = %user, "logged a user out everywhere");
                Ok(LogoutOutcome::Revoked)
            }
            LogoutScope::OtherSessions => {
                if self.is_revoked(&claims)? {
                    return Err(AuthError::InvalidToken(InvalidToken::Revoked));
                }
                let which = claims.sid.map_or(SessionSelection::All, |sid| {
                    SessionSelection::AllBut(SessionId::from(sid))
                });
                let ended = self.end(claims.sub, which).await?;
                tracing::info!(user_id = %user, sessions = ended, "ended the user's other sessions");
                Ok(LogoutOutcome::Revoked)
            }
        }
    }

    /// Revokes the token and, in the same statement, ends its session.
    async fn logout_session(&self, claims: &Claims) -> Result<LogoutOutcome, AuthError> {
        // Revoked already (logged out, its session ended, or with its user,
        // whose cut-off ended the session too): nothing to write. Not known
        // (the state is out of date): write anyway; a second row for one
        // `jti` is never made.
        if self
            .revocations
            .revokes(claims.jti, claims.sid, claims.sub, claims.iat)
            == Some(true)
        {
            return Ok(LogoutOutcome::AlreadyInvalid);
        }
        // Keep the row while the token could still pass the `exp` check.
        let keep_until = claims
            .exp
            .saturating_add(self.tokens.settings().leeway.as_secs());
        let keep_until =
            unix_time(keep_until).ok_or(AuthError::InvalidToken(InvalidToken::Malformed))?;
        let session = claims.sid.map(SessionId::from);
        self.store
            .revoke(claims.jti, UserId::from(claims.sub), keep_until, session)
            .await?;
        // Committed: from now on this instance answers REVOKED, for the
        // session's other tokens too. Every one of them was issued by now,
        // so is expired by now + TTL + leeway; the feed brings the stored
        // bound, which covers other instances' TTLs as well.
        self.revocations.apply(Revocation::Token {
            jti: claims.jti,
            expires_at: keep_until.unix_timestamp(),
        });
        if let Some(id) = session {
            let bound = self.access_expires_at(jsonwebtoken::get_current_timestamp())?;
            self.revocations.apply(Revocation::Session {
                id,
                expires_at: crate::store::unix_seconds_up(bound),
            });
        }
        tracing::info!(user_id = %claims.sub, jti = %claims.jti, "revoked a token");
        Ok(LogoutOutcome::Revoked)
    }

    /// Ends the sessions of `user` that `which` selects, here at once and
    /// everywhere within the revocation bound. Returns how many.
    async fn end(&self, user: uuid::Uuid, which: SessionSelection) -> Result<usize, AuthError> {
        let ended = self
            .store
            .end_sessions(UserId::from(user), which, OffsetDateTime::now_utc())
            .await?;
        let count = ended.len();
        self.apply_all(ended);
        Ok(count)
    }

    /// Replaces a hash made at an older cost by one at today's, now that
    /// the password is known. Best effort: a failure is logged, and the old
    /// hash keeps working.
    async fn upgrade_hash(&self, user: &UserRecord, password: &Password) {
        let upgraded = match self.passwords.hash(password).await {
            Ok(hash) => self
                .store
                .replace_password_hash(user.id, &user.password_hash, &hash)
                .await
                .map_err(AuthError::from),
            Err(err) => Err(AuthError::from(err)),
        };
        match upgraded {
            Ok(true) => {
                tracing::info!(user_id = %user.id, "re-hashed the password at the current cost")
            }
            // The password changed meanwhile: the new hash stays.
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(user_id = %user.id, error = %err, "could not re-hash the password")
            }
        }
    }

    fn is_revoked(&self, claims: &Claims) -> Result<bool, AuthError> {
        self.revocations
            .revokes(claims.jti, claims.sid, claims.sub, claims.iat)
            .ok_or(AuthError::RevocationsStale)
    }
}

/// The instant from which tokens of a user stay valid after a password
/// change or a disabling: the next whole second, so that every token issued
/// up to now, whose `iat` is truncated to the second, falls before it.
pub(crate) fn revocation_cutoff(now: OffsetDateTime) -> OffsetDateTime {
    let whole = now.replace_nanosecond(0).unwrap_or(now);
    whole + time::Duration::SECOND
}

fn unix_time(seconds: u64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(i64::try_from(seconds).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoff_is_the_next_whole_second() {
        let now = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_250_000_000).unwrap();
        let cutoff = revocation_cutoff(now);
        assert_eq!(cutoff.unix_timestamp(), 1_700_000_001);
        assert_eq!(cutoff.nanosecond(), 0);
        let exact = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(revocation_cutoff(exact).unix_timestamp(), 1_700_000_001);
    }
}
