//! `auth.v1.AuthService` over the [`Authenticator`].

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use secrecy::ExposeSecret as _;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status, metadata::MetadataMap};
use tracing::Level;

use super::{
    CallLimit, TrustedProxies,
    pb::{
        self, GetJwksRequest, GetJwksResponse, JsonWebKey, ListSessionsRequest,
        ListSessionsResponse, LoginRequest, LoginResponse, LogoutRequest, LogoutResponse,
        RefreshRequest, RevocationEvent, RevokeSessionRequest, RevokeSessionResponse,
        TokenInvalidReason, ValidateTokenRequest, ValidateTokenResponse, WatchRevocationsRequest,
    },
    status::{Reason, bad_request, refused},
    trace::trace_id,
    watch::{WatchSettings, Watchers},
};
use crate::{
    auth::{
        Access, Authenticator, Claims, ClientInfo, Grant, InvalidToken, LogoutScope, PublicJwk,
        UserSession, Validity,
    },
    domain::{AccessToken, Password, RefreshToken, Role, SessionId, Username},
};

/// The gRPC face of the [`Authenticator`].
#[derive(Debug, Clone)]
pub struct AuthApi {
    auth: Arc<Authenticator>,
    /// Full means calls are refused with RESOURCE_EXHAUSTED.
    limit: CallLimit,
    /// Whose `x-forwarded-for` names the client.
    proxies: Arc<TrustedProxies>,
    /// Who may follow the revocations, and the streams that do.
    watchers: Watchers,
}

impl AuthApi {
    /// Serves `auth`, with the calls in flight bounded by `limit`, taking
    /// the client's address from `proxies` when they forward one.
    ///
    /// The health and reflection services are not counted, so probes get
    /// an answer from a server at its limit; nor are WatchRevocations'
    /// streams, which live long and have a limit of their own in `watch`.
    /// They end when `stop` is cancelled.
    pub fn new(
        auth: Arc<Authenticator>,
        limit: CallLimit,
        proxies: TrustedProxies,
        watch: WatchSettings,
        stop: CancellationToken,
    ) -> Self {
        Self {
            auth,
            limit,
            proxies: Arc::new(proxies),
            watchers: Watchers::new(watch, stop),
        }
    }

    /// A watcher's stream, for a caller holding the watch role or, under
    /// mutual TLS, a verified client certificate.
    fn watch(
        &self,
        request: &Request<WatchRevocationsRequest>,
    ) -> Result<ReceiverStream<Result<RevocationEvent, Status>>, Status> {
        let certified = request.peer_certs().is_some_and(|certs| !certs.is_empty());
        if !certified {
            holding_role(&self.auth, request.metadata(), &self.watchers.settings.role)?;
        }
        let request = request.get_ref();
        let heartbeat = request
            .heartbeat_interval
            .map(Duration::try_from)
            .transpose()
            .map_err(|_| bad_request("heartbeat_interval", "not a positive duration"))?;
        self.watchers
            .start(&self.auth, &request.resume_token, heartbeat)
    }

    /// Runs `call` while it holds one of the places for calls in flight.
    async fn limited<T>(&self, call: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
        let _in_flight = self.limit.enter()?;
        call.await
    }

    async fn login(
        &self,
        request: LoginRequest,
        client: ClientInfo,
    ) -> Result<LoginResponse, Status> {
        let username = Username::parse(request.username)?;
        let password = Password::parse(request.password)?;
        let grant = self.auth.login(&username, &password, &client).await?;
        Ok(login_response(grant))
    }

    async fn refresh(&self, request: RefreshRequest) -> Result<LoginResponse, Status> {
        let token = RefreshToken::parse(request.refresh_token)?;
        Ok(login_response(self.auth.refresh(&token).await?))
    }

    async fn logout(
        &self,
        request: LogoutRequest,
        metadata: &MetadataMap,
    ) -> Result<LogoutResponse, Status> {
        let scope = match pb::LogoutScope::try_from(request.scope) {
            Ok(pb::LogoutScope::Unspecified | pb::LogoutScope::Session) => LogoutScope::Session,
            Ok(pb::LogoutScope::User) => LogoutScope::User,
            Ok(pb::LogoutScope::OtherSessions) => LogoutScope::OtherSessions,
            Err(_) => {
                return Err(bad_request(
                    "scope",
                    &format!("scope {} is not a LogoutScope", request.scope),
                ));
            }
        };
        let raw = if request.access_token.is_empty() {
            bearer_token(metadata)?
        } else {
            request.access_token
        };
        let token = AccessToken::parse(raw)?;
        self.auth.logout(&token, scope).await?;
        Ok(LogoutResponse {})
    }

    async fn list_sessions(&self, metadata: &MetadataMap) -> Result<ListSessionsResponse, Status> {
        let token = AccessToken::parse(bearer_token(metadata)?)?;
        let sessions = self.auth.list_sessions(&token).await?;
        Ok(ListSessionsResponse {
            sessions: sessions.into_iter().map(session).collect(),
        })
    }

