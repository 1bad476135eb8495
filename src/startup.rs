//! Builds the server from its settings and runs it until told to stop.

use std::{
    future::Future,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::Path,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Server, server::TcpIncoming};

use crate::{
    auth::{
        AccessTokens, Accounts, Authenticator, HashCost, HashingPriority, KeyFiles, LoginThrottle,
        PasswordPolicy, Passwords, RefreshTokens, RevocationState, SessionSettings, SigningKeys,
        ThrottleSettings, TokenSettings, VerifiedTokens, deployment,
    },
    domain::Role,
    grpc::{
        self, AdminApi, AuthApi, CallLimit, ExtAuthzApi, MetricsLayer, PageTokenKey,
        TrustedProxies, WatchSettings, admin_pb::admin_service_server::AdminServiceServer,
        pb::auth_service_server::AuthServiceServer,
    },
    http::{HttpServer, HttpSettings, Metadata},
    jobs::{
        self, database_health::Readiness, key_rotation::RotationSettings, purge::PurgeSettings,
        revocation_sync::SyncSettings,
    },
    store::{DatabaseSettings, FeedCursor, Storage as _, Store},
    telemetry::metrics::{LiveState, Meter, Metrics},
    tls::{ServerTls, TlsSettings},
};

/// The largest request message accepted. Ours are far smaller (a token is
/// at most 8 KiB); larger ones are refused before they are decoded.
const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// The largest ext_authz `CheckRequest` accepted: Envoy sends all of a
/// request's headers (60 KiB by its default limit) and, where asked, some
/// of its body; what authd does not read is skipped, not decoded.
const MAX_CHECK_REQUEST_BYTES: usize = 256 * 1024;
/// Concurrent HTTP/2 streams one client connection may open: well below
/// the limit of calls in flight, so one connection cannot take them all.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// The largest block of request headers (metadata) accepted: room for an
/// `authorization` header carrying the largest token (8 KiB) and more.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Streams the server may reset for protocol errors before it closes the
/// connection (a client provoking resets on purpose is cut off).
const MAX_LOCAL_ERROR_RESETS: usize = 256;
/// Streams a client may open and reset before they are accepted
/// ("rapid reset", CVE-2023-44487).
const MAX_PENDING_ACCEPT_RESETS: usize = 64;

/// How long a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the revocation state is trusted after it last matched the
/// store; past that, ValidateToken answers UNAVAILABLE. Catch-ups run every
/// second (PostgreSQL) or forty times a second (SQLite), so this allows at
/// least two to fail.
pub const MAX_REVOCATION_STALENESS: Duration = Duration::from_secs(3);

/// Everything `authd serve` needs to know.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The database.
    pub database: DatabaseSettings,
    /// The key-encryption key, and the signing key file of an upgrade.
    pub keys: KeyFiles,
    /// When signing keys rotate by themselves.
    pub key_rotation: RotationSettings,
    /// The HTTP listener.
    pub http: HttpSettings,
    /// Token contents and checks.
    pub tokens: TokenSettings,
    /// How long sessions live, and the refresh tokens' reuse grace.
    pub sessions: SessionSettings,
    /// Argon2id cost of new password hashes.
    pub password_cost: HashCost,
    /// How the password-hashing threads share the CPU.
    pub hashing_priority: HashingPriority,
    /// The purge task.
    pub purge: PurgeSettings,
    /// How long the server keeps serving after a shutdown begins, with
    /// health NOT_SERVING, so load balancers stop sending first.
    pub shutdown_delay: Duration,
    /// How long shutdown waits for calls in flight.
    pub shutdown_grace_period: Duration,
    /// How long one call may run before it is cancelled.
    pub request_timeout: Duration,
    /// Bytes of verified tokens kept, so they skip signature checks (0:
    /// none).
    pub token_cache_bytes: u64,
    /// How the in-memory revocation state is kept current.
    pub revocation_sync: SyncSettings,
    /// Throttling of failed Logins.
    pub login_throttle: ThrottleSettings,
    /// Proxies whose `x-forwarded-for` names the client a Login is
    /// counted and recorded under.
    pub trusted_proxies: TrustedProxies,
    /// The role a token must carry to call AdminService.
    pub admin_role: Role,
    /// What a password set through AdminService must be like.
    pub password_policy: PasswordPolicy,
    /// AuthService calls in flight at most, over all connections; more are
    /// refused with RESOURCE_EXHAUSTED.
    pub max_calls_in_flight: usize,
    /// TLS (and mutual TLS); plaintext when `None`.
    pub tls: Option<TlsSettings>,
    /// Whether Prometheus metrics are counted and served.
    pub metrics: bool,
    /// Who may follow WatchRevocations, and its heartbeat.
    pub watch: WatchSettings,
}

