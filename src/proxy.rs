//! What authd tells a proxy asking whether a request may pass: one decision
//! in HTTP terms (status, headers, body), which Envoy's ext_authz
//! ([`crate::grpc`]) and forward-auth ([`crate::http`]) each put on their
//! own wire.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use uuid::Uuid;

use crate::{
    auth::{Access, AuthError, Authenticator, Claims},
    domain::{AccessToken, InvalidInput, Role},
    grpc::reason_name,
};

/// The user's id (a UUID).
pub const USER_ID: HeaderName = HeaderName::from_static("x-authd-user-id");
/// The username, percent-encoded where a byte is not visible ASCII or is `%`.
pub const USERNAME: HeaderName = HeaderName::from_static("x-authd-username");
/// The roles, each percent-encoded as the username (`,` too), joined by `,`.
pub const ROLES: HeaderName = HeaderName::from_static("x-authd-roles");
/// The session's id; removed when the token has no session.
pub const SESSION_ID: HeaderName = HeaderName::from_static("x-authd-session-id");
/// The token's `jti`.
pub const TOKEN_ID: HeaderName = HeaderName::from_static("x-authd-token-id");
/// Every header authd vouches for: a proxy must never pass on a client's.
pub const IDENTITY_HEADERS: [HeaderName; 5] = [USER_ID, USERNAME, ROLES, SESSION_ID, TOKEN_ID];

/// How long a proxy's client is told to wait when authd cannot decide.
const RETRY_AFTER_SECONDS: &str = "1";

/// What became of the request, for the gRPC status of ext_authz and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Let through, with the identity headers.
    Allowed,
    /// No token, or not a valid one: 401.
    Unauthenticated,
    /// A valid token without a required role: 403.
    Forbidden,
    /// The token's revocation state cannot be known: 503.
    Unavailable,
    /// Too many checks in flight: 503.
    Overloaded,
    /// The proxy's configuration names a role that cannot exist: 500.
    Misconfigured,
}

/// The whole answer to a proxy.
#[derive(Debug)]
pub struct Verdict {
    /// What became of the request.
    pub outcome: Outcome,
    /// The HTTP status to answer the client with (200: let it through).
    pub status: StatusCode,
    /// Allowed: the identity headers to set on the request, overwriting
    /// the client's. Denied: the headers of the refusal.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Allowed: identity headers with nothing to say, to strip from the
    /// request so that a client's own never reaches the service.
    pub remove: Vec<HeaderName>,
    /// Denied: a small JSON document saying why; allowed: empty.
    pub body: String,
}

/// What the request's `Authorization` headers hold.
#[derive(Debug)]
pub enum Credentials {
    /// No bearer token: no header, or another scheme.
    None,
    /// One bearer token.
    Bearer(AccessToken),
    /// Several `Authorization` headers, an empty or oversized token.
    Malformed,
}

impl Credentials {
    /// Reads the values of every `Authorization` header of the request.
    pub fn from_headers<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Self {
        let Some(value) = values.next() else {
            return Self::None;
        };
        if values.next().is_some() {
            return Self::Malformed;
        }
        let Ok(value) = std::str::from_utf8(value) else {
            return Self::Malformed;
        };
        let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Self::None;
        }
        AccessToken::parse(token.trim()).map_or(Self::Malformed, Self::Bearer)
    }
}

/// Parses the roles a route requires, as its proxy configuration names them.
///
/// # Errors
/// [`InvalidInput`] when one is not a role name.
pub fn required_roles<'a>(names: impl Iterator<Item = &'a str>) -> Result<Vec<Role>, InvalidInput> {
    names.map(Role::parse).collect()
}

