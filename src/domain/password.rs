use secrecy::{ExposeSecret, SecretString};
use unicode_normalization::UnicodeNormalization as _;

use super::InvalidInput;

/// A password as typed by a user: 1 to 1024 bytes of UTF-8, kept in Unicode
/// normalization form C, so `é` typed as one code point or as `e` plus a
/// combining accent is the same password. Never truncated.
///
/// It lives in a [`SecretString`], so it is wiped from memory when dropped
/// and its `Debug` output is redacted.
#[derive(Clone, Debug)]
pub struct Password(SecretString);

impl Password {
    /// The longest password accepted, in bytes. Argon2 takes any length;
    /// the bound keeps a request from making the server hash megabytes.
    pub const MAX_BYTES: usize = 1024;

    /// Checks a password given by a client or an operator.
    ///
    /// # Errors
    /// [`InvalidInput`] when it is empty or longer than [`Self::MAX_BYTES`].
    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidInput> {
        let raw = SecretString::from(raw.into());
        let len = raw.expose_secret().len();
        if len == 0 {
            return Err(InvalidInput::new("password", "must not be empty"));
        }
        if len > Self::MAX_BYTES {
            return Err(InvalidInput::new(
                "password",
                format!("must be at most {} bytes", Self::MAX_BYTES),
            ));
        }
        Ok(Self(raw.expose_secret().nfc().collect::<String>().into()))
    }

    /// Its length in characters (Unicode scalar values), for policy checks.
    pub fn chars(&self) -> usize {
        self.0.expose_secret().chars().count()
    }

    /// The password's bytes, for the hasher alone.
    pub(crate) fn expose(&self) -> &[u8] {
        self.0.expose_secret().as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_is_redacted() {
        let password = Password::parse("hunter2-secret").unwrap();
        assert!(!format!("{password:?}").contains("hunter2"));
    }

    #[test]
    fn composed_and_decomposed_forms_are_one_password() {
        let composed = Password::parse("caf\u{e9}").unwrap();
        let decomposed = Password::parse("cafe\u{301}").unwrap();
        assert_eq!(composed.expose(), decomposed.expose());
        assert_eq!(decomposed.chars(), 4);
    }

    #[test]
    fn refuses_empty_and_overlong() {
        assert!(Password::parse("").is_err());
        assert!(Password::parse("x".repeat(Password::MAX_BYTES)).is_ok());
        assert_eq!(
            Password::parse("x".repeat(Password::MAX_BYTES + 1))
                .unwrap_err()
                .field,
            "password"
        );
    }
}