impl ServeSettings {
    /// Where authd listens by default: loopback only, since plaintext.
    pub const DEFAULT_LISTEN: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 50051));
    /// The default shutdown delay: a load balancer probing every few
    /// seconds has noticed by then.
    pub const DEFAULT_SHUTDOWN_DELAY: Duration = Duration::from_secs(5);
    /// The default shutdown grace period.
    pub const DEFAULT_SHUTDOWN_GRACE_PERIOD: Duration = Duration::from_secs(10);
    /// The default limit on one call's run time.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default memory for verified tokens.
    pub const DEFAULT_TOKEN_CACHE_BYTES: u64 = 32 << 20;
    /// The role AdminService requires unless told otherwise.
    pub const DEFAULT_ADMIN_ROLE: &str = "authd:admin";
    /// The default limit on AuthService calls in flight.
    pub const DEFAULT_MAX_CALLS_IN_FLIGHT: usize = 1024;

    /// The name of the key-encryption key file in the data directory.
    pub const KEY_ENCRYPTION_KEY_FILE: &str = "key-encryption-key";
    /// The name of the signing key file read on an upgrade.
    pub const SIGNING_KEY_FILE: &str = "signing-key.pem";

    /// authd's defaults, on `database`, with local state in `data_dir`:
    /// the one place every default is written (the command line, the tests
    /// and the load generator start from here).
    pub fn new(database: DatabaseSettings, data_dir: &Path) -> Self {
        let tokens = TokenSettings::default();
        let login_throttle = ThrottleSettings::default();
        let http = HttpSettings::default();
        Self {
            listen: Self::DEFAULT_LISTEN,
            database,
            keys: KeyFiles {
                encryption_key_file: data_dir.join(Self::KEY_ENCRYPTION_KEY_FILE),
                signing_key_file: data_dir.join(Self::SIGNING_KEY_FILE),
            },
            key_rotation: RotationSettings::new(default_publish_lead(http.jwks_max_age)),
            http,
            purge: PurgeSettings::new(&tokens, &login_throttle),
            tokens,
            sessions: SessionSettings::default(),
            password_cost: HashCost::default(),
            hashing_priority: HashingPriority::default(),
            shutdown_delay: Self::DEFAULT_SHUTDOWN_DELAY,
            shutdown_grace_period: Self::DEFAULT_SHUTDOWN_GRACE_PERIOD,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            token_cache_bytes: Self::DEFAULT_TOKEN_CACHE_BYTES,
            revocation_sync: SyncSettings::default(),
            login_throttle,
            trusted_proxies: TrustedProxies::default(),
            admin_role: Role::parse(Self::DEFAULT_ADMIN_ROLE)
                .unwrap_or_else(|_| unreachable!("the default admin role is a role")),
            password_policy: PasswordPolicy::default(),
            max_calls_in_flight: Self::DEFAULT_MAX_CALLS_IN_FLIGHT,
            tls: None,
            metrics: true,
            watch: WatchSettings {
                role: Role::parse(WatchSettings::DEFAULT_ROLE)
                    .unwrap_or_else(|_| unreachable!("the default watch role is a role")),
                heartbeat: WatchSettings::DEFAULT_HEARTBEAT,
                max_watchers: WatchSettings::DEFAULT_MAX_WATCHERS,
            },
        }
    }
}

/// How long a new key is published before it signs unless told otherwise:
/// twice the JWKS cache lifetime, so every client that caches the JWKS has
/// fetched it by then.
pub fn default_publish_lead(jwks_max_age: Duration) -> Duration {
    jwks_max_age * 2
}

/// A server that is bound and connected, ready to run.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    http: Option<HttpServer>,
    store: Store,
    signing_keys: Arc<SigningKeys>,
    auth: Arc<Authenticator>,
    /// The account use cases AdminService serves.
    accounts: Accounts,
    revocations: Arc<RevocationState>,
    /// Where the start-up load of the revocations left off.
    cursor: FeedCursor,
    /// The TLS configuration read from the settings' files.
    tls: Option<Arc<ServerTls>>,
    /// `None` when metrics are off.
    metrics: Option<Metrics>,
    settings: ServeSettings,
}

