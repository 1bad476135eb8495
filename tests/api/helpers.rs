//! Test harness: a fresh database per test, the service on port 0, typed
//! clients, a way to forge tokens with the service's own key, and a proxy
//! that can cut the service off from its database.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use authd::{
    auth::{Accounts, HashingPriority, PasswordPolicy, Passwords, SigningKey, SigningKeys},
    domain::{Password, Role, UserRef, Username},
    grpc::{
        admin_pb::admin_service_client::AdminServiceClient,
        pb::{
            LoginRequest, LoginResponse, LogoutRequest, ValidateTokenRequest,
            ValidateTokenResponse, auth_service_client::AuthServiceClient,
        },
    },
    jobs::purge::PurgeSettings,
    startup::{Application, ServeSettings},
    store::{DatabaseSettings, Storage as _, Store},
};
use sqlx::{Connection as _, PgConnection, PgPool, SqlitePool};
use time::OffsetDateTime;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The storage backends every behaviour is checked on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Postgres,
    Sqlite,
}

/// Declares the listed tests, each an `async fn(Backend)` of the module,
/// once per backend: `postgres::name` and `sqlite::name`.
macro_rules! on_both_backends {
    ($($test:ident),+ $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(crate::helpers::Backend::Postgres).await
                }
            )+
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(crate::helpers::Backend::Sqlite).await
                }
            )+
        }
    };
}
pub(crate) use on_both_backends;

/// The PostgreSQL server the tests create their databases on. Never
/// skipped: without it the PostgreSQL half of the suite fails.
/// `message` with `authorization: Bearer <token>` metadata.
pub(crate) fn bearer<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

pub(crate) fn server_url() -> url::Url {
    let raw = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    url::Url::parse(&raw).expect("DATABASE_URL is a URL")
}

/// The test PgBouncer (transaction mode) that scripts/test starts, from
/// `AUTHD_PGBOUNCER_URL`; `None`, after saying so, where it could not be
/// installed (`AUTHD_PGBOUNCER_SKIP` says why).
pub(crate) fn pgbouncer_url() -> Option<url::Url> {
    if let Ok(raw) = std::env::var("AUTHD_PGBOUNCER_URL") {
        return Some(url::Url::parse(&raw).expect("AUTHD_PGBOUNCER_URL is a URL"));
    }
    match std::env::var("AUTHD_PGBOUNCER_SKIP") {
        Ok(why) => {
            eprintln!("SKIPPED: no PgBouncer to test through: {why}");
            None
        }
        Err(_) => panic!(
            "no PgBouncer: set AUTHD_PGBOUNCER_URL to one in transaction mode \
             (scripts/test starts one), or AUTHD_PGBOUNCER_SKIP to say why there is none"
        ),
    }
}

/// A database of its own for one test, dropped when the test ends: a
/// PostgreSQL database on the test server, or an SQLite file in a
/// directory of its own.
pub(crate) enum TestDb {
    Postgres { name: String },
    Sqlite { dir: tempfile::TempDir },
}

impl TestDb {
    pub(crate) async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => {
                let name = format!("authd_test_{}", uuid::Uuid::new_v4().simple());
                let mut admin = PgConnection::connect(server_url().as_str())
                    .await
                    .expect("the test PostgreSQL server answers (set DATABASE_URL)");
                sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                admin.close().await.unwrap();
                Self::Postgres { name }
            }
            Backend::Sqlite => Self::Sqlite {
                dir: tempfile::tempdir().unwrap(),
            },
        }
    }

    pub(crate) fn url(&self) -> String {
        match self {
            Self::Postgres { .. } => self.url_via(None),
            Self::Sqlite { dir } => format!("sqlite://{}", dir.path().join("authd.db").display()),
        }
    }

    /// The PostgreSQL database's URL through the pooler at `pooler`.
    pub(crate) fn url_through(&self, pooler: &url::Url) -> String {
        let Self::Postgres { name } = self else {
            panic!("only a PostgreSQL database is behind a pooler");
        };
        let mut url = pooler.clone();
        url.set_path(name);
        url.to_string()
    }

    /// The PostgreSQL database's URL, through `port` instead of the
    /// server's own.
    pub(crate) fn url_via(&self, port: Option<u16>) -> String {
        let Self::Postgres { name } = self else {
            panic!("only a PostgreSQL database is reached through a port");
        };
        let mut url = server_url();
        url.set_path(name);
        if let Some(port) = port {
            url.set_port(Some(port)).unwrap();
        }
        url.to_string()
    }

    /// The store authd itself would open (migrated).
    pub(crate) async fn store(&self) -> Store {
        let store = Store::connect(&DatabaseSettings::new(self.url().parse().unwrap()))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        store
    }

    /// A raw connection pool, for the test to look at or poke the tables.
    pub(crate) async fn sql(&self) -> TestSql {
        match self {
            Self::Postgres { .. } => TestSql::Postgres(PgPool::connect(&self.url()).await.unwrap()),
            Self::Sqlite { .. } => TestSql::Sqlite(SqlitePool::connect(&self.url()).await.unwrap()),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Self::Postgres { name } = self else {
            return;
        };
        let name = name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on:
        // use a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(server_url().as_str()).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "drop database if exists {name} with (force)"
                    )))
                    .execute(&mut admin)
                    .await;
                }
            });
        })
        .join();
    }
}

