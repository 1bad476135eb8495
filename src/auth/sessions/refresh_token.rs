//! Refresh tokens: a session id and a generation, authenticated with a key
//! the database never holds. The newest token of a session can therefore
//! be given again (to a concurrent or retried Refresh) without being
//! stored, and a copy of the `sessions` table refreshes nothing.

use aws_lc_rs::hmac;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use secrecy::SecretString;
use uuid::Uuid;

use crate::domain::{RefreshToken, SessionId};

/// What every refresh token starts with, so that secret scanners (and
/// people) can tell one from other strings.
const PREFIX: &str = "authd_rt_";

/// The format of what follows the prefix, should it ever change.
const VERSION: u8 = 1;

/// Version, session id, generation: what the tag authenticates.
const BODY: usize = 1 + 16 + 8;

/// HMAC-SHA256, in full.
const TAG: usize = 32;

/// The key refresh tokens are made and checked with. Instances sharing a
/// database share it (it is derived from their key-encryption key).
#[derive(Clone)]
pub struct RefreshTokenKey(hmac::Key);

impl std::fmt::Debug for RefreshTokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshTokenKey([REDACTED])")
    }
}

impl RefreshTokenKey {
    pub(crate) fn new(key: hmac::Key) -> Self {
        Self(key)
    }

    /// A random key, for tools and tests that make tokens of their own.
    ///
    /// # Errors
    /// When the system has no randomness to give.
    pub fn generate() -> anyhow::Result<Self> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .map(Self)
            .map_err(|_| anyhow::anyhow!("the system could not generate a key"))
    }

    /// The refresh token of generation `generation` of `session`.
    pub fn mint(&self, session: SessionId, generation: u64) -> SecretString {
        let mut bytes = [0_u8; BODY + TAG];
        bytes[0] = VERSION;
        bytes[1..17].copy_from_slice(session.as_uuid().as_bytes());
        bytes[17..BODY].copy_from_slice(&generation.to_be_bytes());
        let tag = hmac::sign(&self.0, &bytes[..BODY]);
        bytes[BODY..].copy_from_slice(tag.as_ref());
        SecretString::from(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The session and generation of a token made with this key; `None`
    /// for anything else. The tag is compared in constant time.
    pub fn open(&self, token: &RefreshToken) -> Option<(SessionId, u64)> {
        let encoded = token.expose().strip_prefix(PREFIX)?;
        let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
        if bytes.len() != BODY + TAG || bytes[0] != VERSION {
            return None;
        }
        hmac::verify(&self.0, &bytes[..BODY], &bytes[BODY..]).ok()?;
        let session = Uuid::from_slice(&bytes[1..17]).ok()?;
        let generation = u64::from_be_bytes(bytes[17..BODY].try_into().ok()?);
        Some((SessionId::from(session), generation))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    fn parse(text: &str) -> RefreshToken {
        RefreshToken::parse(text).unwrap()
    }

    #[test]
    fn a_token_opens_with_its_key_alone() {
        let key = RefreshTokenKey::generate().unwrap();
        let session = SessionId::generate();
        let token = key.mint(session, 7);
        assert!(token.expose_secret().starts_with(PREFIX));
        assert_eq!(key.mint(session, 7).expose_secret(), token.expose_secret());
        assert_eq!(key.open(&parse(token.expose_secret())), Some((session, 7)));
        let other = RefreshTokenKey::generate().unwrap();
        assert_eq!(other.open(&parse(token.expose_secret())), None);
    }

    #[test]
    fn any_change_to_a_token_makes_it_unknown() {
        let key = RefreshTokenKey::generate().unwrap();
        let token = key.mint(SessionId::generate(), 1);
        let text = token.expose_secret();
        let encoded = text.strip_prefix(PREFIX).unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(encoded).unwrap();
        for index in [0, 1, 17, 24, BODY, BODY + TAG - 1] {
            bytes[index] ^= 1;
            let altered = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&bytes));
            assert_eq!(key.open(&parse(&altered)), None, "byte {index}");
            bytes[index] ^= 1;
        }
        for bad in [
            "x",
            PREFIX,
            &text[PREFIX.len()..],
            &text[..text.len() - 1],
            &format!("{text}A"),
        ] {
            assert_eq!(key.open(&parse(bad)), None, "{bad}");
        }
    }

    #[test]
    fn the_key_is_not_printed() {
        let key = RefreshTokenKey::generate().unwrap();
        assert_eq!(format!("{key:?}"), "RefreshTokenKey([REDACTED])");
    }
}
