use std::fmt;

use uuid::Uuid;

/// A user's stable id, the `sub` claim of the user's tokens.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct UserId(Uuid);

impl UserId {
    /// A new id for a new user: a UUIDv7, so ids sort by creation time.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
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
