//! Errors to gRPC statuses. Internal causes are logged here, once, with
//! their chain; the client sees a stable code, a generic message, and a
//! `google.rpc.ErrorInfo` whose reason it can branch on.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::{
    auth::{AccountError, AuthError},
    domain::InvalidInput,
};

/// The `domain` of every `google.rpc.ErrorInfo` authd sends.
pub const ERROR_DOMAIN: &str = "authd";

/// Why a call failed, as `google.rpc.ErrorInfo.reason` names it. The names
/// are part of the API (the protos list them): clients match them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A request field is malformed; a `google.rpc.BadRequest` names it.
    InvalidArgument,
    /// Login refused: unknown user, wrong password or disabled user.
    InvalidCredentials,
    /// Login refused without a check during a back-off.
    LoginThrottled,
    /// Shed: too many calls or password checks at once.
    Overloaded,
    /// No access token was given where one is needed.
    TokenMissing,
    /// The access token given is not a current token of ours.
    TokenInvalid,
    /// The refresh token is not ours, spent, or its session ended.
    RefreshTokenInvalid,
    /// A spent refresh token was used again: its session is now ended.
    RefreshTokenReused,
    /// The caller's user has no session of that id.
    SessionNotFound,
    /// No such user (admin API).
    UserNotFound,
    /// A user of that name exists (admin API).
    UsernameTaken,
    /// The token lacks the role the call needs.
    PermissionDenied,
    /// The database cannot be reached.
    StoreUnavailable,
    /// The revocation state is too old to vouch for a token.
    RevocationStateStale,
    /// A bug or a broken deployment; the log says more.
    Internal,
}

impl Reason {
    /// Every reason, for the tests that pin them.
    pub const ALL: [Reason; 15] = [
        Self::InvalidArgument,
        Self::InvalidCredentials,
        Self::LoginThrottled,
        Self::Overloaded,
        Self::TokenMissing,
        Self::TokenInvalid,
        Self::RefreshTokenInvalid,
        Self::RefreshTokenReused,
        Self::SessionNotFound,
        Self::UserNotFound,
        Self::UsernameTaken,
        Self::PermissionDenied,
        Self::StoreUnavailable,
        Self::RevocationStateStale,
        Self::Internal,
    ];

    /// The name clients match.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::InvalidCredentials => "INVALID_CREDENTIALS",
            Self::LoginThrottled => "LOGIN_THROTTLED",
            Self::Overloaded => "OVERLOADED",
            Self::TokenMissing => "TOKEN_MISSING",
            Self::TokenInvalid => "TOKEN_INVALID",
            Self::RefreshTokenInvalid => "REFRESH_TOKEN_INVALID",
            Self::RefreshTokenReused => "REFRESH_TOKEN_REUSED",
            Self::SessionNotFound => "SESSION_NOT_FOUND",
            Self::UserNotFound => "USER_NOT_FOUND",
            Self::UsernameTaken => "USERNAME_TAKEN",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::StoreUnavailable => "STORE_UNAVAILABLE",
            Self::RevocationStateStale => "REVOCATION_STATE_STALE",
            Self::Internal => "INTERNAL",
        }
    }
}

/// A status of `code` saying `message`, with `details` and the ErrorInfo
/// of `reason`.
fn with_reason(code: Code, reason: Reason, message: &str, mut details: ErrorDetails) -> Status {
    details.set_error_info(reason.as_str(), ERROR_DOMAIN, []);
    Status::with_error_details(code, message, details)
}

/// A status of `code` saying `message`, with the ErrorInfo of `reason`.
pub(super) fn refused(code: Code, reason: Reason, message: &str) -> Status {
    with_reason(code, reason, message, ErrorDetails::new())
}

impl From<InvalidInput> for Status {
    fn from(err: InvalidInput) -> Self {
        bad_request(err.field, &err.to_string())
    }
}

/// INVALID_ARGUMENT with a `google.rpc.BadRequest` naming `field`, for
/// clients that branch on it.
pub(super) fn bad_request(field: &str, message: &str) -> Status {
    with_reason(
        Code::InvalidArgument,
        Reason::InvalidArgument,
        message,
        ErrorDetails::with_bad_request_violation(field, message),
    )
}

/// RESOURCE_EXHAUSTED for a call shed at once, to retry in a second.
pub(super) fn overloaded(message: &str) -> Status {
    retry_later(Reason::Overloaded, message, Duration::from_secs(1))
}

