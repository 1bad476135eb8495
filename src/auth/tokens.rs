//! Access tokens: EdDSA-signed JWTs with `typ: at+jwt`, issued here and
//! verified with the key ring by authd-token's rules, the ones the Rust
//! client validates with too.

use std::{sync::Arc, time::Duration};

pub use authd_token::{Claims, InvalidToken};
use authd_token::{TOKEN_TYPE, TokenRules};
use jsonwebtoken::{Algorithm, Header};
use uuid::Uuid;

use super::keys::{KeyRing, NoSigner, PublicJwk};
use crate::domain::{Role, SessionId, UserId};

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
    rules: TokenRules,
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

        let rules = TokenRules::new(
            &settings.issuer,
            &settings.audience,
            settings.leeway.as_secs(),
        );
        Self {
            keys,
            header,
            rules,
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
        let kid = TokenRules::key_id(token)?;
        // An unknown `kid` (never ours, revoked, or long retired) is refused
        // before any signature work.
        self.keys
            .with_verifier(&kid, now_seconds(), |key| {
                self.rules
                    .verify(token, key.decoding(), check_expiry, authd_token::now())
            })
            .ok_or(InvalidToken::BadSignature)?
    }
}

fn now_seconds() -> i64 {
    i64::try_from(authd_token::now()).unwrap_or(i64::MAX)
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
