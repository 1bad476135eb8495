//! The Prometheus metrics at /metrics: the gRPC server metrics and authd's
//! own move as calls are made; the revocation state's age grows while the
//! database is cut off; with metrics off nothing is served.

use std::{collections::BTreeSet, time::Duration};

use authd::grpc::pb::ValidateTokenRequest;

use crate::helpers::{Backend, DbProxy, TestApp, World, on_both_backends};

/// A sample's labels, as a set of name and value.
type Labels = BTreeSet<(String, String)>;

/// One scrape: each sample by its name and its set of labels.
struct Scrape(Vec<(String, Labels, f64)>);

impl Scrape {
    async fn of(app: &TestApp) -> Self {
        let answer = app.http("GET", "/metrics", &[]).await;
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.header("content-type"),
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = String::from_utf8(answer.body).unwrap();
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').unwrap();
                let (name, labels) = match series.split_once('{') {
                    Some((name, labels)) => (name, labels.trim_end_matches('}')),
                    None => (series, ""),
                };
                let labels = labels
                    .split("\",")
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (key, value) = pair.split_once("=\"").unwrap();
                        (key.to_owned(), value.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels, value.parse().unwrap())
            })
            .collect();
        Self(samples)
    }

    /// The value of the one sample of `name` with exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let wanted: Labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let found: Vec<f64> = self
            .0
            .iter()
            .filter(|(n, l, _)| n == name && *l == wanted)
            .map(|(_, _, v)| *v)
            .collect();
        assert_eq!(found.len(), 1, "{name}{labels:?}: {found:?}");
        found[0]
    }

    fn handled(&self, service: &str, method: &str, code: &str) -> f64 {
        self.value(
            "grpc_server_handled_total",
            &[
                ("grpc_type", "unary"),
                ("grpc_service", service),
                ("grpc_method", method),
                ("grpc_code", code),
            ],
        )
    }

    fn started(&self, service: &str, method: &str) -> f64 {
        self.value(
            "grpc_server_started_total",
            &[
                ("grpc_type", "unary"),
                ("grpc_service", service),
                ("grpc_method", method),
            ],
        )
    }
}

const AUTH: &str = "auth.v1.AuthService";

