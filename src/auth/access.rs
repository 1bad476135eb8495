//! Whether a request a proxy holds may pass on: a valid token of ours that
//! carries every role the route requires.

use std::sync::Arc;

use super::{AuthError, Authenticator, Claims, InvalidToken, Validity};
use crate::domain::{AccessToken, Role};

/// The answer of [`Authenticator::authorize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Valid, and holding every required role.
    Granted(Arc<Claims>),
    /// The request carried no bearer token.
    NoToken,
    /// The token is not valid, and why.
    Invalid(InvalidToken),
    /// Valid, but lacking a required role.
    MissingRole(Arc<Claims>),
}

impl Authenticator {
    /// Decides on a request that carries `token` for a route that requires
    /// every role in `required`; answers from memory, as
    /// [`Authenticator::validate`] does.
    ///
    /// # Errors
    /// [`AuthError::RevocationsStale`] when whether the token is revoked
    /// cannot be known: never a grant then.
    pub fn authorize(
        &self,
        token: Option<&AccessToken>,
        required: &[Role],
    ) -> Result<Access, AuthError> {
        let Some(token) = token else {
            return Ok(Access::NoToken);
        };
        Ok(match self.validate(token)? {
            Validity::Invalid(reason) => Access::Invalid(reason),
            Validity::Valid(claims) if holds_all(&claims, required) => Access::Granted(claims),
            Validity::Valid(claims) => Access::MissingRole(claims),
        })
    }
}

fn holds_all(claims: &Claims, required: &[Role]) -> bool {
    required
        .iter()
        .all(|role| claims.roles.iter().any(|held| held == role.as_str()))
}