/// Decides on a request with `credentials` for a route requiring `roles`.
pub fn decide(
    auth: &Authenticator,
    credentials: Credentials,
    roles: Result<Vec<Role>, InvalidInput>,
) -> Verdict {
    let roles = match roles {
        Ok(roles) => roles,
        Err(err) => {
            tracing::warn!(error = %err, "the proxy's configuration names an invalid required role");
            return refusal(
                Outcome::Misconfigured,
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                &serde_json::json!({"error": "server_error"}),
            );
        }
    };
    let access = match credentials {
        Credentials::None => auth.authorize(None, &roles),
        Credentials::Bearer(token) => auth.authorize(Some(&token), &roles),
        Credentials::Malformed => Ok(Access::Invalid(crate::auth::InvalidToken::Malformed)),
    };
    match access {
        Ok(Access::Granted(claims)) => allowed(&claims),
        Ok(Access::NoToken) => refusal(
            Outcome::Unauthenticated,
            StatusCode::UNAUTHORIZED,
            Some("Bearer"),
            &serde_json::json!({"error": "missing_token"}),
        ),
        Ok(Access::Invalid(reason)) => refusal(
            Outcome::Unauthenticated,
            StatusCode::UNAUTHORIZED,
            Some(r#"Bearer error="invalid_token""#),
            &serde_json::json!({"error": "invalid_token", "reason": reason_name(reason)}),
        ),
        Ok(Access::MissingRole(_)) => refusal(
            Outcome::Forbidden,
            StatusCode::FORBIDDEN,
            Some(r#"Bearer error="insufficient_scope""#),
            &serde_json::json!({"error": "insufficient_scope"}),
        ),
        Err(AuthError::RevocationsStale) => {
            tracing::warn!("the revocation state is out of date; refusing to vouch for tokens");
            unavailable(Outcome::Unavailable)
        }
        Err(err) => {
            tracing::error!(error = %err, "cannot decide on a proxied request");
            unavailable(Outcome::Unavailable)
        }
    }
}

/// The answer when too many checks are in flight.
pub fn overloaded() -> Verdict {
    unavailable(Outcome::Overloaded)
}

fn allowed(claims: &Claims) -> Verdict {
    let mut headers = vec![
        (USER_ID, uuid_value(claims.sub)),
        (USERNAME, text_value(&claims.username)),
        (ROLES, roles_value(&claims.roles)),
        (TOKEN_ID, uuid_value(claims.jti)),
    ];
    let mut remove = Vec::new();
    match claims.sid {
        Some(sid) => headers.push((SESSION_ID, uuid_value(sid))),
        None => remove.push(SESSION_ID),
    }
    Verdict {
        outcome: Outcome::Allowed,
        status: StatusCode::OK,
        headers,
        remove,
        body: String::new(),
    }
}

fn unavailable(outcome: Outcome) -> Verdict {
    let mut verdict = refusal(
        outcome,
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        &serde_json::json!({"error": "temporarily_unavailable"}),
    );
    verdict.headers.push((
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECONDS),
    ));
    verdict
}

fn refusal(
    outcome: Outcome,
    status: StatusCode,
    challenge: Option<&'static str>,
    body: &serde_json::Value,
) -> Verdict {
    let mut headers = vec![
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ];
    if let Some(challenge) = challenge {
        headers.push((
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        ));
    }
    Verdict {
        outcome,
        status,
        headers,
        remove: Vec::new(),
        body: body.to_string(),
    }
}

fn roles_value(roles: &[String]) -> HeaderValue {
    let joined = roles
        .iter()
        .map(|role| percent_encode(role))
        .collect::<Vec<_>>()
        .join(",");
    ascii_value(joined)
}

fn uuid_value(id: Uuid) -> HeaderValue {
    // Hyphenated hex is visible ASCII: nothing to encode.
    let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut text))
        .unwrap_or(HeaderValue::from_static(""))
}

fn text_value(text: &str) -> HeaderValue {
    ascii_value(percent_encode(text))
}

fn ascii_value(encoded: String) -> HeaderValue {
    // Percent-encoded text is visible ASCII, which every header value may be.
    HeaderValue::try_from(encoded).unwrap_or(HeaderValue::from_static(""))
}

/// `text` with every byte that is not visible ASCII, and `%` and `,`, as
/// `%XX`: lossless, and safe in any header and any comma-separated list.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_graphic() && byte != b'%' && byte != b',' {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_values_are_visible_ascii_and_lossless() {
        assert_eq!(percent_encode("alice"), "alice");
        assert_eq!(percent_encode("Élodie Durand"), "%C3%89lodie%20Durand");
        assert_eq!(percent_encode("50%,off"), "50%25%2Coff");
        let roles = roles_value(&["reader".into(), "a,b".into(), "authd:admin".into()]);
        assert_eq!(roles, "reader,a%2Cb,authd:admin");
        assert_eq!(roles_value(&[]), "");
    }

    #[test]
    fn credentials_take_one_bearer_token_of_any_case() {
        let read = |values: &[&str]| Credentials::from_headers(values.iter().map(|v| v.as_bytes()));
        assert!(matches!(read(&[]), Credentials::None));
        assert!(matches!(read(&["Basic YWxpY2U6cHc="]), Credentials::None));
        assert!(matches!(read(&["bearer abc"]), Credentials::Bearer(_)));
        assert!(matches!(read(&["BEARER  abc "]), Credentials::Bearer(_)));
        assert!(matches!(read(&["Bearer"]), Credentials::Malformed));
        assert!(matches!(read(&["Bearer   "]), Credentials::Malformed));
        assert!(matches!(
            read(&["Bearer a", "Bearer b"]),
            Credentials::Malformed
        ));
        let long = format!("Bearer {}", "a".repeat(AccessToken::MAX_BYTES + 1));
        assert!(matches!(read(&[&long]), Credentials::Malformed));
        assert!(matches!(
            Credentials::from_headers([&b"Bearer \xff"[..]].into_iter()),
            Credentials::Malformed
        ));
    }

    #[test]
    fn required_roles_refuse_what_cannot_be_a_role() {
        assert_eq!(
            required_roles(["admin", "ops"].into_iter()).unwrap().len(),
            2
        );
        assert!(required_roles([""].into_iter()).is_err());
        assert!(required_roles(["two words"].into_iter()).is_err());
    }
}
