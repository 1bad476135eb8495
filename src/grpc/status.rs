//! Errors to gRPC statuses. Internal causes are logged here, once, with
//! their chain; the client sees a stable code and a generic message.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::{
    auth::{AccountError, AuthError},
    domain::InvalidInput,
};

impl From<InvalidInput> for Status {
    fn from(err: InvalidInput) -> Self {
        bad_request(err.field, &err.to_string())
    }
}

/// INVALID_ARGUMENT with a `google.rpc.BadRequest` naming `field`, for
/// clients that branch on it.
pub(super) fn bad_request(field: &str, message: &str) -> Status {
    Status::with_error_details(
        Code::InvalidArgument,
        message,
        ErrorDetails::with_bad_request_violation(field, message),
    )
}

impl From<AccountError> for Status {
    fn from(err: AccountError) -> Self {
        match err {
            AccountError::NotFound(_) => Status::not_found(err.to_string()),
            AccountError::NameTaken(_) => Status::already_exists(err.to_string()),
            AccountError::PasswordTooShort(_) => bad_request("password", &err.to_string()),
            AccountError::Store(err) => AuthError::from(err).into(),
            AccountError::Hashing(cause) => AuthError::Internal(cause.into()).into(),
        }
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
            // One message whatever the cause: unknown, spent, ended or
            // expired tell a thief nothing.
            AuthError::InvalidRefreshToken => Status::unauthenticated("invalid refresh token"),
            AuthError::SessionNotFound => Status::not_found("no such session"),
            AuthError::Unavailable(cause) => {
                tracing::warn!(error = %chain(&cause), "database unavailable");
                Status::unavailable("the service cannot reach its database; retry later")
            }
            AuthError::Overloaded => retry_later(
                "too many logins in progress; retry shortly",
                Duration::from_secs(1),
            ),
            // One message whatever the cause (the name, the address) and
            // whatever the password: the refusal tells an attacker nothing.
            AuthError::Throttled(wait) => retry_later("too many failed logins; retry later", wait),
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

/// RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo` saying when to retry
/// (whole seconds, rounded up).
fn retry_later(message: &str, wait: Duration) -> Status {
    let wait = Duration::from_secs(wait.as_secs() + u64::from(wait.subsec_nanos() > 0));
    Status::with_error_details(
        Code::ResourceExhausted,
        message,
        ErrorDetails::with_retry_info(Some(wait)),
    )
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