    async fn revoke_session(
        &self,
        request: RevokeSessionRequest,
        metadata: &MetadataMap,
    ) -> Result<RevokeSessionResponse, Status> {
        let token = AccessToken::parse(bearer_token(metadata)?)?;
        let id = SessionId::parse(&request.session_id)?;
        self.auth.revoke_session(&token, id).await?;
        Ok(RevokeSessionResponse {})
    }

    async fn validate(
        &self,
        request: ValidateTokenRequest,
    ) -> Result<ValidateTokenResponse, Status> {
        let token = AccessToken::parse(request.access_token)?;
        Ok(match self.auth.validate(&token)? {
            Validity::Valid(claims) => ValidateTokenResponse {
                valid: true,
                reason: TokenInvalidReason::Unspecified.into(),
                user_id: claims.sub.to_string(),
                username: claims.username.clone(),
                roles: claims.roles.clone(),
                jti: claims.jti.to_string(),
                issued_at: Some(timestamp(claims.iat)),
                expires_at: Some(timestamp(claims.exp)),
                session_id: claims.sid.map(|sid| sid.to_string()).unwrap_or_default(),
            },
            Validity::Invalid(reason) => ValidateTokenResponse {
                valid: false,
                reason: reason_code(reason).into(),
                ..Default::default()
            },
        })
    }
}

#[tonic::async_trait]
impl pb::auth_service_server::AuthService for AuthApi {
    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let started = call_began(Level::INFO, request.metadata());
        let client = ClientInfo {
            address: self
                .proxies
                .client_address(request.remote_addr(), request.metadata()),
            user_agent: request
                .metadata()
                .get("user-agent")
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned()),
        };
        let result = self
            .limited(AuthApi::login(self, request.into_inner(), client))
            .await;
        logged("Login", Level::INFO, started, result)
    }

    async fn refresh(
        &self,
        request: Request<RefreshRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let started = call_began(Level::INFO, request.metadata());
        let result = self
            .limited(AuthApi::refresh(self, request.into_inner()))
            .await;
        logged("Refresh", Level::INFO, started, result)
    }

    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let started = call_began(Level::INFO, request.metadata());
        let result = self
            .limited(AuthApi::list_sessions(self, request.metadata()))
            .await;
        logged("ListSessions", Level::INFO, started, result)
    }

    async fn revoke_session(
        &self,
        request: Request<RevokeSessionRequest>,
    ) -> Result<Response<RevokeSessionResponse>, Status> {
        let started = call_began(Level::INFO, request.metadata());
        let (metadata, _, message) = request.into_parts();
        let result = self
            .limited(AuthApi::revoke_session(self, message, &metadata))
            .await;
        logged("RevokeSession", Level::INFO, started, result)
    }

    async fn logout(
        &self,
        request: Request<LogoutRequest>,
    ) -> Result<Response<LogoutResponse>, Status> {
        let started = call_began(Level::INFO, request.metadata());
        let (metadata, _, message) = request.into_parts();
        let result = self
            .limited(AuthApi::logout(self, message, &metadata))
            .await;
        logged("Logout", Level::INFO, started, result)
    }

    async fn validate_token(
        &self,
        request: Request<ValidateTokenRequest>,
    ) -> Result<Response<ValidateTokenResponse>, Status> {
        let started = call_began(Level::DEBUG, request.metadata());
        let result = self.limited(self.validate(request.into_inner())).await;
        logged("ValidateToken", Level::DEBUG, started, result)
    }

    type WatchRevocationsStream = ReceiverStream<Result<RevocationEvent, Status>>;

    async fn watch_revocations(
        &self,
        request: Request<WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let started = call_began(Level::INFO, request.metadata());
        let result = self.watch(&request);
        logged("WatchRevocations", Level::INFO, started, result)
    }

    async fn get_jwks(
        &self,
        request: Request<GetJwksRequest>,
    ) -> Result<Response<GetJwksResponse>, Status> {
        let started = call_began(Level::DEBUG, request.metadata());
        let keys = self.auth.published_keys().into_iter().map(json_web_key);
        let result = self
            .limited(async {
                Ok(GetJwksResponse {
                    keys: keys.collect(),
                })
            })
            .await;
        logged("GetJwks", Level::DEBUG, started, result)
    }
}

fn login_response(grant: Grant) -> LoginResponse {
    LoginResponse {
        access_token: grant.access_token.expose_secret().to_owned(),
        token_type: "Bearer".to_owned(),
        expires_in: i64::try_from(grant.expires_in.as_secs()).unwrap_or(i64::MAX),
        expires_at: Some(timestamp(grant.expires_at)),
        user_id: grant.user_id.to_string(),
        refresh_token: grant.refresh_token.expose_secret().to_owned(),
        refresh_expires_at: Some(instant(grant.refresh_expires_at)),
        session_id: grant.session_id.to_string(),
    }
}