impl Application {
    /// Connects to the database and migrates it, opens the signing keys,
    /// and binds the listeners.
    ///
    /// # Errors
    /// When any of those fails; the message says which.
    pub async fn build(settings: ServeSettings) -> anyhow::Result<Self> {
        let tls = settings
            .tls
            .as_ref()
            .map(ServerTls::load)
            .transpose()?
            .map(Arc::new);
        let http_tls = match (&settings.http.listen, &tls) {
            (Some(_), Some(tls)) => Some(tls.http_config()),
            _ => None,
        };
        let store = Store::connect(&settings.database).await?;
        store
            .migrate()
            .await
            .context("cannot migrate the database")?;
        let deployment = deployment::join(&store, &settings.tokens).await?;
        // A retired key verifies as long as a token any instance signed with
        // it can be current.
        let retention = deployment::key_retention(
            Some(&deployment),
            settings.tokens.ttl,
            settings.tokens.leeway,
        );
        let signing_keys =
            Arc::new(SigningKeys::open(store.clone(), &settings.keys, retention).await?);
        let metrics = settings
            .metrics
            .then(|| Metrics::new(&grpc::served_methods()?).map_err(anyhow::Error::from))
            .transpose()
            .context("cannot set up the metrics")?;
        let meter = metrics.as_ref().map_or_else(Meter::off, Metrics::meter);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let passwords = Passwords::new(settings.password_cost, cores, settings.hashing_priority)?
            .metered(meter.clone());
        tracing::info!(
            threads = cores,
            priority = settings.hashing_priority.as_str(),
            "started the password hashing threads"
        );
        let tokens = AccessTokens::new(signing_keys.ring(), settings.tokens.clone());
        let verified =
            VerifiedTokens::new(settings.token_cache_bytes, settings.tokens.leeway.as_secs());

        let revocations = Arc::new(
            RevocationState::new(MAX_REVOCATION_STALENESS)
                .holding_past_expiry(settings.tokens.leeway),
        );
        let loading = std::time::Instant::now();
        let cursor = store
            .load_revocations(&mut |revocation| revocations.apply(revocation))
            .await
            .context("cannot load the revocations")?;
        revocations.apply_revoked_keys(signing_keys.revoked());
        revocations.mark_synced(loading);
        let held = revocations.held();
        tracing::info!(
            revoked_tokens = held.tokens,
            ended_sessions = held.sessions,
            restricted_users = held.users,
            took = ?loading.elapsed(),
            "loaded the revocation state"
        );

        let throttle = LoginThrottle::new(settings.login_throttle.clone(), store.clone());
        let refresh_tokens =
            RefreshTokens::new(signing_keys.refresh_token_key(), settings.sessions.clone());
        let accounts = Accounts::new(store.clone(), passwords.clone(), settings.password_policy)
            .applying_to(revocations.clone());
        if let Some(metrics) = &metrics {
            metrics.watch(LiveState {
                revocations: revocations.clone(),
                passwords: passwords.clone(),
                keys: signing_keys.clone(),
            })?;
        }
        let auth = Arc::new(
            Authenticator::new(
                store.clone(),
                (tokens, refresh_tokens),
                verified,
                passwords,
                throttle,
                revocations.clone(),
            )
            .metered(meter),
        );
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let http = match settings.http.listen {
            Some(addr) => Some(HttpServer::bind(addr, &settings.http, http_tls).await?),
            None => None,
        };
        Ok(Self {
            listener,
            http,
            store,
            signing_keys,
            auth,
            accounts,
            revocations,
            cursor,
            tls,
            metrics,
            settings,
        })
    }

    /// The server's TLS configuration, when it serves TLS.
    pub fn tls(&self) -> Option<&Arc<ServerTls>> {
        self.tls.as_ref()
    }

    /// The store the server runs on.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The signing keys the server follows.
    pub fn signing_keys(&self) -> &Arc<SigningKeys> {
        &self.signing_keys
    }

    /// The address the server listens on (useful with port 0).
    ///
    /// # Errors
    /// When the socket cannot tell, which does not happen on a bound socket.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The address of the HTTP listener, when there is one.
    ///
    /// # Errors
    /// When the socket cannot tell, which does not happen on a bound socket.
    pub fn http_addr(&self) -> std::io::Result<Option<SocketAddr>> {
        self.http.as_ref().map(HttpServer::local_addr).transpose()
    }

