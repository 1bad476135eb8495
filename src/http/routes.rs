//! The HTTP endpoints: `GET` (and `HEAD`) only, but forward-auth, which
//! takes any method; no request body is ever read.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use aws_lc_rs::digest;
use axum::{
    Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::{any, get},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Serialize;

use crate::{
    auth::{Authenticator, PublicJwk},
    grpc::SERVICE_NAME,
    jobs::database_health::Readiness,
    proxy::{self, Credentials, Verdict},
    telemetry::{self, metrics::Metrics},
};

/// Where the JWKS is served.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// Where the RFC 8414 metadata is served.
pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";
/// Where proxies ask whether a request may pass (nginx `auth_request`,
/// Traefik ForwardAuth, Caddy `forward_auth`).
pub const FORWARD_AUTH_PATH: &str = "/auth/verify";
/// Where Prometheus scrapes the metrics, when they are on.
pub const METRICS_PATH: &str = "/metrics";
/// The query parameter naming a role the route requires; it may repeat.
const REQUIRED_ROLE_PARAMETER: &str = "role";

/// What the endpoints answer from.
#[derive(Clone)]
pub(super) struct HttpState {
    pub(super) auth: Arc<Authenticator>,
    pub(super) readiness: Readiness,
    /// The metadata document, made once.
    pub(super) metadata: Arc<Vec<u8>>,
    pub(super) jwks_max_age: Duration,
    /// `None`: metrics are off, and `/metrics` is not found.
    pub(super) metrics: Option<Metrics>,
}

/// The server metadata's facts that do not depend on where it is served.
#[derive(Debug, Clone)]
pub struct Metadata {
    /// The `iss` of the tokens.
    pub issuer: String,
}

impl Metadata {
    /// The document, with `base` (the public URL) before the paths.
    pub(super) fn with_base(&self, base: &str) -> Vec<u8> {
        let method = |name: &str| format!("{SERVICE_NAME}/{name}");
        let document = MetadataDocument {
            issuer: &self.issuer,
            jwks_uri: format!("{base}{JWKS_PATH}"),
            grpc_service: SERVICE_NAME,
            grpc_token_method: method("Login"),
            grpc_revocation_method: method("Logout"),
            grpc_introspection_method: method("ValidateToken"),
            grpc_jwks_method: method("GetJwks"),
        };
        serde_json::to_vec(&document).unwrap_or_default()
    }
}

/// RFC 8414 metadata: the members that apply to a service without browser
/// flows, and the gRPC methods of its token endpoints as extensions.
#[derive(Serialize)]
struct MetadataDocument<'a> {
    issuer: &'a str,
    jwks_uri: String,
    grpc_service: &'a str,
    grpc_token_method: String,
    grpc_revocation_method: String,
    grpc_introspection_method: String,
    grpc_jwks_method: String,
}

#[derive(Serialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

/// One key as RFC 8037 writes it.
#[derive(Serialize)]
struct Jwk {
    kty: &'static str,
    crv: &'static str,
    x: String,
    kid: String,
    #[serde(rename = "use")]
    use_: &'static str,
    alg: &'static str,
}

impl From<PublicJwk> for Jwk {
    fn from(key: PublicJwk) -> Self {
        Self {
            kty: PublicJwk::KTY,
            crv: PublicJwk::CRV,
            x: key.x,
            kid: key.kid,
            use_: PublicJwk::USE,
            alg: PublicJwk::ALG,
        }
    }
}

pub(super) fn router(state: HttpState) -> Router {
    let router = match state.metrics {
        Some(_) => Router::new().route(METRICS_PATH, get(metrics)),
        None => Router::new(),
    };
    router
        .route(JWKS_PATH, get(jwks))
        .route(METADATA_PATH, get(metadata))
        .route(FORWARD_AUTH_PATH, any(forward_auth))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(state)
}

