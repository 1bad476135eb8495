//! [`Client`]: authd's calls as typed async functions, with TLS, a deadline
//! on every call, and retries only of the calls that are safe to repeat.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use secrecy::{ExposeSecret as _, SecretString};
use tonic::{
    Code, Request, Status, Streaming,
    metadata::MetadataValue,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};
use tonic_types::StatusExt as _;
use uuid::Uuid;

use crate::{
    Claims, InvalidToken, Validity,
    pb::{
        self, GetJwksRequest, LoginRequest, LogoutRequest, RefreshRequest, RevocationEvent,
        ValidateTokenRequest, WatchRevocationsRequest, auth_service_client::AuthServiceClient,
    },
};

/// How to reach authd.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server's address, `http://host:port` or `https://host:port`.
    pub endpoint: String,
    /// TLS settings for an `https` endpoint: the CA to trust, and a client
    /// certificate under mutual TLS.
    pub tls: Option<TlsConfig>,
    /// The deadline of each call, sent to the server as `grpc-timeout`.
    pub timeout: Duration,
    /// How long a connection may take to open.
    pub connect_timeout: Duration,
    /// How many times a call that is safe to repeat (ValidateToken,
    /// GetJwks, Logout) is tried again after UNAVAILABLE.
    pub retries: u32,
}

impl ClientConfig {
    /// The defaults for `endpoint`: no TLS, 2 s a call, 2 retries.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            tls: None,
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            retries: 2,
        }
    }

    /// The same, with `tls`.
    #[must_use]
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// TLS for the connection to authd.
#[derive(Clone, Default)]
pub struct TlsConfig {
    /// PEM of the CA certificates that sign the server's certificate.
    pub ca_pem: Option<Vec<u8>>,
    /// This client's certificate chain and key, PEM, for mutual TLS.
    pub identity: Option<(Vec<u8>, SecretString)>,
    /// The name the server's certificate must carry, when it is not the
    /// endpoint's host.
    pub domain: Option<String>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "…"))
            .field("identity", &self.identity.as_ref().map(|_| "[REDACTED]"))
            .field("domain", &self.domain)
            .finish()
    }
}

/// A call to authd failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint or TLS settings are not usable.
    #[error("cannot set up the connection to authd: {0}")]
    Config(#[source] tonic::transport::Error),
    /// authd answered with an error, or could not be reached.
    #[error("authd answered {}: {}", .0.code(), .0.message())]
    Status(#[from] Status),
    /// authd's answer lacks something it always sends.
    #[error("authd's answer is not as documented: {0}")]
    Protocol(&'static str),
}

impl ClientError {
    /// The gRPC code.
    pub fn code(&self) -> Code {
        match self {
            Self::Config(_) => Code::InvalidArgument,
            Self::Status(status) => status.code(),
            Self::Protocol(_) => Code::Internal,
        }
    }

    /// The stable reason authd gave (`google.rpc.ErrorInfo`), such as
    /// `INVALID_CREDENTIALS` or `REFRESH_TOKEN_REUSED`.
    pub fn reason(&self) -> Option<String> {
        match self {
            Self::Status(status) => status
                .get_error_details()
                .error_info()
                .map(|info| info.reason.clone()),
            _ => None,
        }
    }

    /// How long to wait before trying again, when authd said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status(status) => status
                .get_error_details()
                .retry_info()
                .and_then(|info| info.retry_delay),
            _ => None,
        }
    }
}

/// An access token and the refresh token of its session.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// The access token, to send as `authorization: Bearer …`.
    pub access_token: SecretString,
    /// When the access token expires.
    pub expires_at: SystemTime,
    /// The session's refresh token; each one works once.
    pub refresh_token: SecretString,
    /// When the refresh token lapses unless used.
    pub refresh_expires_at: SystemTime,
    /// The user.
    pub user_id: Uuid,
    /// The session.
    pub session_id: Uuid,
}

/// What a Logout ends besides the token.
pub use pb::LogoutScope;

/// A public key of authd's, as GetJwks lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The key id, as in the tokens' `kid`.
    pub kid: String,
    /// The Ed25519 public key, base64url without padding.
    pub x: String,
}

/// authd's API, typed. Cheap to clone: clones share one connection.
#[derive(Debug, Clone)]
pub struct Client {
    inner: AuthServiceClient<Channel>,
    config: Arc<ClientConfig>,
}

