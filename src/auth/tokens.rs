//! Access tokens: EdDSA-signed JWTs with `typ: at+jwt`, issued and
//! verified here and nowhere else.

use std::{sync::Arc, time::Duration};

use jsonwebtoken::{Algorithm, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::keys::{KeyRing, NoSigner, PublicJwk};
use crate::domain::{Role, SessionId, UserId};

/// The `typ` header of our tokens (RFC 9068).
const TOKEN_TYPE: &str = "at+jwt";

/// What goes into tokens and how strictly they are checked.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// The `iss` claim written and required.
    pub issuer: String,
    /// The `aud` claim written and required.
    pub audience: String,
    /// How long a token lives.
    pub ttl: Duration,
    /// How much clock skew `exp` and `iat` checks forgive.
    pub leeway: Duration,
}

impl TokenSettings {
    /// The most leeway any instance may forgive. Records of revocations are
    /// kept this long past their tokens' expiry, so that no instance, of
    /// whatever leeway, can outlive another's record of a revocation.
    pub const MAX_LEEWAY: Duration = Duration::from_secs(5 * 60);
}

impl Default for TokenSettings {
    /// authd's defaults: issuer and audience `authd`, tokens of 15 minutes,
    /// 5 s of leeway.
    fn default() -> Self {
        Self {
            issuer: "authd".to_owned(),
            audience: "authd".to_owned(),
            ttl: Duration::from_secs(15 * 60),
            leeway: Duration::from_secs(5),
        }
    }
}

/// The claims of an access token. Every field is required and strictly
/// typed: a token that does not decode into this is malformed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience (a single string, as we issue it).
    pub aud: String,
    /// The user's id.
    pub sub: Uuid,
    /// The token's unique id, the key of its revocation.
    pub jti: Uuid,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
    /// The user's name when the token was issued.
    pub username: String,
    /// The user's roles when the token was issued.
    pub roles: Vec<String>,
    /// The session that issued the token; absent from tokens issued
    /// before sessions existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<Uuid>,
}

/// Why a token is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidToken {
    /// Not a JWT of ours: encoding, header, claim types or missing claims.
    #[error("malformed")]
    Malformed,
    /// Signature, key id, issuer or audience not ours.
    #[error("bad signature")]
    BadSignature,
    /// `exp` has passed.
    #[error("expired")]
    Expired,
    /// `iat` or `nbf` lies in the future.
    #[error("not yet valid")]
    NotYetValid,
    /// Logged out, or revoked with its user.
    #[error("revoked")]
    Revoked,
}

/// A token fresh from [`AccessTokens::issue`].
#[derive(Debug)]
pub struct IssuedToken {
    /// The encoded JWT.
    pub token: secrecy::SecretString,
    /// Its claims.
    pub claims: Claims,
}

