//! Sessions: what a Login starts and its refresh token keeps alive.
//! Refresh rotates the token by one conditional write per session, and
//! treats a spent token that comes back as a copy: the session ends.

mod refresh_token;
mod rotation;

use std::net::IpAddr;

use time::OffsetDateTime;

pub use refresh_token::RefreshTokenKey;
pub use rotation::SessionSettings;
pub(crate) use rotation::{Decision, plan_refresh};

use super::{AuthError, Authenticator, Grant, Validity, unix_time};
use crate::{
    domain::{AccessToken, RefreshToken, SessionId, UserId},
    store::{Revocation, SessionRecord, SessionSelection, Storage as _},
};

/// The longest `user-agent` a session keeps, in bytes.
const MAX_USER_AGENT_BYTES: usize = 256;

/// Refresh tokens: the key that makes them and the lifetimes of the
/// sessions they keep alive.
#[derive(Debug, Clone)]
pub struct RefreshTokens {
    key: RefreshTokenKey,
    settings: SessionSettings,
}

impl RefreshTokens {
    /// Refresh tokens made with `key`, for sessions living by `settings`.
    pub fn new(key: RefreshTokenKey, settings: SessionSettings) -> Self {
        Self { key, settings }
    }

    /// The lifetimes sessions live by.
    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }
}

/// Who is logging in, as the transport saw it: kept with the session.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// The client's address (also what failed Logins are counted by): the
    /// peer's, or the one a trusted proxy forwarded.
    pub address: Option<IpAddr>,
    /// The `user-agent` the client sent.
    pub user_agent: Option<String>,
}

/// One of the caller's sessions, for ListSessions.
#[derive(Debug, Clone)]
pub struct UserSession {
    /// The session as stored.
    pub session: SessionRecord,
    /// Whether the calling token belongs to it.
    pub current: bool,
}

impl Authenticator {
    /// A new session of `user` at `now`, whose first access token's `exp`
    /// plus leeway is `access_expires_at`.
    pub(super) fn new_session(
        &self,
        user: UserId,
        now: OffsetDateTime,
        access_expires_at: OffsetDateTime,
        client: &ClientInfo,
    ) -> SessionRecord {
        let settings = self.refresh_tokens.settings();
        let max_expires_at = settings.max_expiry(now);
        SessionRecord {
            id: SessionId::generate(),
            user_id: user,
            created_at: now,
            last_refreshed_at: now,
            expires_at: settings.expiry(now, max_expires_at),
            max_expires_at,
            revoked_at: None,
            client_address: client.address.map(|address| address.to_string()),
            user_agent: client.user_agent.as_deref().map(cut_user_agent),
            generation: 1,
            access_expires_at,
        }
    }

    /// The refresh token of `session` as it now stands.
    pub(super) fn refresh_token_of(&self, session: &SessionRecord) -> secrecy::SecretString {
        self.refresh_tokens.key.mint(session.id, session.generation)
    }

    /// Exchanges a refresh token for a new access token and refresh token.
    ///
    /// # Errors
    /// [`AuthError::InvalidRefreshToken`] for a token that is not ours or
    /// whose session has ended; [`AuthError::RefreshTokenReused`] for a
    /// spent one (the session is then ended);
    /// [`AuthError::Unavailable`] when the database cannot be reached.
    pub async fn refresh(&self, token: &RefreshToken) -> Result<Grant, AuthError> {
        let outcome = self.rotate(token).await;
        self.meter.refreshed(&outcome);
        outcome
    }

    async fn rotate(&self, token: &RefreshToken) -> Result<Grant, AuthError> {
        // A token we did not make costs no database read.
        let (id, presented) = self
            .refresh_tokens
            .key
            .open(token)
            .ok_or(AuthError::InvalidRefreshToken)?;
        let now = OffsetDateTime::now_utc();
        let issued_at = jsonwebtoken::get_current_timestamp();
        let access_expires_at = self.access_expires_at(issued_at)?;
        let settings = self.refresh_tokens.settings().clone();
        let decision = self
            .store
            .update_session(id, move |found| {
                plan_refresh(found, presented, now, &settings, access_expires_at)
            })
            .await?;
        match decision {
            Decision::Granted {
                session,
                user,
                replayed,
            } => {
                let grant = self.grant(&user, &session, issued_at)?;
                tracing::info!(user_id = %user.id, session_id = %session.id,
                    generation = session.generation, replayed, "refreshed a session");
                Ok(grant)
            }
            Decision::ReuseDetected(session) => {
                self.revocations.apply(ended(&session));
                tracing::warn!(user_id = %session.user_id, session_id = %session.id,
                    presented, newest = session.generation,
                    "a spent refresh token was used again: ended the session");
                Err(AuthError::RefreshTokenReused)
            }
            Decision::Refused => Err(AuthError::InvalidRefreshToken),
        }
    }

