//! Values parsed at the edge. A function that holds a [`Username`] or a
//! [`Password`] holds a valid one: the checks live here and nowhere else.

mod access_token;
mod password;
mod role;
mod user_id;
mod username;

pub use access_token::AccessToken;
pub use password::Password;
pub use role::Role;
pub use user_id::UserId;
pub use username::Username;

/// Why a value given by a client or an operator was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {problem}")]
pub struct InvalidInput {
    /// The name of the field, as the client knows it (`username`, `password`, …).
    pub field: &'static str,
    /// What is wrong with it, in words fit for the client.
    pub problem: String,
}

impl InvalidInput {
    pub(crate) fn new(field: &'static str, problem: impl Into<String>) -> Self {
        Self {
            field,
            problem: problem.into(),
        }
    }
}