pub(super) fn session(listed: UserSession) -> pb::Session {
    let session = listed.session;
    pb::Session {
        session_id: session.id.to_string(),
        created_at: Some(instant(session.created_at)),
        last_refreshed_at: Some(instant(session.last_refreshed_at)),
        expires_at: Some(instant(session.expires_at)),
        client_address: session.client_address.unwrap_or_default(),
        user_agent: session.user_agent.unwrap_or_default(),
        current: listed.current,
    }
}

pub(super) fn instant(at: time::OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.unix_timestamp(),
        nanos: i32::try_from(at.nanosecond()).unwrap_or(0),
    }
}

fn json_web_key(key: PublicJwk) -> JsonWebKey {
    JsonWebKey {
        kty: PublicJwk::KTY.to_owned(),
        crv: PublicJwk::CRV.to_owned(),
        x: key.x,
        kid: key.kid,
        r#use: PublicJwk::USE.to_owned(),
        alg: PublicJwk::ALG.to_owned(),
    }
}

/// Logs the call's outcome in one line at `level` and wraps the message.
/// Login and Logout log at `info`: they are few, and an operator wants
/// each. ValidateToken, which every request of every service makes, logs
/// at `debug`: at `info` its line cost a measurable share of its
/// throughput.
fn logged<T>(
    method: &'static str,
    level: Level,
    (started, trace_id): (Instant, Option<String>),
    result: Result<T, Status>,
) -> Result<Response<T>, Status> {
    let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
    let latency_us = started.elapsed().as_micros();
    let trace_id = trace_id.as_deref();
    if level == Level::DEBUG {
        tracing::debug!(method, ?code, latency_us, trace_id, "rpc");
    } else {
        tracing::info!(method, ?code, latency_us, trace_id, "rpc");
    }
    result.map(Response::new)
}

/// When the call began, and the trace it belongs to when its line will be
/// logged at `level` (ValidateToken's, at `debug`, usually is not: then
/// its metadata is not read).
pub(super) fn call_began(level: Level, metadata: &MetadataMap) -> (Instant, Option<String>) {
    let logged = if level == Level::DEBUG {
        tracing::enabled!(Level::DEBUG)
    } else {
        tracing::enabled!(Level::INFO)
    };
    (Instant::now(), logged.then(|| trace_id(metadata)).flatten())
}

/// The claims of the caller's bearer token, when it is valid and holds
/// `role`: UNAUTHENTICATED without a valid token, PERMISSION_DENIED without
/// the role.
pub(super) fn holding_role(
    auth: &Authenticator,
    metadata: &MetadataMap,
    role: &Role,
) -> Result<Arc<Claims>, Status> {
    let invalid_token =
        |message: &str| refused(Code::Unauthenticated, Reason::TokenInvalid, message);
    let token = AccessToken::parse(bearer_token(metadata)?)
        .map_err(|err| invalid_token(&err.to_string()))?;
    match auth.authorize(Some(&token), std::slice::from_ref(role))? {
        Access::Granted(claims) => Ok(claims),
        Access::NoToken => Err(refused(
            Code::Unauthenticated,
            Reason::TokenMissing,
            "no access token",
        )),
        Access::Invalid(reason) => Err(invalid_token(&format!("the access token is {reason}"))),
        Access::MissingRole(_) => Err(refused(
            Code::PermissionDenied,
            Reason::PermissionDenied,
            &format!("the access token lacks the role {role}"),
        )),
    }
}

/// The token of an `authorization: Bearer <token>` header.
pub(super) fn bearer_token(metadata: &MetadataMap) -> Result<String, Status> {
    let missing = |message: &str| refused(Code::Unauthenticated, Reason::TokenMissing, message);
    let absent =
        || missing("no access token: set access_token or the authorization: Bearer metadata");
    let value = metadata.get("authorization").ok_or_else(absent)?;
    let value = value
        .to_str()
        .map_err(|_| missing("the authorization metadata is not text"))?;
    let (scheme, token) = value.split_once(' ').ok_or_else(absent)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(missing(
            "the authorization metadata must use the Bearer scheme",
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(absent());
    }
    Ok(token.to_owned())
}

/// The reason's name in the proto without its enum's prefix (`REVOKED`),
/// as the proxies' refusals say it.
pub fn reason_name(reason: InvalidToken) -> &'static str {
    let name = reason_code(reason).as_str_name();
    name.strip_prefix("TOKEN_INVALID_REASON_").unwrap_or(name)
}

fn reason_code(reason: InvalidToken) -> TokenInvalidReason {
    match reason {
        InvalidToken::Malformed => TokenInvalidReason::Malformed,
        InvalidToken::BadSignature => TokenInvalidReason::BadSignature,
        InvalidToken::Expired => TokenInvalidReason::Expired,
        InvalidToken::NotYetValid => TokenInvalidReason::NotYetValid,
        InvalidToken::Revoked => TokenInvalidReason::Revoked,
    }
}

fn timestamp(unix_seconds: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: i64::try_from(unix_seconds).unwrap_or(i64::MAX),
        nanos: 0,
    }
}