impl Client {
    /// Connects to `config.endpoint`.
    ///
    /// # Errors
    /// When the settings are not usable or the server cannot be reached.
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        let channel = endpoint(&config)?
            .connect()
            .await
            .map_err(ClientError::Config)?;
        Ok(Self::from_channel(channel, config))
    }

    /// A client that connects on its first call, and again whenever the
    /// connection is lost: for a service that must start while authd is
    /// down.
    ///
    /// # Errors
    /// When the settings are not usable.
    pub fn connect_lazy(config: ClientConfig) -> Result<Self, ClientError> {
        let channel = endpoint(&config)?.connect_lazy();
        Ok(Self::from_channel(channel, config))
    }

    /// A client over a channel made elsewhere.
    pub fn from_channel(channel: Channel, config: ClientConfig) -> Self {
        Self {
            inner: AuthServiceClient::new(channel),
            config: Arc::new(config),
        }
    }

    /// The settings this client was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Logs in. Never retried: a retry would count as a second attempt
    /// against the login throttle.
    ///
    /// # Errors
    /// UNAUTHENTICATED (`INVALID_CREDENTIALS`) for a wrong name or
    /// password, RESOURCE_EXHAUSTED with a retry delay when throttled, and
    /// the transport's errors.
    pub async fn login(
        &self,
        username: &str,
        password: &SecretString,
    ) -> Result<Tokens, ClientError> {
        let request = LoginRequest {
            username: username.to_owned(),
            password: password.expose_secret().to_owned(),
        };
        let response = self.inner.clone().login(self.request(request)).await?;
        tokens(response.into_inner())
    }

    /// Exchanges a refresh token for new tokens. Never retried: a refresh
    /// token works once, and a spent one coming back (beyond a few seconds
    /// of grace for an answer that was lost) ends the session.
    ///
    /// # Errors
    /// UNAUTHENTICATED (`REFRESH_TOKEN_INVALID`, `REFRESH_TOKEN_REUSED`),
    /// and the transport's errors.
    pub async fn refresh(&self, refresh_token: &SecretString) -> Result<Tokens, ClientError> {
        let request = RefreshRequest {
            refresh_token: refresh_token.expose_secret().to_owned(),
        };
        let response = self.inner.clone().refresh(self.request(request)).await?;
        tokens(response.into_inner())
    }

    /// Revokes `access_token` and ends what `scope` says; retried after
    /// UNAVAILABLE, as revoking twice is revoking once.
    ///
    /// # Errors
    /// UNAUTHENTICATED (`TOKEN_INVALID`) for a token not of this server,
    /// and the transport's errors.
    pub async fn logout(
        &self,
        access_token: &SecretString,
        scope: LogoutScope,
    ) -> Result<(), ClientError> {
        self.retrying(
            |mut inner, request| async move { inner.logout(request).await },
            || LogoutRequest {
                access_token: access_token.expose_secret().to_owned(),
                scope: scope.into(),
            },
        )
        .await?;
        Ok(())
    }

    /// Asks authd whether `access_token` is valid now.
    ///
    /// # Errors
    /// UNAVAILABLE when authd cannot tell (its revocation state is stale,
    /// or it cannot be reached), INVALID_ARGUMENT for a token over 8 KiB.
    pub async fn validate(&self, access_token: &str) -> Result<Validity, ClientError> {
        let answer = self
            .retrying(
                |mut inner, request| async move { inner.validate_token(request).await },
                || ValidateTokenRequest {
                    access_token: access_token.to_owned(),
                },
            )
            .await?;
        if !answer.valid {
            return Ok(Validity::Invalid(match answer.reason() {
                pb::TokenInvalidReason::Malformed => InvalidToken::Malformed,
                pb::TokenInvalidReason::BadSignature => InvalidToken::BadSignature,
                pb::TokenInvalidReason::Expired => InvalidToken::Expired,
                pb::TokenInvalidReason::NotYetValid => InvalidToken::NotYetValid,
                pb::TokenInvalidReason::Revoked => InvalidToken::Revoked,
                pb::TokenInvalidReason::Unspecified => {
                    return Err(ClientError::Protocol("an invalid token without a reason"));
                }
            }));
        }
        // authd verified it: its claims are the payload's, read whole.
        let claims: Claims = jsonwebtoken::dangerous::insecure_decode_claims(access_token)
            .map_err(|_| ClientError::Protocol("a valid token whose claims do not decode"))?;
        Ok(Validity::Valid(Arc::new(claims)))
    }

    /// The public keys that verify authd's tokens: pending, active and
    /// retired, as published now.
    ///
    /// # Errors
    /// The transport's errors.
    pub async fn get_jwks(&self) -> Result<Vec<PublicKey>, ClientError> {
        let answer = self
            .retrying(
                |mut inner, request| async move { inner.get_jwks(request).await },
                || GetJwksRequest {},
            )
            .await?;
        Ok(answer
            .keys
            .into_iter()
            .filter(|key| key.kty == "OKP" && key.crv == "Ed25519" && key.alg == "EdDSA")
            .map(|key| PublicKey {
                kid: key.kid,
                x: key.x,
            })
            .collect())
    }

    /// Opens a revocation stream, as the caller holding `bearer` (none:
    /// under mutual TLS, where the certificate is enough), resuming after
    /// `resume_token`, with heartbeats every `heartbeat` where the server
    /// allows. The stream has no deadline.
    ///
    /// # Errors
    /// UNAUTHENTICATED or PERMISSION_DENIED for a caller who may not
    /// watch, and the transport's errors.
    pub async fn watch_revocations(
        &self,
        bearer: Option<&SecretString>,
        resume_token: &str,
        heartbeat: Duration,
    ) -> Result<Streaming<RevocationEvent>, ClientError> {
        let mut request = Request::new(WatchRevocationsRequest {
            resume_token: resume_token.to_owned(),
            heartbeat_interval: prost_types::Duration::try_from(heartbeat).ok(),
        });
        if let Some(bearer) = bearer {
            let value = MetadataValue::try_from(format!("Bearer {}", bearer.expose_secret()))
                .map_err(|_| ClientError::Protocol("an access token that is not ASCII"))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(self
            .inner
            .clone()
            .watch_revocations(request)
            .await?
            .into_inner())
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.config.timeout);
        request
    }

    /// Makes the call, and again after UNAVAILABLE while retries are left,
    /// waiting a little longer each time.
    async fn retrying<M, T, F, Fut>(&self, call: F, message: impl Fn() -> M) -> Result<T, Status>
    where
        F: Fn(AuthServiceClient<Channel>, Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut delay = Duration::from_millis(50);
        let mut tries = 0;
        loop {
            match call(self.inner.clone(), self.request(message())).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status)
                    if status.code() == Code::Unavailable && tries < self.config.retries =>
                {
                    tries += 1;
                    tokio::time::sleep(crate::backoff::jittered(delay)).await;
                    delay *= 2;
                }
                Err(status) => return Err(status),
            }
        }
    }
}

