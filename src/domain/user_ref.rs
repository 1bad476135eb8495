use std::fmt;

use super::{UserId, Username};

/// Which user an operation is about: by id, or by name in any letter case
/// (as [`Username::key`] matches names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    /// The user of this id.
    Id(UserId),
    /// The user of this name.
    Name(Username),
}

impl From<UserId> for UserRef {
    fn from(id: UserId) -> Self {
        Self::Id(id)
    }
}

impl From<Username> for UserRef {
    fn from(name: Username) -> Self {
        Self::Name(name)
    }
}

/// `named "alice"` or `with id …`: for messages and logs.
impl fmt::Display for UserRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => write!(f, "with id {id}"),
            Self::Name(name) => write!(f, "named {name:?}"),
        }
    }
}