/// A token could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// No key can sign now.
    #[error(transparent)]
    NoSigner(#[from] NoSigner),
    /// Signing failed, which only a broken key can cause.
    #[error("cannot sign the token")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Issues and verifies access tokens with the keys of a [`KeyRing`].
#[derive(Debug)]
pub struct AccessTokens {
    keys: Arc<KeyRing>,
    header: Header,
    validation: Validation,
    /// The same checks but the expiry's.
    validation_ignoring_expiry: Validation,
    settings: TokenSettings,
}

impl AccessTokens {
    /// The keys that verify the tokens issued here, as published now.
    pub fn published_keys(&self) -> Vec<PublicJwk> {
        self.keys.published(now_seconds())
    }

    /// The key set's generation (see [`KeyRing::generation`]).
    pub fn key_generation(&self) -> u64 {
        self.keys.generation()
    }

    /// Tokens signed with the active key of `keys` under `settings`.
    pub fn new(keys: Arc<KeyRing>, settings: TokenSettings) -> Self {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(TOKEN_TYPE.to_owned());

        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = settings.leeway.as_secs();
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        let mut validation_ignoring_expiry = validation.clone();
        validation_ignoring_expiry.validate_exp = false;

        Self {
            keys,
            header,
            validation,
            validation_ignoring_expiry,
            settings,
        }
    }

    /// The settings tokens are issued and checked under.
    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// Signs a new token for `user` in `session`, issued at `issued_at`
    /// (seconds since the epoch).
    ///
    /// # Errors
    /// When no key can sign now, or signing fails.
    pub fn issue(
        &self,
        user: UserId,
        session: SessionId,
        username: &str,
        roles: &[Role],
        issued_at: u64,
    ) -> Result<IssuedToken, IssueError> {
        let key = self.keys.signer(now_seconds())?;
        let mut header = self.header.clone();
        header.kid = Some(key.kid().to_owned());
        let claims = Claims {
            iss: self.settings.issuer.clone(),
            aud: self.settings.audience.clone(),
            sub: user.as_uuid(),
            jti: Uuid::new_v4(),
            iat: issued_at,
            exp: issued_at + self.settings.ttl.as_secs(),
            username: username.to_owned(),
            roles: roles.iter().map(|role| role.as_str().to_owned()).collect(),
            sid: Some(session.as_uuid()),
        };
        let token = jsonwebtoken::encode(&header, &claims, key.encoding())?;
        Ok(IssuedToken {
            token: token.into(),
            claims,
        })
    }

    /// Checks the token's header, signature and claims, and its `exp`,
    /// `nbf` and `iat` against the clock with the leeway. Revocation is not
    /// checked here.
    ///
    /// # Errors
    /// The reason the token is not valid.
    pub fn verify(&self, token: &str) -> Result<Claims, InvalidToken> {
        self.verify_with(token, true)
    }

    /// The claims of a token of ours, whether it has expired or not: for a
    /// Logout, which may end the session of an expired token.
    ///
    /// # Errors
    /// The reason the token is not valid, other than its expiry.
    pub fn verify_ignoring_expiry(&self, token: &str) -> Result<Claims, InvalidToken> {
        self.verify_with(token, false)
    }

    fn verify_with(&self, token: &str, check_expiry: bool) -> Result<Claims, InvalidToken> {
        let validation = if check_expiry {
            &self.validation
        } else {
            &self.validation_ignoring_expiry
        };
        let header = jsonwebtoken::decode_header(token).map_err(|_| InvalidToken::Malformed)?;
        if !header.typ.as_deref().is_some_and(|typ| {
            typ.eq_ignore_ascii_case(TOKEN_TYPE) || typ.eq_ignore_ascii_case("application/at+jwt")
        }) {
            return Err(InvalidToken::Malformed);
        }
        // We never send keys or key locations in a header; a token that
        // does is not one of ours, whatever else it says.
        if header.jwk.is_some()
            || header.jku.is_some()
            || header.x5u.is_some()
            || header.x5c.is_some()
            || header.crit.is_some()
        {
            return Err(InvalidToken::Malformed);
        }
        let Some(kid) = header.kid.as_deref() else {
            return Err(InvalidToken::Malformed);
        };
        let now = jsonwebtoken::get_current_timestamp();
        // An unknown `kid` (never ours, revoked, or long retired) is refused
        // before any signature work.
        let claims = self
            .keys
            .with_verifier(kid, now_seconds(), |key| {
                jsonwebtoken::decode::<Claims>(token, key.decoding(), validation)
            })
            .ok_or(InvalidToken::BadSignature)?
            .map_err(|err| classify(err.kind()))?
            .claims;
        let leeway = self.settings.leeway.as_secs();
        // The library lets a token live through the whole second
        // `exp + leeway`; a revocation row lives until the instant
        // `exp + leeway` and may be purged right after it. The strict check
        // makes the two windows the same, so a purge never revives a token.
        if check_expiry && now >= claims.exp.saturating_add(leeway) {
            return Err(InvalidToken::Expired);
        }
        if claims.iat > now.saturating_add(leeway) {
            return Err(InvalidToken::NotYetValid);
        }
        Ok(claims)
    }
}

fn now_seconds() -> i64 {
    i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap_or(i64::MAX)
}

fn classify(kind: &ErrorKind) -> InvalidToken {
    match kind {
        ErrorKind::InvalidSignature | ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
            InvalidToken::BadSignature
        }
        ErrorKind::ExpiredSignature => InvalidToken::Expired,
        ErrorKind::ImmatureSignature => InvalidToken::NotYetValid,
        _ => InvalidToken::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> AccessTokens {
        let key = crate::auth::SigningKey::generate().unwrap();
        AccessTokens::new(
            Arc::new(KeyRing::single(key, Duration::from_secs(65))),
            TokenSettings {
                ttl: Duration::from_secs(60),
                ..TokenSettings::default()
            },
        )
    }

    fn issue_expiring_at(tokens: &AccessTokens, exp: u64) -> String {
        let iat = exp - 60;
        let issued = tokens
            .issue(UserId::generate(), SessionId::generate(), "alice", &[], iat)
            .unwrap();
        secrecy::ExposeSecret::expose_secret(&issued.token).to_owned()
    }

    #[test]
    fn a_token_stops_validating_at_exp_plus_leeway_exactly() {
        let tokens = tokens();
        let now = jsonwebtoken::get_current_timestamp();

        // exp + leeway == now: its revocation row may already be purged.
        let at_boundary = issue_expiring_at(&tokens, now - 5);
        let inside = issue_expiring_at(&tokens, now - 3);

        assert_eq!(tokens.verify(&at_boundary), Err(InvalidToken::Expired));
        assert!(tokens.verify(&inside).is_ok());
    }

    #[test]
    fn issued_tokens_round_trip() {
        let tokens = tokens();
        let user = UserId::generate();
        let issued = tokens
            .issue(
                user,
                SessionId::generate(),
                "alice",
                &[Role::parse("admin").unwrap()],
                jsonwebtoken::get_current_timestamp(),
            )
            .unwrap();
        let claims = tokens
            .verify(secrecy::ExposeSecret::expose_secret(&issued.token))
            .unwrap();
        assert_eq!(claims, issued.claims);
        assert_eq!(claims.sub, user.as_uuid());
        assert_eq!(claims.exp - claims.iat, 60);
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;
    use crate::auth::SigningKey;

    #[test]
    fn a_token_of_an_unknown_key_is_a_bad_signature() {
        let ours = AccessTokens::new(
            Arc::new(KeyRing::single(
                SigningKey::generate().unwrap(),
                Duration::from_secs(60),
            )),
            TokenSettings::default(),
        );
        let theirs = AccessTokens::new(
            Arc::new(KeyRing::single(
                SigningKey::generate().unwrap(),
                Duration::from_secs(60),
            )),
            TokenSettings::default(),
        );
        let issued = theirs
            .issue(
                UserId::generate(),
                SessionId::generate(),
                "alice",
                &[],
                jsonwebtoken::get_current_timestamp(),
            )
            .unwrap();
        let token = secrecy::ExposeSecret::expose_secret(&issued.token);
        assert_eq!(ours.verify(token), Err(InvalidToken::BadSignature));
        assert!(theirs.verify(token).is_ok());
    }
}
