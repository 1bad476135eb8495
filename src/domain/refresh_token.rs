use secrecy::{ExposeSecret, SecretString};

use super::InvalidInput;

/// The text of a refresh token as a client sent it: not empty and at most
/// 1 KiB. Nothing is known yet about its contents.
#[derive(Clone, Debug)]
pub struct RefreshToken(SecretString);

impl RefreshToken {
    /// The longest refresh token accepted, in bytes; ours are under 100.
    pub const MAX_BYTES: usize = 1024;

    /// Checks the size of a refresh token before anything parses it.
    ///
    /// # Errors
    /// [`InvalidInput`] when it is empty or longer than [`Self::MAX_BYTES`].
    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidInput> {
        super::bounded_secret("refresh_token", raw.into(), Self::MAX_BYTES).map(Self)
    }

    /// The token's text, for the verifier alone.
    pub(crate) fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_redaction() {
        assert!(RefreshToken::parse("").is_err());
        assert!(RefreshToken::parse("a".repeat(RefreshToken::MAX_BYTES)).is_ok());
        assert!(RefreshToken::parse("a".repeat(RefreshToken::MAX_BYTES + 1)).is_err());
        let token = RefreshToken::parse("authd_rt_secretpart").unwrap();
        assert!(!format!("{token:?}").contains("secretpart"));
    }
}
