use secrecy::{ExposeSecret, SecretString};

use super::InvalidInput;

/// The text of an access token as a client sent it: not empty and at most
/// 8 KiB. Nothing is known yet about its contents.
#[derive(Clone, Debug)]
pub struct AccessToken(SecretString);

impl AccessToken {
    /// The longest token accepted, in bytes; ours are well under 1 KiB.
    pub const MAX_BYTES: usize = 8 * 1024;

    /// Checks the size of a token before anything parses it.
    ///
    /// # Errors
    /// [`InvalidInput`] when it is empty or longer than [`Self::MAX_BYTES`].
    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidInput> {
        super::bounded_secret("access_token", raw.into(), Self::MAX_BYTES).map(Self)
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
        assert!(AccessToken::parse("").is_err());
        assert!(AccessToken::parse("a".repeat(AccessToken::MAX_BYTES)).is_ok());
        assert!(AccessToken::parse("a".repeat(AccessToken::MAX_BYTES + 1)).is_err());
        let token = AccessToken::parse("eyJsecret.part.here").unwrap();
        assert!(!format!("{token:?}").contains("eyJsecret"));
    }
}
