//! Errors to gRPC statuses. Internal causes are logged here, once, with
//! their chain; the client sees a stable code and a generic message.

use tonic::{Code, Status};

use crate::{auth::AuthError, domain::InvalidInput};

impl From<InvalidInput> for Status {
    fn from(err: InvalidInput) -> Self {
        Status::invalid_argument(err.to_string())
    }
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::InvalidCredentials => {
                Status::unauthenticated("invalid username or password")
            }
            AuthError::InvalidToken(reason) => {
                Status::unauthenticated(format!("the access token is {reason}"))
            }
            AuthError::Unavailable(cause) => {
                tracing::warn!(error = %chain(&cause), "database unavailable");
                Status::unavailable("the service cannot reach its database; retry later")
            }
            AuthError::Overloaded => {
                Status::resource_exhausted("too many logins in progress; retry shortly")
            }
            AuthError::RevocationsStale => {
                tracing::warn!("the revocation state is out of date; refusing to vouch for tokens");
                Status::unavailable(
                    "the service cannot confirm the token's revocation state; retry later",
                )
            }
            AuthError::Internal(cause) => {
                tracing::error!(error = %chain(cause.as_ref()), "internal error");
                Status::new(Code::Internal, "internal error")
            }
        }
    }
}

/// `outer: inner: innermost`, for one log field.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