async fn calls_move_the_grpc_and_authd_counters(backend: Backend) {
    let mut world = World::new(backend).await;
    let login = world.alice_token().await;
    let before = Scrape::of(&world.app).await;

    for _ in 0..3 {
        assert!(world.app.validate(&login.access_token).await.valid);
    }
    assert!(!world.app.validate("not-a-jwt").await.valid);
    let wrong = world
        .app
        .login("alice", "wrong password")
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    world.app.logout(&login.access_token).await.unwrap();
    assert!(!world.app.validate(&login.access_token).await.valid);
    // An empty token is refused before any check: INVALID_ARGUMENT.
    let mut client = world.app.client.clone();
    let refused = client
        .validate_token(ValidateTokenRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    world.app.health(AUTH).await;

    let after = Scrape::of(&world.app).await;
    let moved = |f: &dyn Fn(&Scrape) -> f64| f(&after) - f(&before);
    assert_eq!(moved(&|s| s.started(AUTH, "ValidateToken")), 6.0);
    assert_eq!(moved(&|s| s.handled(AUTH, "ValidateToken", "OK")), 5.0);
    assert_eq!(
        moved(&|s| s.handled(AUTH, "ValidateToken", "InvalidArgument")),
        1.0
    );
    assert_eq!(moved(&|s| s.handled(AUTH, "Login", "Unauthenticated")), 1.0);
    assert_eq!(moved(&|s| s.handled(AUTH, "Logout", "OK")), 1.0);
    assert_eq!(
        moved(&|s| s.value(
            "grpc_server_handling_seconds_count",
            &[
                ("grpc_type", "unary"),
                ("grpc_service", AUTH),
                ("grpc_method", "ValidateToken")
            ]
        )),
        6.0
    );
    let validations = |result: &'static str, reason: &'static str| {
        move |s: &Scrape| {
            s.value(
                "authd_token_validations_total",
                &[("result", result), ("reason", reason)],
            )
        }
    };
    assert_eq!(moved(&validations("valid", "none")), 3.0);
    assert_eq!(moved(&validations("invalid", "MALFORMED")), 1.0);
    assert_eq!(moved(&validations("invalid", "REVOKED")), 1.0);
    let logins = |result: &'static str| {
        move |s: &Scrape| s.value("authd_logins_total", &[("result", result)])
    };
    assert_eq!(moved(&logins("unauthenticated")), 1.0);
    assert_eq!(moved(&logins("ok")), 0.0);
    assert_eq!(after.value("authd_logins_total", &[("result", "ok")]), 1.0);
    // alice's two Logins, each one argon2id check.
    assert_eq!(after.value("authd_password_hash_seconds_count", &[]), 2.0);
    assert_eq!(after.value("authd_revocations", &[("kind", "token")]), 1.0);
    assert_eq!(
        after.value("authd_revocations", &[("kind", "session")]),
        1.0
    );
    assert_eq!(
        after.value("authd_signing_keys", &[("state", "active")]),
        1.0
    );
    assert_eq!(after.value("authd_password_hash_queue", &[]), 0.0);
    assert_eq!(
        after.value(
            "authd_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(after.value("process_open_fds", &[]) > 0.0);
    assert!(after.value("authd_revocation_state_age_seconds", &[]) < 3.0);
    // Health is served beside our services and counted as they are.
    assert_eq!(
        moved(&|s| s.handled("grpc.health.v1.Health", "Check", "OK")),
        1.0
    );
}

async fn refreshes_and_their_reuse_are_counted(backend: Backend) {
    let mut world = World::with(backend, |s| s.sessions.reuse_grace = Duration::ZERO).await;
    let login = world.alice_token().await;
    let refreshed = world.app.refresh(&login.refresh_token).await.unwrap();
    let reused = world.app.refresh(&login.refresh_token).await.unwrap_err();
    assert_eq!(reused.code(), tonic::Code::Unauthenticated);
    let after_theft = world
        .app
        .refresh(&refreshed.refresh_token)
        .await
        .unwrap_err();
    assert_eq!(after_theft.code(), tonic::Code::Unauthenticated);

    let scrape = Scrape::of(&world.app).await;
    let refreshes = |result| scrape.value("authd_refreshes_total", &[("result", result)]);
    assert_eq!(refreshes("ok"), 1.0);
    assert_eq!(refreshes("reused"), 1.0);
    assert_eq!(refreshes("invalid"), 1.0);
    assert_eq!(scrape.value("authd_refresh_reuse_detected_total", &[]), 1.0);
    assert_eq!(scrape.handled(AUTH, "Refresh", "Unauthenticated"), 2.0);
}

async fn with_metrics_off_nothing_is_served(backend: Backend) {
    let mut world = World::with(backend, |s| s.metrics = false).await;
    let login = world.alice_token().await;
    assert!(world.app.validate(&login.access_token).await.valid);
    assert_eq!(world.app.http("GET", "/metrics", &[]).await.status, 404);
    assert_eq!(
        world
            .app
            .http("GET", "/.well-known/jwks.json", &[])
            .await
            .status,
        200
    );
}

on_both_backends!(
    calls_move_the_grpc_and_authd_counters,
    refreshes_and_their_reuse_are_counted,
    with_metrics_off_nothing_is_served,
);

#[tokio::test]
async fn the_revocation_state_ages_while_the_database_is_cut_off() {
    let proxy = DbProxy::start().await;
    let mut world = World::behind(&proxy).await;
    let login = world.alice_token().await;
    let fresh = Scrape::of(&world.app).await;
    assert!(fresh.value("authd_revocation_state_age_seconds", &[]) < 3.0);
    let reconnects = |s: &Scrape| s.value("authd_revocation_listener_reconnects_total", &[]);
    assert_eq!(reconnects(&fresh), 0.0);

    proxy.cut();
    // Past the staleness bound ValidateToken stops vouching; the gauge says
    // how stale, and keeps growing.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while world.app.try_validate(&login.access_token).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "still vouching");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stale = Scrape::of(&world.app)
        .await
        .value("authd_revocation_state_age_seconds", &[]);
    assert!(stale > 3.0, "{stale}");
    let staler = Scrape::of(&world.app)
        .await
        .value("authd_revocation_state_age_seconds", &[]);
    assert!(staler > stale, "{staler} after {stale}");
    let scrape = Scrape::of(&world.app).await;
    assert!(
        scrape.value(
            "authd_token_validations_total",
            &[
                ("result", "unavailable"),
                ("reason", "REVOCATION_STATE_STALE")
            ]
        ) >= 1.0
    );
    assert!(scrape.handled(AUTH, "ValidateToken", "Unavailable") >= 1.0);

    proxy.restore();
    world.app.eventually_valid(&login.access_token).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let scrape = Scrape::of(&world.app).await;
        if reconnects(&scrape) >= 1.0 {
            assert!(scrape.value("authd_revocation_state_age_seconds", &[]) < 3.0);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the listener's reconnect was never counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
