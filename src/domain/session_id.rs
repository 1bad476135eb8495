use std::fmt;

use uuid::Uuid;

use super::InvalidInput;

/// A session's id, the `sid` claim of the access tokens it issues.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SessionId(Uuid);

impl SessionId {
    /// A new id for a new session: random (a UUIDv4), so that one session's
    /// id says nothing of another's.
    pub fn generate() -> Self {
        Self(Uuid::new_v4())
    }

    /// Parses the id a client sent.
    ///
    /// # Errors
    /// [`InvalidInput`] when it is not a UUID.
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        Uuid::try_parse(raw)
            .map(Self)
            .map_err(|_| InvalidInput::new("session_id", "must be a UUID"))
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for SessionId {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_uuids_parse() {
        let id = SessionId::generate();
        assert_eq!(SessionId::parse(&id.to_string()), Ok(id));
        for bad in ["", "x", "0000", &format!("{id}0")] {
            assert_eq!(
                SessionId::parse(bad).map_err(|err| err.field),
                Err("session_id"),
                "{bad}"
            );
        }
    }
}
