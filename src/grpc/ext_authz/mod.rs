//! `envoy.service.auth.v3.Authorization` (Envoy's and Istio's ext_authz)
//! over the proxy decision of [`crate::proxy`].

mod request;

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use tonic::{
    Code, Request, Response, Status,
    body::Body,
    codegen::{Body as HttpBody, BoxFuture, Service, StdError, http},
    server::{Grpc, NamedService, UnaryService},
};
use tonic_prost::ProstCodec;

use self::request::CheckView;
use super::CallLimit;
use crate::{
    auth::Authenticator,
    proxy::{self, Outcome, Verdict},
};

/// The `context_extensions` key naming the role a route requires.
pub const REQUIRED_ROLE_KEY: &str = "authd_required_role";

/// The fully qualified name of the service, as health checks name it.
pub const EXT_AUTHZ_SERVICE_NAME: &str = "envoy.service.auth.v3.Authorization";

/// The path of the one method.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// The ext_authz face of the [`Authenticator`], served as the gRPC service
/// [`EXT_AUTHZ_SERVICE_NAME`]. It is written out here rather than taken
/// from envoy-types' server so that requests decode into [`CheckView`];
/// answers are envoy-types' own `CheckResponse`.
#[derive(Debug, Clone)]
pub struct ExtAuthzApi {
    auth: Arc<Authenticator>,
    limit: CallLimit,
    max_request_bytes: usize,
}

impl ExtAuthzApi {
    /// Answers from `auth`, sharing `limit` with the other services, and
    /// refuses requests over `max_request_bytes` (OUT_OF_RANGE, as tonic
    /// refuses any oversized message).
    pub fn new(auth: Arc<Authenticator>, limit: CallLimit, max_request_bytes: usize) -> Self {
        Self {
            auth,
            limit,
            max_request_bytes,
        }
    }

    fn check(&self, check: &CheckView) -> CheckResponse {
        let started = Instant::now();
        let verdict = match self.limit.try_enter() {
            None => proxy::overloaded(),
            Some(_permit) => proxy::decide(&self.auth, check.credentials(), check.required_roles()),
        };
        let outcome = verdict.outcome;
        let response = check_response(verdict);
        let latency_us = started.elapsed().as_micros();
        tracing::debug!(method = "Check", ?outcome, latency_us, "rpc");
        response
    }
}

impl NamedService for ExtAuthzApi {
    const NAME: &'static str = EXT_AUTHZ_SERVICE_NAME;
}

impl UnaryService<CheckView> for ExtAuthzApi {
    type Response = CheckResponse;
    type Future = std::future::Ready<Result<Response<CheckResponse>, Status>>;

    fn call(&mut self, request: Request<CheckView>) -> Self::Future {
        std::future::ready(Ok(Response::new(self.check(request.get_ref()))))
    }
}

impl<B> Service<http::Request<B>> for ExtAuthzApi
where
    B: HttpBody + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let api = self.clone();
        Box::pin(async move {
            if request.uri().path() != CHECK_PATH {
                return Ok(Status::unimplemented("").into_http());
            }
            let mut grpc = Grpc::new(ProstCodec::<CheckResponse, CheckView>::default())
                .apply_max_message_size_config(Some(api.max_request_bytes), None);
            Ok(grpc.unary(api, request).await)
        })
    }
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
        .map(|(name, value)| header(name.as_str(), value))
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
fn header(name: &str, value: &http::HeaderValue) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_owned(),
            // Every value of ours is visible ASCII.
            value: value.to_str().unwrap_or_default().to_owned(),
            raw_value: Vec::new(),
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd.into(),
        ..Default::default()
    }
}