    /// Serves until `shutdown` resolves, then: health goes NOT_SERVING and
    /// calls are still served for the shutdown delay; then the listeners
    /// close, calls in flight get the grace period to finish, and the
    /// background tasks stop.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            http,
            store,
            signing_keys,
            auth,
            accounts,
            revocations,
            cursor,
            tls,
            metrics,
            settings,
        } = self;
        let meter = metrics.as_ref().map_or_else(Meter::off, Metrics::meter);
        let pages = PageTokenKey::new(signing_keys.page_token_key());
        let addr = listener.local_addr()?;

        let (reporter, health) = tonic_health::server::health_reporter();
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        let stop_jobs = CancellationToken::new();
        let purge = tokio::spawn(jobs::purge::run(
            store.clone(),
            settings.purge,
            meter.clone(),
            stop_jobs.clone(),
        ));
        let revocation_sync = tokio::spawn(jobs::revocation_sync::run(
            store.clone(),
            revocations,
            signing_keys.clone(),
            cursor,
            settings.revocation_sync,
            meter,
            stop_jobs.clone(),
        ));
        let key_rotation = tokio::spawn(jobs::key_rotation::run(
            signing_keys,
            settings.key_rotation,
            stop_jobs.clone(),
        ));
        let readiness = Readiness::default();
        let stop_health = CancellationToken::new();
        let health_watch = tokio::spawn(jobs::database_health::watch(
            store.clone(),
            reporter,
            readiness.clone(),
            stop_health.clone(),
        ));

        let draining = CancellationToken::new();
        let begin_shutdown = {
            let draining = draining.clone();
            let delay = settings.shutdown_delay;
            async move {
                shutdown.await;
                tracing::info!(
                    delay = %humantime::format_duration(delay),
                    "shutting down: health NOT_SERVING, still serving for the delay"
                );
                // The health task reports NOT_SERVING as it returns. Load
                // balancers see it at their next probe and stop sending;
                // until then calls keep arriving and are served, with the
                // revocation state still kept current.
                stop_health.cancel();
                let _ = health_watch.await;
                tokio::time::sleep(delay).await;
                tracing::info!("closing the listeners, draining calls in flight");
                draining.cancel();
            }
        };

        let http_addr = http.as_ref().map(HttpServer::local_addr).transpose()?;
        let http_server = http.map(|http| {
            tokio::spawn(http.serve(
                auth.clone(),
                readiness,
                Metadata {
                    issuer: settings.tokens.issuer.clone(),
                },
                metrics.clone(),
                draining.clone(),
                settings.shutdown_grace_period,
            ))
        });

        let transport = settings.tls.as_ref().map_or("plaintext", TlsSettings::mode);
        tracing::info!(
            %addr,
            http = %http_addr.map_or_else(|| "off".to_owned(), |a| a.to_string()),
            database = store.backend_name(),
            transport,
            "authd is serving"
        );
        let limit = CallLimit::new(settings.max_calls_in_flight);
        let ext_authz = ExtAuthzApi::new(auth.clone(), limit.clone(), MAX_CHECK_REQUEST_BYTES);
        let admin = AdminServiceServer::new(AdminApi::new(
            auth.clone(),
            accounts,
            settings.admin_role.clone(),
            pages,
            limit.clone(),
        ))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
        let api = AuthServiceServer::new(AuthApi::new(
            auth,
            limit,
            settings.trusted_proxies,
            settings.watch,
            draining.clone(),
        ))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
        let router = Server::builder()
            // tonic leaves these to hyper's defaults; an auth service states
            // its own.
            .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
            .http2_max_header_list_size(Some(MAX_HEADER_LIST_BYTES))
            .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
            .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESETS))
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .timeout(settings.request_timeout)
            .layer(MetricsLayer::new(metrics.as_ref().map(Metrics::grpc)))
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(api)
            .add_service(admin)
            .add_service(ext_authz);
        let incoming = TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_secs(60)));
        // Listened for here, before anything can send it, TLS or not: a
        // SIGHUP with no handler would end the process.
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .inspect_err(|err| tracing::warn!(error = %err, "cannot listen for SIGHUP"))
            .ok();
        let tls_reload = tokio::spawn(jobs::tls_reload::run(
            tls.clone(),
            hangup,
            stop_jobs.clone(),
        ));
        let server: std::pin::Pin<Box<dyn Future<Output = _> + Send>> = match &tls {
            None => Box::pin(router.serve_with_incoming_shutdown(incoming, begin_shutdown)),
            Some(tls) => Box::pin(router.serve_with_incoming_shutdown(
                tls.accept(incoming, TLS_HANDSHAKE_TIMEOUT, draining.clone()),
                begin_shutdown,
            )),
        };
        let grace = settings.shutdown_grace_period;
        let served = tokio::select! {
            served = server => served.context("the server failed"),
            () = async { draining.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace = %humantime::format_duration(grace), "calls still in flight after the grace period; dropping them");
                Ok(())
            }
        };
        stop_jobs.cancel();
        draining.cancel();
        let _ = purge.await;
        let _ = revocation_sync.await;
        let _ = key_rotation.await;
        let _ = tls_reload.await;
        if let Some(http_server) = http_server {
            let _ = http_server.await;
        }
        if tokio::time::timeout(Duration::from_secs(1), store.close())
            .await
            .is_err()
        {
            tracing::warn!("database connections still busy at exit");
        }
        tracing::info!("authd stopped");
        served
    }
}

/// Server reflection over our services and the health service, so grpcurl
/// and other tools need no proto files.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(grpc::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(grpc::EXT_AUTHZ_FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}