    /// The live sessions of the user of `token`, newest first.
    ///
    /// # Errors
    /// [`AuthError::InvalidToken`] when the token is not valid;
    /// [`AuthError::RevocationsStale`] when that cannot be known;
    /// [`AuthError::Unavailable`] when the database cannot be reached.
    pub async fn list_sessions(&self, token: &AccessToken) -> Result<Vec<UserSession>, AuthError> {
        let claims = self.caller(token)?;
        let sessions = self
            .store
            .list_sessions(UserId::from(claims.sub), OffsetDateTime::now_utc())
            .await?;
        Ok(sessions
            .into_iter()
            .map(|session| UserSession {
                current: Some(session.id.as_uuid()) == claims.sid,
                session,
            })
            .collect())
    }

    /// Ends session `id` of the user of `token`; ending one that has ended
    /// already is no error.
    ///
    /// # Errors
    /// [`AuthError::SessionNotFound`] when the user has no session `id`;
    /// otherwise as [`Authenticator::list_sessions`].
    pub async fn revoke_session(
        &self,
        token: &AccessToken,
        id: SessionId,
    ) -> Result<(), AuthError> {
        let claims = self.caller(token)?;
        let user = UserId::from(claims.sub);
        let ended = self
            .store
            .end_sessions(user, SessionSelection::One(id), OffsetDateTime::now_utc())
            .await?;
        if ended.is_empty() {
            return Err(AuthError::SessionNotFound);
        }
        self.apply_all(ended);
        tracing::info!(user_id = %user, session_id = %id, "ended a session");
        Ok(())
    }

    /// The claims of `token`, when it is valid.
    fn caller(&self, token: &AccessToken) -> Result<super::Claims, AuthError> {
        match self.validate(token)? {
            Validity::Valid(claims) => Ok(super::Claims::clone(&claims)),
            Validity::Invalid(reason) => Err(AuthError::InvalidToken(reason)),
        }
    }

    /// Applies what the store committed, so this instance answers by it at
    /// once.
    pub(super) fn apply_all(&self, revocations: Vec<Revocation>) {
        for revocation in revocations {
            self.revocations.apply(revocation);
        }
    }

    /// The instant a token issued at `issued_at` stops validating: its
    /// `exp` plus the leeway.
    pub(super) fn access_expires_at(&self, issued_at: u64) -> Result<OffsetDateTime, AuthError> {
        let settings = self.tokens.settings();
        let seconds = issued_at
            .saturating_add(settings.ttl.as_secs())
            .saturating_add(settings.leeway.as_secs());
        unix_time(seconds)
            .ok_or_else(|| AuthError::Internal(anyhow::anyhow!("the clock is out of range")))
    }
}

/// The revocation an ended session makes.
fn ended(session: &SessionRecord) -> Revocation {
    Revocation::Session {
        id: session.id,
        expires_at: crate::store::unix_seconds_up(session.access_expires_at),
    }
}

/// `user_agent`, cut at [`MAX_USER_AGENT_BYTES`] on a character boundary.
fn cut_user_agent(user_agent: &str) -> String {
    let mut end = user_agent.len().min(MAX_USER_AGENT_BYTES);
    while !user_agent.is_char_boundary(end) {
        end -= 1;
    }
    user_agent[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_agent_is_cut_on_a_character_boundary() {
        assert_eq!(cut_user_agent("grpc-python/1.66"), "grpc-python/1.66");
        let long = "é".repeat(200);
        let cut = cut_user_agent(&long);
        assert_eq!(cut.len(), 256);
        let odd = format!("a{long}");
        assert_eq!(cut_user_agent(&odd).len(), 255);
    }
}