impl From<AccountError> for Status {
    fn from(err: AccountError) -> Self {
        match err {
            AccountError::NotFound(_) => {
                refused(Code::NotFound, Reason::UserNotFound, &err.to_string())
            }
            AccountError::NameTaken(_) => {
                refused(Code::AlreadyExists, Reason::UsernameTaken, &err.to_string())
            }
            AccountError::PasswordTooShort(_) => bad_request("password", &err.to_string()),
            AccountError::Store(err) => AuthError::from(err).into(),
            AccountError::Hashing(cause) => AuthError::Internal(cause.into()).into(),
        }
    }
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::InvalidCredentials => refused(
                Code::Unauthenticated,
                Reason::InvalidCredentials,
                "invalid username or password",
            ),
            AuthError::InvalidToken(reason) => refused(
                Code::Unauthenticated,
                Reason::TokenInvalid,
                &format!("the access token is {reason}"),
            ),
            // One message whatever the cause: unknown, spent, ended or
            // expired tell a thief nothing.
            AuthError::InvalidRefreshToken => refused(
                Code::Unauthenticated,
                Reason::RefreshTokenInvalid,
                "invalid refresh token",
            ),
            AuthError::RefreshTokenReused => refused(
                Code::Unauthenticated,
                Reason::RefreshTokenReused,
                "invalid refresh token",
            ),
            AuthError::SessionNotFound => {
                refused(Code::NotFound, Reason::SessionNotFound, "no such session")
            }
            AuthError::Unavailable(cause) => {
                tracing::warn!(error = %chain(&cause), "database unavailable");
                refused(
                    Code::Unavailable,
                    Reason::StoreUnavailable,
                    "the service cannot reach its database; retry later",
                )
            }
            AuthError::Overloaded => overloaded("too many logins in progress; retry shortly"),
            // One message whatever the cause (the name, the address) and
            // whatever the password: the refusal tells an attacker nothing.
            AuthError::Throttled(wait) => retry_later(
                Reason::LoginThrottled,
                "too many failed logins; retry later",
                wait,
            ),
            AuthError::RevocationsStale => {
                tracing::warn!("the revocation state is out of date; refusing to vouch for tokens");
                refused(
                    Code::Unavailable,
                    Reason::RevocationStateStale,
                    "the service cannot confirm the token's revocation state; retry later",
                )
            }
            AuthError::Internal(cause) => {
                tracing::error!(error = %chain(cause.as_ref()), "internal error");
                refused(Code::Internal, Reason::Internal, "internal error")
            }
        }
    }
}

/// RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo` saying when to retry
/// (whole seconds, rounded up).
fn retry_later(reason: Reason, message: &str, wait: Duration) -> Status {
    let wait = Duration::from_secs(wait.as_secs() + u64::from(wait.subsec_nanos() > 0));
    with_reason(
        Code::ResourceExhausted,
        reason,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::InvalidToken;

    fn reason_of(status: &Status) -> String {
        let info = status.get_error_details();
        let info = info.error_info().expect("an ErrorInfo");
        assert_eq!(info.domain, ERROR_DOMAIN);
        info.reason.clone()
    }

    #[test]
    fn reasons_are_upper_snake_case_and_distinct() {
        let names: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        for name in &names {
            assert!(
                name.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{name}"
            );
        }
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
    }

    #[test]
    fn every_use_case_error_carries_its_reason() {
        let cases: Vec<(AuthError, Code, &str)> = vec![
            (
                AuthError::InvalidCredentials,
                Code::Unauthenticated,
                "INVALID_CREDENTIALS",
            ),
            (
                AuthError::InvalidToken(InvalidToken::Revoked),
                Code::Unauthenticated,
                "TOKEN_INVALID",
            ),
            (
                AuthError::InvalidRefreshToken,
                Code::Unauthenticated,
                "REFRESH_TOKEN_INVALID",
            ),
            (
                AuthError::RefreshTokenReused,
                Code::Unauthenticated,
                "REFRESH_TOKEN_REUSED",
            ),
            (
                AuthError::SessionNotFound,
                Code::NotFound,
                "SESSION_NOT_FOUND",
            ),
            (
                AuthError::Unavailable(crate::store::StoreError::Contended),
                Code::Unavailable,
                "STORE_UNAVAILABLE",
            ),
            (AuthError::Overloaded, Code::ResourceExhausted, "OVERLOADED"),
            (
                AuthError::Throttled(Duration::from_millis(1500)),
                Code::ResourceExhausted,
                "LOGIN_THROTTLED",
            ),
            (
                AuthError::RevocationsStale,
                Code::Unavailable,
                "REVOCATION_STATE_STALE",
            ),
            (
                AuthError::Internal(anyhow::anyhow!("a bug")),
                Code::Internal,
                "INTERNAL",
            ),
        ];
        for (err, code, reason) in cases {
            let status = Status::from(err);
            assert_eq!(status.code(), code, "{reason}");
            assert_eq!(reason_of(&status), reason);
        }
        let throttled = Status::from(AuthError::Throttled(Duration::from_millis(1500)));
        assert_eq!(
            throttled
                .get_error_details()
                .retry_info()
                .unwrap()
                .retry_delay,
            Some(Duration::from_secs(2)),
            "RetryInfo stays, rounded up"
        );
        // Reuse and any other refusal read the same to a person.
        assert_eq!(
            Status::from(AuthError::RefreshTokenReused).message(),
            Status::from(AuthError::InvalidRefreshToken).message()
        );
    }

    #[test]
    fn the_protos_and_the_docs_list_every_reason() {
        let listed = [
            include_str!("../../proto/auth/v1/auth.proto"),
            include_str!("../../docs/clients.md"),
        ];
        for reason in Reason::ALL {
            for text in listed {
                assert!(
                    text.contains(&format!("`{}`", reason.as_str())),
                    "{reason:?}"
                );
            }
        }
    }

    #[test]
    fn a_bad_field_is_named_beside_the_reason() {
        let status = Status::from(InvalidInput::new("username", "must not be empty"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(reason_of(&status), "INVALID_ARGUMENT");
        let details = status.get_error_details();
        assert_eq!(
            details.bad_request().unwrap().field_violations[0].field,
            "username"
        );
        let taken = Status::from(AccountError::NameTaken("bob".to_owned()));
        assert_eq!(reason_of(&taken), "USERNAME_TAKEN");
    }
}
