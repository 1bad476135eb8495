use std::fmt;

use unicode_normalization::UnicodeNormalization as _;

use super::InvalidInput;

/// A user's name: 1 to 256 bytes of UTF-8 without control characters.
///
/// Names are matched by [`Username::key`]: whatever the letter case and
/// whether accents are composed or not. This type keeps the spelling it was
/// given, for display.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    /// The longest name accepted, in bytes.
    pub const MAX_BYTES: usize = 256;

    /// Checks a name given by a client or an operator.
    ///
    /// # Errors
    /// [`InvalidInput`] when the name is empty, longer than
    /// [`Self::MAX_BYTES`] or contains a control character.
    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidInput> {
        let raw = raw.into();
        if raw.is_empty() {
            return Err(InvalidInput::new("username", "must not be empty"));
        }
        if raw.len() > Self::MAX_BYTES {
            return Err(InvalidInput::new(
                "username",
                format!("must be at most {} bytes", Self::MAX_BYTES),
            ));
        }
        if raw.chars().any(char::is_control) {
            return Err(InvalidInput::new(
                "username",
                "must not contain control characters",
            ));
        }
        Ok(Self(raw))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form names are matched and kept unique by: lower case, then
    /// Unicode NFC. Computed here rather than by the database so that every
    /// backend and locale agrees (`Élodie`, `ÉLODIE` and `e` + U+0301 +
    /// `lodie` are one name).
    pub fn key(&self) -> String {
        self.0.to_lowercase().nfc().collect()
    }
}

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_up_to_the_limit() {
        assert!(Username::parse("alice").is_ok());
        assert!(Username::parse("é".repeat(128)).is_ok());
        assert!(Username::parse("a".repeat(Username::MAX_BYTES)).is_ok());
    }

    #[test]
    fn the_key_ignores_case_and_composition() {
        let key = |raw: &str| Username::parse(raw).unwrap().key();
        assert_eq!(key("Alice"), "alice");
        assert_eq!(key("ÉLODIE"), key("élodie"));
        assert_eq!(key("E\u{301}lodie"), key("élodie"));
        assert_eq!(key("élodie"), "\u{e9}lodie");
        assert_ne!(key("alice"), key("alicé"));
    }

    #[test]
    fn refuses_empty_long_and_control_characters() {
        assert_eq!(Username::parse("").unwrap_err().field, "username");
        assert!(Username::parse("a".repeat(Username::MAX_BYTES + 1)).is_err());
        assert!(Username::parse("é".repeat(129)).is_err());
        assert!(Username::parse("al\nice").is_err());
        assert!(Username::parse("al\0ice").is_err());
    }
}