/// Raw SQL on a test database, for what the API does not show. Instants
/// are Unix seconds on both sides.
pub(crate) enum TestSql {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl TestSql {
    /// Every stored signing key: its kid and its sealed private half.
    pub(crate) async fn sealed_keys(&self) -> Vec<(String, Vec<u8>)> {
        let sql = "select kid, sealed_private_key from signing_keys order by kid";
        match self {
            Self::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
            Self::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
        }
    }

    pub(crate) async fn revoked_rows(&self) -> i64 {
        let sql = "select count(*) from revoked_tokens";
        match self {
            Self::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
            Self::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        }
    }

    /// The `user_id` and `expires_at` of the one revocation there is.
    pub(crate) async fn only_revocation(&self) -> (uuid::Uuid, i64) {
        let sql = "select user_id, expires_at from revoked_tokens";
        match self {
            Self::Postgres(pool) => {
                let (user, at): (uuid::Uuid, OffsetDateTime) =
                    sqlx::query_as(sql).fetch_one(pool).await.unwrap();
                (user, at.unix_timestamp())
            }
            Self::Sqlite(pool) => sqlx::query_as(sql).fetch_one(pool).await.unwrap(),
        }
    }

    /// Runs `sql`, written to read the same on both backends.
    pub(crate) async fn execute(&self, sql: &str) -> u64 {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            Self::Postgres(pool) => sqlx::query(sql)
                .execute(pool)
                .await
                .unwrap()
                .rows_affected(),
            Self::Sqlite(pool) => sqlx::query(sql)
                .execute(pool)
                .await
                .unwrap()
                .rows_affected(),
        }
    }

    /// The one `bigint` that `sql` selects.
    pub(crate) async fn scalar(&self, sql: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            Self::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
            Self::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        }
    }

    /// Every stored value of every session, as text: what a copy of the
    /// table would give away.
    pub(crate) async fn session_dump(&self) -> Vec<String> {
        let sql = "select * from sessions";
        let mut values = Vec::new();
        match self {
            Self::Postgres(pool) => {
                use sqlx::{Row as _, ValueRef as _};
                for row in sqlx::query(sql).fetch_all(pool).await.unwrap() {
                    for index in 0..row.len() {
                        let raw = row.try_get_raw(index).unwrap();
                        if !raw.is_null() {
                            values.push(format!("{:?}", raw.as_bytes().unwrap_or_default()));
                        }
                    }
                    values.push(format!("{row:?}"));
                }
            }
            Self::Sqlite(pool) => {
                use sqlx::Row as _;
                for row in sqlx::query(sql).fetch_all(pool).await.unwrap() {
                    for index in 0..row.len() {
                        if let Ok(Some(bytes)) = row.try_get::<Option<Vec<u8>>, _>(index) {
                            values.push(format!("{bytes:?}"));
                        }
                        if let Ok(Some(text)) = row.try_get::<Option<String>, _>(index) {
                            values.push(text);
                        }
                    }
                }
            }
        }
        values
    }

    /// Sets every user's cut-off to `at`.
    pub(crate) async fn set_cutoff(&self, at: OffsetDateTime) {
        let sql = "update users set tokens_valid_after = $1";
        match self {
            Self::Postgres(pool) => sqlx::query(sql).bind(at).execute(pool).await.map(drop),
            Self::Sqlite(pool) => sqlx::query(sql)
                .bind(at.unix_timestamp())
                .execute(pool)
                .await
                .map(drop),
        }
        .unwrap();
    }
}

