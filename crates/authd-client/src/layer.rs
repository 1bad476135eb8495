//! [`AuthLayer`]: a tower layer for tonic and axum servers that lets a
//! request through only with a valid bearer token, and hands its claims to
//! the handler as a [`Caller`].

use std::{
    ops::Deref,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{HeaderValue, Request, Response, StatusCode, header};
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::{Claims, Client, LocalValidator, Validity};

/// The claims of the request's token, in its extensions.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<Claims>);

impl Deref for Caller {
    type Target = Claims;

    fn deref(&self) -> &Claims {
        &self.0
    }
}

/// Where tokens are checked.
#[derive(Debug, Clone)]
enum Check {
    /// In-process.
    Local(LocalValidator),
    /// Through ValidateToken.
    Remote(Client),
}

/// Requires a valid `authorization: Bearer` token (and, when set, a role)
/// of every request. Refuses with UNAUTHENTICATED or HTTP 401 for a
/// missing or invalid token, PERMISSION_DENIED or 403 for a missing role,
/// UNAVAILABLE or 503 when validity cannot be known; gRPC requests (by
/// their `content-type`) get gRPC statuses with authd's `ErrorInfo`.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    check: Check,
    role: Option<Arc<str>>,
}

impl AuthLayer {
    /// Checks tokens in-process with `validator`.
    pub fn local(validator: LocalValidator) -> Self {
        Self {
            check: Check::Local(validator),
            role: None,
        }
    }

    /// Checks tokens with a ValidateToken call per request.
    pub fn remote(client: Client) -> Self {
        Self {
            check: Check::Remote(client),
            role: None,
        }
    }

    /// Requires the token to carry `role` too.
    #[must_use]
    pub fn require_role(mut self, role: impl Into<Arc<str>>) -> Self {
        self.role = Some(role.into());
        self
    }

    /// The caller of a request whose `authorization` header is `header`.
    async fn caller(&self, header: Option<&HeaderValue>) -> Result<Caller, Refusal> {
        let token = header
            .and_then(|value| value.to_str().ok())
            .and_then(bearer)
            .ok_or(Refusal::Missing)?;
        let validity = match &self.check {
            Check::Local(validator) => validator
                .validate(token)
                .await
                .map_err(|_| Refusal::Unavailable)?,
            Check::Remote(client) => client.validate(token).await.map_err(|err| {
                if err.code() == Code::InvalidArgument {
                    Refusal::Invalid
                } else {
                    tracing::warn!(error = %err, "cannot validate a token through authd");
                    Refusal::Unavailable
                }
            })?,
        };
        let claims = match validity {
            Validity::Valid(claims) => claims,
            Validity::Invalid(_) => return Err(Refusal::Invalid),
        };
        if let Some(role) = &self.role
            && !claims.has_role(role)
        {
            return Err(Refusal::MissingRole);
        }
        Ok(Caller(claims))
    }
}

/// The token of an `authorization` header's value: the scheme is
/// case-insensitive (RFC 9110).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = RequireToken<S>;

    fn layer(&self, inner: S) -> RequireToken<S> {
        RequireToken {
            layer: self.clone(),
            inner,
        }
    }
}

/// The service [`AuthLayer`] wraps around another.
#[derive(Debug, Clone)]
pub struct RequireToken<S> {
    layer: AuthLayer,
    inner: S,
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Missing,
    Invalid,
    MissingRole,
    Unavailable,
}

impl Refusal {
    /// The refusal as a response: a gRPC status for a gRPC request, an HTTP
    /// status otherwise.
    fn response<B: Default>(self, grpc: bool) -> Response<B> {
        let (code, reason, message) = match self {
            Self::Missing => (
                Code::Unauthenticated,
                "TOKEN_MISSING",
                "a bearer token is required",
            ),
            Self::Invalid => (
                Code::Unauthenticated,
                "TOKEN_INVALID",
                "the token is not valid",
            ),
            Self::MissingRole => (
                Code::PermissionDenied,
                "PERMISSION_DENIED",
                "the token lacks the role this service requires",
            ),
            Self::Unavailable => (
                Code::Unavailable,
                "REVOCATION_STATE_STALE",
                "whether the token is valid cannot be known now; retry shortly",
            ),
        };
        if grpc {
            let details =
                ErrorDetails::with_error_info(reason, "authd", std::collections::HashMap::new());
            return tonic::Status::with_error_details(code, message, details).into_http();
        }
        let (status, challenge) = match self {
            Self::Missing => (StatusCode::UNAUTHORIZED, r#"Bearer realm="authd""#),
            Self::Invalid => (
                StatusCode::UNAUTHORIZED,
                r#"Bearer realm="authd", error="invalid_token""#,
            ),
            Self::MissingRole => (
                StatusCode::FORBIDDEN,
                r#"Bearer realm="authd", error="insufficient_scope""#,
            ),
            Self::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, ""),
        };
        let mut response = Response::new(B::default());
        *response.status_mut() = status;
        let headers = response.headers_mut();
        if challenge.is_empty() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        } else {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

impl<S, B, R> tower::Service<Request<B>> for RequireToken<S>
where
    S: tower::Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    R: Default,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone is the one made ready; this one is left for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let grpc = request
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .is_some_and(|value| value.starts_with("application/grpc"));
            match layer
                .caller(request.headers().get(header::AUTHORIZATION))
                .await
            {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(refusal) => Ok(refusal.response(grpc)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bearer_scheme_with_a_token_is_taken() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
    }

    #[test]
    fn grpc_refusals_carry_the_code_and_reason() {
        let response: Response<()> = Refusal::MissingRole.response(true);
        let status = tonic::Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(
            status.get_error_details().error_info().unwrap().reason,
            "PERMISSION_DENIED"
        );
        let http: Response<()> = Refusal::Invalid.response(false);
        assert_eq!(http.status(), StatusCode::UNAUTHORIZED);
        assert!(
            http.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
    }
}
