//! Values parsed at the edge. A function that holds a [`Username`] or a
//! [`Password`] holds a valid one: the checks live here and nowhere else.

mod access_token;
mod password;
mod refresh_token;
mod role;
mod session_id;
mod user_id;
mod user_ref;
mod username;

pub use access_token::AccessToken;
pub use password::Password;
pub use refresh_token::RefreshToken;
pub use role::Role;
pub use session_id::SessionId;
pub use user_id::UserId;
pub use user_ref::UserRef;
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

/// A secret a client sent as `field`, checked to be neither empty nor
/// longer than `max_bytes` before anything parses it.
fn bounded_secret(
    field: &'static str,
    raw: String,
    max_bytes: usize,
) -> Result<secrecy::SecretString, InvalidInput> {
    if raw.is_empty() {
        return Err(InvalidInput::new(field, "must not be empty"));
    }
    if raw.len() > max_bytes {
        return Err(InvalidInput::new(
            field,
            format!("must be at most {max_bytes} bytes"),
        ));
    }
    Ok(secrecy::SecretString::from(raw))
}
