use std::fmt;

use uuid::Uuid;

use super::InvalidInput;

/// A user's stable id, the `sub` claim of the user's tokens.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct UserId(Uuid);

impl UserId {
    /// A new id for a new user: a UUIDv7, so ids sort by creation time.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses the id a client sent.
    ///
    /// # Errors
    /// [`InvalidInput`] when it is not a UUID.
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        Uuid::try_parse(raw)
            .map(Self)
            .map_err(|_| InvalidInput::new("user_id", "must be a UUID"))
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for UserId {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
