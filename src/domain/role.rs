use std::fmt;

use super::InvalidInput;

/// A role name carried in tokens: 1 to 64 printable characters, no spaces.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Role(String);

impl Role {
    /// The longest role name accepted, in bytes.
    pub const MAX_BYTES: usize = 64;

    /// Checks a role name given by an operator.
    ///
    /// # Errors
    /// [`InvalidInput`] when it is empty, too long, or has whitespace or
    /// control characters.
    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidInput> {
        let raw = raw.into();
        if raw.is_empty() || raw.len() > Self::MAX_BYTES {
            return Err(InvalidInput::new(
                "role",
                format!("must be 1 to {} bytes", Self::MAX_BYTES),
            ));
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(InvalidInput::new(
                "role",
                "must not contain whitespace or control characters",
            ));
        }
        Ok(Self(raw))
    }

    /// The role's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Role {
    type Err = InvalidInput;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}