fn endpoint(config: &ClientConfig) -> Result<Endpoint, ClientError> {
    let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
        .map_err(ClientError::Config)?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    if let Some(tls) = &config.tls {
        let mut settings = ClientTlsConfig::new();
        if let Some(ca) = &tls.ca_pem {
            settings = settings.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &tls.identity {
            settings = settings.identity(Identity::from_pem(cert, key.expose_secret()));
        }
        if let Some(domain) = &tls.domain {
            settings = settings.domain_name(domain.clone());
        }
        endpoint = endpoint.tls_config(settings).map_err(ClientError::Config)?;
    }
    Ok(endpoint)
}

fn tokens(answer: pb::LoginResponse) -> Result<Tokens, ClientError> {
    let instant = |at: Option<prost_types::Timestamp>| {
        at.and_then(|at| SystemTime::try_from(at).ok())
            .ok_or(ClientError::Protocol("a token without its expiry"))
    };
    let id = |text: &str| {
        Uuid::parse_str(text).map_err(|_| ClientError::Protocol("an id that is not a UUID"))
    };
    Ok(Tokens {
        expires_at: instant(answer.expires_at)?,
        refresh_expires_at: instant(answer.refresh_expires_at)?,
        user_id: id(&answer.user_id)?,
        session_id: id(&answer.session_id)?,
        access_token: answer.access_token.into(),
        refresh_token: answer.refresh_token.into(),
    })
}