async fn jwks(State(state): State<HttpState>, request: HeaderMap) -> Response {
    let set = JwkSet {
        keys: state
            .auth
            .published_keys()
            .into_iter()
            .map(Jwk::from)
            .collect(),
    };
    let body = serde_json::to_vec(&set).unwrap_or_default();
    let etag = strong_etag(&body);
    let cache_control = format!("public, max-age={}", state.jwks_max_age.as_secs());
    let mut headers = HeaderMap::new();
    insert(&mut headers, header::ETAG, &etag);
    insert(&mut headers, header::CACHE_CONTROL, &cache_control);
    if if_none_match(&request, &etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    insert(
        &mut headers,
        header::CONTENT_TYPE,
        "application/jwk-set+json",
    );
    insert(&mut headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    (StatusCode::OK, headers, body).into_response()
}

async fn metadata(State(state): State<HttpState>) -> Response {
    let mut headers = HeaderMap::new();
    insert(&mut headers, header::CONTENT_TYPE, "application/json");
    insert(&mut headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    let cache_control = format!("public, max-age={}", state.jwks_max_age.as_secs());
    insert(&mut headers, header::CACHE_CONTROL, &cache_control);
    (StatusCode::OK, headers, state.metadata.as_ref().clone()).into_response()
}

/// Reads the `Authorization` header and the `role` parameters alone: other
/// parameters are left alone, since Caddy passes on the client's query.
async fn forward_auth(State(state): State<HttpState>, uri: Uri, request: HeaderMap) -> Response {
    let started = Instant::now();
    let credentials = Credentials::from_headers(
        request
            .get_all(header::AUTHORIZATION)
            .iter()
            .map(HeaderValue::as_bytes),
    );
    let query = uri.query().unwrap_or_default().as_bytes();
    let names: Vec<_> = form_urlencoded::parse(query)
        .filter(|(key, _)| key == REQUIRED_ROLE_PARAMETER)
        .map(|(_, role)| role)
        .collect();
    let roles = proxy::required_roles(names.iter().map(|name| name.as_ref()));
    let verdict = proxy::decide(&state.auth, credentials, roles);
    let latency_us = started.elapsed().as_micros();
    tracing::debug!(path = FORWARD_AUTH_PATH, outcome = ?verdict.outcome, latency_us, "http");
    verdict_response(verdict)
}

fn verdict_response(verdict: Verdict) -> Response {
    let mut headers = HeaderMap::with_capacity(verdict.headers.len() + 1);
    for (name, value) in verdict.headers {
        headers.insert(name, value);
    }
    if verdict.status.is_success() {
        // Empty rather than absent: a proxy that copies the header then
        // overwrites a client's own whatever its rules for absent ones.
        for name in verdict.remove {
            headers.insert(name, HeaderValue::from_static(""));
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    (verdict.status, headers, verdict.body).into_response()
}

async fn metrics(State(state): State<HttpState>) -> Response {
    let Some(metrics) = &state.metrics else {
        return not_found().await;
    };
    let mut headers = HeaderMap::new();
    insert(&mut headers, header::CACHE_CONTROL, "no-store");
    match metrics.render() {
        Ok(body) => {
            insert(
                &mut headers,
                header::CONTENT_TYPE,
                telemetry::metrics::CONTENT_TYPE,
            );
            (StatusCode::OK, headers, body).into_response()
        }
        Err(err) => {
            tracing::error!(error = %err, "cannot write the metrics");
            probe(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot write the metrics\n",
            )
        }
    }
}

async fn healthz() -> Response {
    probe(StatusCode::OK, "ok\n")
}

async fn readyz(State(state): State<HttpState>) -> Response {
    if state.readiness.is_ready() {
        probe(StatusCode::OK, "ready\n")
    } else {
        probe(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn not_found() -> Response {
    probe(StatusCode::NOT_FOUND, "not found\n")
}

fn probe(status: StatusCode, body: &'static str) -> Response {
    let mut headers = HeaderMap::new();
    insert(
        &mut headers,
        header::CONTENT_TYPE,
        "text/plain; charset=utf-8",
    );
    insert(&mut headers, header::CACHE_CONTROL, "no-store");
    (status, headers, body).into_response()
}

fn insert(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// A strong validator of the exact bytes served.
fn strong_etag(body: &[u8]) -> String {
    let hash = digest::digest(&digest::SHA256, body);
    format!("\"{}\"", URL_SAFE_NO_PAD.encode(&hash.as_ref()[..18]))
}

/// Whether `If-None-Match` names `etag` (or is `*`); the comparison is weak,
/// as RFC 9110 says for this header.
fn if_none_match(request: &HeaderMap, etag: &str) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn if_none_match_compares_weakly_and_takes_lists() {
        let etag = strong_etag(b"{}");
        assert!(etag.starts_with('"') && etag.ends_with('"'));
        assert!(if_none_match(&with(&etag), &etag));
        assert!(if_none_match(&with(&format!("W/{etag}")), &etag));
        assert!(if_none_match(&with(&format!("\"other\", {etag}")), &etag));
        assert!(if_none_match(&with("*"), &etag));
        assert!(!if_none_match(&with("\"other\""), &etag));
        assert!(!if_none_match(&HeaderMap::new(), &etag));
        assert_ne!(strong_etag(b"{}"), strong_etag(b"{ }"));
    }

    #[test]
    fn the_metadata_names_the_jwks_and_the_methods() {
        let doc = Metadata {
            issuer: "https://auth.example".into(),
        }
        .with_base("https://auth.example");
        let doc: serde_json::Value = serde_json::from_slice(&doc).unwrap();
        assert_eq!(doc["issuer"], "https://auth.example");
        assert_eq!(
            doc["jwks_uri"],
            "https://auth.example/.well-known/jwks.json"
        );
        assert_eq!(doc["grpc_token_method"], "auth.v1.AuthService/Login");
    }
}