/// Writes `count` revocations of new tokens of new users, through the
/// store, each kept until `expires_at`.
pub(crate) async fn insert_revocations(store: &Store, count: usize, expires_at: OffsetDateTime) {
    for _ in 0..count {
        let written = store
            .revoke(
                uuid::Uuid::new_v4(),
                authd::domain::UserId::generate(),
                expires_at,
                None,
            )
            .await
            .unwrap();
        assert!(written);
    }
}

/// Settings for a test server: port 0, the given database, key files in
/// `data_dir`.
pub(crate) fn settings(database_url: String, data_dir: &Path) -> ServeSettings {
    let defaults = ServeSettings::new(
        DatabaseSettings::new(database_url.parse().unwrap()),
        data_dir,
    );
    // Port 0, a purge that stays out of the tests' way unless they call
    // it, a shorter grace and a smaller cache; the rest as authd runs.
    ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        http: authd::http::HttpSettings {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            ..defaults.http.clone()
        },
        purge: PurgeSettings {
            interval: Duration::from_secs(3600),
            ..defaults.purge
        },
        shutdown_delay: Duration::ZERO,
        shutdown_grace_period: Duration::from_secs(5),
        token_cache_bytes: 1 << 20,
        ..defaults
    }
}

/// A running server and what a test needs around it.
pub(crate) struct TestApp {
    pub addr: std::net::SocketAddr,
    pub client: AuthServiceClient<Channel>,
    pub admin: AdminServiceClient<Channel>,
    pub health: HealthClient<Channel>,
    /// The HTTP listener's address, when it has one.
    pub http_addr: Option<SocketAddr>,
    /// The signing key file the server started from (see [`TestApp::spawn`]).
    pub key_file: PathBuf,
    /// The signing keys the server follows.
    pub keys: Arc<SigningKeys>,
    /// Its TLS configuration, when it serves TLS.
    pub tls: Option<Arc<authd::tls::ServerTls>>,
    pub settings: ServeSettings,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// Starts a server. Its database gets the key of the signing key file
    /// as its first key (written first when missing), as on an upgrade, so
    /// that tests can forge tokens with it.
    pub(crate) async fn spawn(settings: ServeSettings) -> Self {
        SigningKey::load_or_generate(&settings.keys.signing_key_file).unwrap();
        let app = Application::build(settings.clone())
            .await
            .expect("the app builds");
        let addr = app.local_addr().unwrap();
        let http_addr = app.http_addr().unwrap();
        let keys = app.signing_keys().clone();
        let tls = app.tls().cloned();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        // Lazy: a server on TLS refuses this plaintext channel, and its
        // tests make their own.
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        Self {
            addr,
            client: AuthServiceClient::new(channel.clone()),
            admin: AdminServiceClient::new(channel.clone()),
            health: HealthClient::new(channel),
            http_addr,
            key_file: settings.keys.signing_key_file.clone(),
            keys,
            tls,
            settings,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    /// A client of its own, connecting from `local` (any of 127.0.0.0/8):
    /// to be another client address.
    pub(crate) async fn client_from(&self, local: &str) -> AuthServiceClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .local_address(Some(local.parse().unwrap()))
            .connect()
            .await
            .unwrap();
        AuthServiceClient::new(channel)
    }

    /// Begins a shutdown the way SIGTERM does, and hands back the server
    /// task, to wait for or abort.
    pub(crate) fn begin_stop(&mut self) -> JoinHandle<anyhow::Result<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.handle.take().expect("a running server")
    }

