//! authd's access tokens as a verifier sees them: the [`Claims`], the
//! [`TokenRules`] a token must pass and the [`InvalidToken`] reason when it
//! does not, and a cache of tokens already verified. The service and the
//! client crate both verify through this crate, so a token gets the same
//! answer in-process as from ValidateToken.

mod cache;

pub use cache::VerifiedTokens;
pub use jsonwebtoken::DecodingKey;
use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The `typ` header of our tokens (RFC 9068).
pub const TOKEN_TYPE: &str = "at+jwt";

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

impl Claims {
    /// Whether the token carries `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|held| held == role)
    }
}

/// Why a token is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
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
    /// Logged out, its session ended, or revoked with its user.
    #[error("revoked")]
    Revoked,
}

/// What a token must be to verify: EdDSA, `typ: at+jwt`, a `kid`, no keys
/// or key locations in its header, our issuer and audience, and current
/// within the leeway.
#[derive(Debug, Clone)]
pub struct TokenRules {
    validation: Validation,
    /// The same checks but the expiry's.
    validation_ignoring_expiry: Validation,
    leeway: u64,
}

impl TokenRules {
    /// The rules for tokens of `issuer` for `audience`, forgiving `leeway`
    /// seconds of clock skew.
    pub fn new(issuer: &str, audience: &str, leeway: u64) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = leeway;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        let mut validation_ignoring_expiry = validation.clone();
        validation_ignoring_expiry.validate_exp = false;
        Self {
            validation,
            validation_ignoring_expiry,
            leeway,
        }
    }

    /// The `kid` of a token whose header passes the rules: the key to
    /// verify it with, looked up before any signature work.
    ///
    /// # Errors
    /// [`InvalidToken::Malformed`] for a header that is not one of ours.
    pub fn key_id(token: &str) -> Result<String, InvalidToken> {
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
        header.kid.ok_or(InvalidToken::Malformed)
    }

    /// Checks the token's signature with `key` (the key of its `kid`), its
    /// claims, and its `exp` (when `check_expiry`), `nbf` and `iat` against
    /// `now` (Unix seconds) with the leeway. Revocation is not checked here.
    ///
    /// # Errors
    /// The reason the token is not valid.
    pub fn verify(
        &self,
        token: &str,
        key: &DecodingKey,
        check_expiry: bool,
        now: u64,
    ) -> Result<Claims, InvalidToken> {
        let validation = if check_expiry {
            &self.validation
        } else {
            &self.validation_ignoring_expiry
        };
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|err| classify(err.kind()))?
            .claims;
        // The library lets a token live through the whole second
        // `exp + leeway`; a revocation row lives until the instant
        // `exp + leeway` and may be purged right after it. The strict check
        // makes the two windows the same, so a purge never revives a token.
        if check_expiry && now >= claims.exp.saturating_add(self.leeway) {
            return Err(InvalidToken::Expired);
        }
        if claims.iat > now.saturating_add(self.leeway) {
            return Err(InvalidToken::NotYetValid);
        }
        Ok(claims)
    }
}

/// Whether a token issued at `iat` falls before a user's cut-off (Unix
/// seconds): tokens issued in an earlier second are revoked.
pub fn issued_before(iat: u64, cutoff: i64) -> bool {
    i64::try_from(iat).map_or(true, |iat| iat < cutoff)
}

/// Seconds since the Unix epoch, now.
pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
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

    #[test]
    fn a_header_without_our_type_or_with_a_key_is_malformed() {
        use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
        let b64 = |text: &str| URL_SAFE_NO_PAD.encode(text);
        let token = |header: &str| format!("{}.e30.c2ln", b64(header));
        assert_eq!(
            TokenRules::key_id(&token(r#"{"alg":"EdDSA","typ":"at+jwt","kid":"k"}"#)),
            Ok("k".to_owned())
        );
        for header in [
            r#"{"alg":"EdDSA","kid":"k"}"#,
            r#"{"alg":"EdDSA","typ":"JWT","kid":"k"}"#,
            r#"{"alg":"EdDSA","typ":"at+jwt"}"#,
            r#"{"alg":"EdDSA","typ":"at+jwt","kid":"k","jku":"https://x"}"#,
        ] {
            assert_eq!(
                TokenRules::key_id(&token(header)),
                Err(InvalidToken::Malformed),
                "{header}"
            );
        }
    }

    #[test]
    fn a_cut_off_revokes_tokens_of_earlier_seconds_only() {
        assert!(issued_before(49, 50));
        assert!(!issued_before(50, 50));
        assert!(issued_before(u64::MAX, i64::MAX));
    }
}
