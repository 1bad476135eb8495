//! `envoy.service.auth.v3.Authorization` (Envoy's and Istio's ext_authz)
//! over the proxy decision of [`crate::proxy`].

use std::{sync::Arc, time::Instant};

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction,
    HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use tonic::{Code, Request, Response, Status};

use super::CallLimit;
use crate::{
    auth::Authenticator,
    domain::{InvalidInput, Role},
    proxy::{self, Credentials, Outcome, Verdict},
};

/// The `context_extensions` key naming the role a route requires.
pub const REQUIRED_ROLE_KEY: &str = "authd_required_role";

/// The fully qualified name of the service, as health checks name it.
pub const EXT_AUTHZ_SERVICE_NAME: &str = "envoy.service.auth.v3.Authorization";

/// The ext_authz face of the [`Authenticator`].
#[derive(Debug, Clone)]
pub struct ExtAuthzApi {
    auth: Arc<Authenticator>,
    limit: CallLimit,
}

impl ExtAuthzApi {
    /// Answers from `auth`, sharing `limit` with the other services.
    pub fn new(auth: Arc<Authenticator>, limit: CallLimit) -> Self {
        Self { auth, limit }
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthzApi {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let started = Instant::now();
        let verdict = match self.limit.try_enter() {
            None => proxy::overloaded(),
            Some(_permit) => {
                let check = request.into_inner();
                proxy::decide(&self.auth, credentials(&check), required_roles(&check))
            }
        };
        let outcome = verdict.outcome;
        let response = check_response(verdict);
        let latency_us = started.elapsed().as_micros();
        tracing::debug!(method = "Check", ?outcome, latency_us, "rpc");
        Ok(Response::new(response))
    }
}

/// The request's `Authorization` values: from `headers`, where Envoy
/// merges repeated ones with commas, or from `header_map` when Envoy
/// sends raw headers.
fn credentials(check: &CheckRequest) -> Credentials {
    let Some(http) = check
        .attributes
        .as_ref()
        .and_then(|attributes| attributes.request.as_ref())
        .and_then(|request| request.http.as_ref())
    else {
        return Credentials::None;
    };
    if let Some(map) = http
        .header_map
        .as_ref()
        .filter(|map| !map.headers.is_empty())
    {
        return Credentials::from_headers(
            map.headers
                .iter()
                .filter(|header| header.key.eq_ignore_ascii_case("authorization"))
                .map(|header| {
                    if header.raw_value.is_empty() {
                        header.value.as_bytes()
                    } else {
                        header.raw_value.as_slice()
                    }
                }),
        );
    }
    Credentials::from_headers(
        http.headers
            .get("authorization")
            .map(String::as_bytes)
            .into_iter(),
    )
}

/// The roles the route requires: Envoy's per-route `context_extensions`.
/// A key of ours that is misspelt must not pass as no requirement.
fn required_roles(check: &CheckRequest) -> Result<Vec<Role>, InvalidInput> {
    let Some(extensions) = check
        .attributes
        .as_ref()
        .map(|attributes| &attributes.context_extensions)
    else {
        return Ok(Vec::new());
    };
    if let Some(unknown) = extensions
        .keys()
        .find(|key| key.starts_with("authd_") && key.as_str() != REQUIRED_ROLE_KEY)
    {
        return Err(InvalidInput::new(
            "context_extensions",
            format!("{unknown} is not a key authd knows; it takes {REQUIRED_ROLE_KEY}"),
        ));
    }
    proxy::required_roles(
        extensions
            .get(REQUIRED_ROLE_KEY)
            .map(String::as_str)
            .into_iter(),
    )
}

fn check_response(verdict: Verdict) -> CheckResponse {
    let code = match verdict.outcome {
        Outcome::Allowed => Code::Ok,
        Outcome::Unauthenticated => Code::Unauthenticated,
        Outcome::Forbidden => Code::PermissionDenied,
        Outcome::Unavailable => Code::Unavailable,
        Outcome::Overloaded => Code::ResourceExhausted,
        Outcome::Misconfigured => Code::InvalidArgument,
    };
    let headers = verdict
        .headers
        .iter()
        .map(|(name, value)| header(name.as_str(), value.as_bytes()))
        .collect();
    let http_response = if verdict.outcome == Outcome::Allowed {
        HttpResponse::OkResponse(OkHttpResponse {
            headers,
            headers_to_remove: verdict
                .remove
                .iter()
                .map(|name| name.as_str().to_owned())
                .collect(),
            ..Default::default()
        })
    } else {
        // Denied even when authd cannot decide: Envoy's `error_response`
        // would let `failure_mode_allow` turn the refusal into an allow.
        HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(verdict.status.as_u16()),
            }),
            headers,
            body: verdict.body,
        })
    };
    CheckResponse {
        status: Some(rpc::Status {
            code: code.into(),
            message: String::new(),
            details: Vec::new(),
        }),
        http_response: Some(http_response),
        ..Default::default()
    }
}

/// One header, overwriting any of that name the client sent.
fn header(name: &str, value: &[u8]) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_owned(),
            // Every value of ours is visible ASCII.
            value: String::from_utf8_lossy(value).into_owned(),
            raw_value: Vec::new(),
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd.into(),
        ..Default::default()
    }
}