    /// Shuts the server down the way SIGTERM does and waits for it.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap().expect("the server stops cleanly");
        }
    }

    pub(crate) async fn login(
        &mut self,
        username: &str,
        password: &str,
    ) -> Result<LoginResponse, tonic::Status> {
        self.client
            .login(LoginRequest {
                username: username.to_owned(),
                password: password.to_owned(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub(crate) async fn logout(&mut self, token: &str) -> Result<(), tonic::Status> {
        self.client
            .logout(LogoutRequest {
                access_token: token.to_owned(),
                ..Default::default()
            })
            .await
            .map(|_| ())
    }

    pub(crate) async fn refresh(&mut self, token: &str) -> Result<LoginResponse, tonic::Status> {
        self.client
            .refresh(authd::grpc::pb::RefreshRequest {
                refresh_token: token.to_owned(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub(crate) async fn validate(&mut self, token: &str) -> ValidateTokenResponse {
        self.try_validate(token)
            .await
            .expect("ValidateToken answers OK")
    }

    pub(crate) async fn try_validate(
        &mut self,
        token: &str,
    ) -> Result<ValidateTokenResponse, tonic::Status> {
        self.client
            .validate_token(ValidateTokenRequest {
                access_token: token.to_owned(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// The key set GetJwks publishes.
    pub(crate) async fn jwks(&mut self) -> Vec<authd::grpc::pb::JsonWebKey> {
        self.client
            .get_jwks(authd::grpc::pb::GetJwksRequest {})
            .await
            .expect("GetJwks answers OK")
            .into_inner()
            .keys
    }

    /// Waits, at most 5 s, until ValidateToken says `token` is revoked:
    /// for a change made by another process (the CLI, another instance),
    /// which reaches this one by notification or catch-up.
    pub(crate) async fn eventually_revoked(&mut self, token: &str) {
        self.eventually(token, |answer| {
            answer.reason() == authd::grpc::pb::TokenInvalidReason::Revoked
        })
        .await;
    }

    /// Waits, at most 5 s, until ValidateToken says `token` is valid.
    pub(crate) async fn eventually_valid(&mut self, token: &str) {
        self.eventually(token, |answer| answer.valid).await;
    }

    /// Waits, at most 5 s, until ValidateToken says `token` is invalid for
    /// `reason`.
    pub(crate) async fn eventually_invalid(
        &mut self,
        token: &str,
        reason: authd::grpc::pb::TokenInvalidReason,
    ) {
        self.eventually(token, |answer| !answer.valid && answer.reason() == reason)
            .await;
    }

    /// The kids of GetJwks, in order.
    pub(crate) async fn published_kids(&mut self) -> Vec<String> {
        self.jwks().await.into_iter().map(|key| key.kid).collect()
    }

    /// An HTTP request to the HTTP listener.
    pub(crate) async fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> HttpAnswer {
        let addr = self.http_addr.expect("the server has an HTTP listener");
        http_request(addr, method, path, headers).await
    }

    async fn eventually(&mut self, token: &str, wanted: impl Fn(&ValidateTokenResponse) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let answer = self.try_validate(token).await;
            if answer.as_ref().is_ok_and(&wanted) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "ValidateToken still answers {answer:?} after 5 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(crate) async fn health(&mut self, service: &str) -> ServingStatus {
        let response = self
            .health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        response.status()
    }

    /// Waits, at most 15 s, until the health of `service` is `wanted`.
    pub(crate) async fn wait_for_health(&mut self, service: &str, wanted: ServingStatus) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if self.health(service).await == wanted {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "health never became {wanted:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What an HTTP request got back.
#[derive(Debug)]
pub(crate) struct HttpAnswer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl HttpAnswer {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map_or("", |value| value.to_str().unwrap())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// One HTTP/1.1 request over a connection of its own.
pub(crate) async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpAnswer {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    send(&mut sender, addr, method, path, headers).await
}

/// One plaintext HTTP/1.1 request; `None` when no answer comes (the
/// connection is refused or closed).
pub(crate) async fn try_http_request(addr: SocketAddr, method: &str, path: &str) -> Option<u16> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .ok()?;
    tokio::spawn(connection);
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .ok()?;
    Some(sender.send_request(request).await.ok()?.status().as_u16())
}

/// Sends one request on `sender`.
pub(crate) async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<hyper::body::Bytes>>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpAnswer {
    use http_body_util::BodyExt as _;
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(http_body_util::Empty::new()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    HttpAnswer {
        status,
        headers,
        body,
    }
}

/// A test database with one server in front of it.
pub(crate) struct World {
    pub db: TestDb,
    pub dir: tempfile::TempDir,
    pub app: TestApp,
    pub accounts: Accounts,
    pub store: Store,
    pub sql: TestSql,
}

impl World {
    pub(crate) async fn new(backend: Backend) -> Self {
        Self::with(backend, |_| {}).await
    }

    /// A world whose server runs with the test settings as `tweak` leaves
    /// them.
    pub(crate) async fn with(backend: Backend, tweak: impl FnOnce(&mut ServeSettings)) -> Self {
        let db = TestDb::new(backend).await;
        let url = db.url();
        Self::serving(db, url, tweak).await
    }

    /// A world on PostgreSQL whose server reaches its database through the
    /// test PgBouncer in transaction mode, and PostgreSQL itself for LISTEN
    /// and migrations when `direct`. `None` (after saying why) where
    /// PgBouncer could not be installed.
    pub(crate) async fn through_pooler(direct: bool) -> Option<Self> {
        let pooler = pgbouncer_url()?;
        let db = TestDb::new(Backend::Postgres).await;
        let url = db.url_through(&pooler);
        let direct_url = db.url();
        Some(
            Self::serving(db, url, |s| {
                s.database.pooler = authd::store::DatabasePooler::Transaction;
                s.database.direct_url = direct.then(|| direct_url.into());
            })
            .await,
        )
    }

    /// A world on PostgreSQL whose server reaches its database through
    /// `proxy`.
    pub(crate) async fn behind(proxy: &DbProxy) -> Self {
        Self::behind_with(proxy, |_| {}).await
    }

    /// [`World::behind`], with the settings as `tweak` leaves them.
    pub(crate) async fn behind_with(
        proxy: &DbProxy,
        tweak: impl FnOnce(&mut ServeSettings),
    ) -> Self {
        let db = TestDb::new(Backend::Postgres).await;
        let url = db.url_via(Some(proxy.port));
        Self::serving(db, url, tweak).await
    }

    async fn serving(db: TestDb, url: String, tweak: impl FnOnce(&mut ServeSettings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = settings(url, dir.path());
        tweak(&mut settings);
        let app = TestApp::spawn(settings).await;
        let store = db.store().await;
        let accounts = Accounts::new(
            store.clone(),
            // The server's cost, so that its checks cost what the test set.
            Passwords::new(app.settings.password_cost, 2, HashingPriority::default()).unwrap(),
            PasswordPolicy::default(),
        );
        let sql = db.sql().await;
        Self {
            db,
            dir,
            app,
            accounts,
            store,
            sql,
        }
    }

    /// The stored password hash of `name`.
    pub(crate) async fn password_hash(&self, name: &str) -> String {
        let name = Username::parse(name).unwrap();
        let user = self.store.find_user(&UserRef::Name(name)).await.unwrap();
        user.expect("the user exists").password_hash
    }

    /// Replaces the stored password hash of `name` by `hash`, as a Login
    /// that re-hashes does.
    pub(crate) async fn set_password_hash(&self, name: &str, hash: &str) {
        let name = Username::parse(name).unwrap();
        let user = self.store.find_user(&UserRef::Name(name)).await.unwrap();
        let user = user.expect("the user exists");
        let replaced = self
            .store
            .replace_password_hash(user.id, &user.password_hash, hash)
            .await
            .unwrap();
        assert!(replaced);
    }

    pub(crate) async fn add_user(&self, name: &str, password: &str, roles: &[&str]) {
        let roles: Vec<Role> = roles.iter().map(|r| Role::parse(*r).unwrap()).collect();
        self.accounts
            .add(
                &Username::parse(name).unwrap(),
                &Password::parse(password).unwrap(),
                &roles,
            )
            .await
            .unwrap();
    }

    /// Adds `alice` and logs her in.
    pub(crate) async fn alice_token(&mut self) -> LoginResponse {
        self.add_user("alice", "correct horse battery", &["reader"])
            .await;
        self.app
            .login("alice", "correct horse battery")
            .await
            .unwrap()
    }

    /// [`World::alice_token`], and a second Login of alice, logged out.
    pub(crate) async fn alice_token_and_a_logged_out_one(
        &mut self,
    ) -> (LoginResponse, LoginResponse) {
        let live = self.alice_token().await;
        let logged_out = self
            .app
            .login("alice", "correct horse battery")
            .await
            .unwrap();
        self.app.logout(&logged_out.access_token).await.unwrap();
        (live, logged_out)
    }

    pub(crate) async fn revoked_rows(&self) -> i64 {
        self.sql.revoked_rows().await
    }

    /// Another server on the same database, with the same key files: a
    /// second instance of the deployment.
    pub(crate) async fn second_app(&self) -> TestApp {
        TestApp::spawn(self.app.settings.clone()).await
    }
}

/// What a [`DbProxy`] does with the bytes it is given.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Link {
    /// Forwards both ways.
    Up,
    /// Drops every connection and refuses new ones.
    Cut,
    /// Keeps connections open but forwards nothing: a server that was
    /// stopped (SIGSTOP) or a network that silently drops packets.
    Frozen,
}

/// A TCP proxy in front of the PostgreSQL server (or another) that a test
/// can cut, freeze and restore.
pub(crate) struct DbProxy {
    pub port: u16,
    link: watch::Sender<Link>,
    _accept: Arc<JoinHandle<()>>,
}

impl DbProxy {
    pub(crate) async fn start() -> Self {
        let url = server_url();
        Self::to(format!(
            "{}:{}",
            url.host_str().unwrap(),
            url.port().unwrap_or(5432)
        ))
        .await
    }

    /// A proxy in front of `upstream` (`host:port`) instead.
    pub(crate) async fn to(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (link, _) = watch::channel(Link::Up);
        let link_rx = link.subscribe();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let mut link = link_rx.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let state = *link.borrow_and_update();
                    match state {
                        Link::Cut => return,
                        // Accepted, never answered, until the link changes.
                        Link::Frozen => {
                            let _ = link.changed().await;
                            return;
                        }
                        Link::Up => {}
                    }
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
                        _ = link.wait_for(|l| *l != Link::Up) => {}
                    }
                    // Frozen: hold both ends silent; any later change drops them.
                    let state = *link.borrow();
                    if state == Link::Frozen {
                        let _ = link.changed().await;
                    }
                });
            }
        });
        Self {
            port,
            link,
            _accept: Arc::new(accept),
        }
    }

    pub(crate) fn cut(&self) {
        self.link.send_replace(Link::Cut);
    }

    pub(crate) fn freeze(&self) {
        self.link.send_replace(Link::Frozen);
    }

    pub(crate) fn restore(&self) {
        self.link.send_replace(Link::Up);
    }
}

/// Forges tokens signed with the service's own key, to reach states (expired,
/// not yet valid, odd claims) a real Login never produces.
pub(crate) struct Forger {
    key: jsonwebtoken::EncodingKey,
    kid: String,
}

impl Forger {
    /// The key of `app`, and its kid as read from a real token.
    pub(crate) fn for_app(app: &TestApp, real_token: &str) -> Self {
        let pem = std::fs::read(&app.key_file).unwrap();
        let kid = jsonwebtoken::decode_header(real_token)
            .unwrap()
            .kid
            .unwrap();
        Self {
            key: jsonwebtoken::EncodingKey::from_ed_pem(&pem).unwrap(),
            kid,
        }
    }

    pub(crate) fn header(&self) -> jsonwebtoken::Header {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.typ = Some("at+jwt".to_owned());
        header.kid = Some(self.kid.clone());
        header
    }

    pub(crate) fn sign(&self, header: &jsonwebtoken::Header, claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(header, claims, &self.key).unwrap()
    }

    /// Signs header and payload given as raw JSON text, byte for byte (to
    /// forge what a serializer would never write: duplicate keys, say).
    pub(crate) fn sign_raw(&self, header_json: &str, payload_json: &str) -> String {
        use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header_json),
            URL_SAFE_NO_PAD.encode(payload_json)
        );
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &self.key,
            jsonwebtoken::Algorithm::EdDSA,
        )
        .unwrap();
        format!("{message}.{signature}")
    }

    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// Claims like those of `real_token`, with `changes` merged in (a null
    /// value removes the claim).
    pub(crate) fn claims_like(real_token: &str, changes: serde_json::Value) -> serde_json::Value {
        let payload = real_token.split('.').nth(1).unwrap();
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        let mut claims: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        claims
    }

    /// A fresh `jti`, so the forged token is not revoked with the original.
    pub(crate) fn fresh_like(real_token: &str, changes: serde_json::Value) -> serde_json::Value {
        let mut claims = Self::claims_like(real_token, changes);
        claims["jti"] = serde_json::Value::String(uuid::Uuid::new_v4().to_string());
        claims
    }
}

/// Polls `condition` every 10 ms until it holds, failing the test with
/// `what` if it has not within 10 s.
pub(crate) async fn within_10s<F: Future<Output = bool>>(what: &str, condition: impl Fn() -> F) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not within 10 s: {what}"));
}

pub(crate) fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
