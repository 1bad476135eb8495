use std::time::Duration;

use authd::{auth::ThrottleMode, grpc::pb::TokenInvalidReason};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{Backend, DbProxy, TestApp, World, on_both_backends};

async fn health_reports_serving_for_the_server_and_the_service(backend: Backend) {
    let mut world = World::new(backend).await;
    assert_eq!(world.app.health("").await, ServingStatus::Serving);
    assert_eq!(
        world.app.health("auth.v1.AuthService").await,
        ServingStatus::Serving
    );
}

async fn a_logout_survives_a_restart(backend: Backend) {
    let mut world = World::new(backend).await;
    let login = world.alice_token().await;
    world.app.logout(&login.access_token).await.unwrap();
    let settings = world.app.settings.clone();
    let World { app, db, dir, .. } = world;
    app.stop().await;

    let mut restarted = TestApp::spawn(settings).await;

    let answer = restarted.validate(&login.access_token).await;
    assert_eq!(answer.reason(), TokenInvalidReason::Revoked);
    restarted.stop().await;
    drop((db, dir));
}

async fn two_instances_share_tokens_and_revocations(backend: Backend) {
    let mut world = World::new(backend).await;
    let mut second = TestApp::spawn(world.app.settings.clone()).await;
    let login = world.alice_token().await;

    assert!(second.validate(&login.access_token).await.valid);
    second.logout(&login.access_token).await.unwrap();
    // At once on the instance that took the Logout; on the other within
    // the notification or catch-up bound.
    assert_eq!(
        second.validate(&login.access_token).await.reason(),
        TokenInvalidReason::Revoked
    );
    world.app.eventually_revoked(&login.access_token).await;
    second.stop().await;
}

/// Cut off from its database, the service answers ValidateToken from its
/// revocation state while that state is recent enough to trust, then with
/// UNAVAILABLE; a revoked token is never called valid on the way.
async fn validate_fails_closed(app: &mut TestApp, live: &str, revoked: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match app.try_validate(revoked).await {
            Ok(answer) => assert_eq!(answer.reason(), TokenInvalidReason::Revoked),
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        }
        match app.try_validate(live).await {
            Err(status) if status.code() == Code::Unavailable => return,
            Ok(answer) if answer.valid => {}
            other => panic!("unexpected answer {other:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ValidateToken still vouches for tokens 10 s after the database went away"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn without_its_database_the_service_is_unavailable_and_never_says_valid() {
    let proxy = DbProxy::start().await;
    let mut world = World::behind(&proxy).await;
    let (login, logged_out) = world.alice_token_and_a_logged_out_one().await;
    let app = &mut world.app;
    assert!(app.validate(&login.access_token).await.valid);

    proxy.cut();

    let started = tokio::time::Instant::now();
    let login_again = app
        .login("alice", "correct horse battery")
        .await
        .unwrap_err();
    let logout = app.logout(&login.access_token).await.unwrap_err();
    for status in [&login_again, &logout] {
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    validate_fails_closed(app, &login.access_token, &logged_out.access_token).await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    app.wait_for_health("", ServingStatus::NotServing).await;
    app.wait_for_health("auth.v1.AuthService", ServingStatus::NotServing)
        .await;

    proxy.restore();

    app.wait_for_health("", ServingStatus::Serving).await;
    assert!(app.validate(&login.access_token).await.valid);
}

/// A Logout made elsewhere while this instance's notification connection
/// was down is not lost: the catch-up after the reconnection brings it.
#[tokio::test]
async fn a_revocation_missed_while_cut_off_arrives_by_catch_up() {
    let proxy = DbProxy::start().await;
    let mut world = World::behind(&proxy).await;
    let mut direct_settings = world.app.settings.clone();
    direct_settings.database = authd::store::DatabaseSettings::new(world.db.url().parse().unwrap());
    let mut direct = TestApp::spawn(direct_settings).await;
    let login = world.alice_token().await;
    assert!(world.app.validate(&login.access_token).await.valid);

    proxy.cut();
    direct.logout(&login.access_token).await.unwrap();
    proxy.restore();

    world.app.eventually_revoked(&login.access_token).await;
    direct.stop().await;
}

#[tokio::test]
async fn reflection_v1_lists_the_services() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };

    let world = World::new(Backend::Sqlite).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", world.app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list")
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"auth.v1.AuthService".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
}

async fn ten_thousand_streams_on_one_connection_are_all_answered(backend: Backend) {
    let mut world = World::new(backend).await;
    let login = world.alice_token().await;
    // One channel is one HTTP/2 connection; the server allows 256 streams
    // at a time on it, so the client queues the rest.
    let calls = (0..10_000).map(|i| {
        let mut client = world.app.client.clone();
        async move {
            client
                .validate_token(authd::grpc::pb::ValidateTokenRequest {
                    access_token: format!("not-a-token-{i}"),
                })
                .await
                .map(|r| r.into_inner().reason())
        }
    });

    let answers = futures_util::future::join_all(calls).await;

    for answer in answers {
        assert_eq!(answer.unwrap(), TokenInvalidReason::Malformed);
    }
    assert!(world.app.validate(&login.access_token).await.valid);
}

#[tokio::test]
async fn a_database_that_stops_answering_makes_calls_unavailable_not_hung() {
    let proxy = DbProxy::start().await;
    let mut world = World::behind(&proxy).await;
    let (login, logged_out) = world.alice_token_and_a_logged_out_one().await;
    let app = &mut world.app;

    proxy.freeze();

    // Each call gives up after the 3 s database deadline, well inside the
    // 10 s request timeout, which would answer CANCELLED instead.
    let login_again = app
        .login("alice", "correct horse battery")
        .await
        .unwrap_err();
    let logout = app.logout(&login.access_token).await.unwrap_err();
    for status in [&login_again, &logout] {
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    validate_fails_closed(app, &login.access_token, &logged_out.access_token).await;
    app.wait_for_health("", ServingStatus::NotServing).await;

    proxy.restore();

    app.wait_for_health("", ServingStatus::Serving).await;
    app.eventually_valid(&login.access_token).await;
}

#[tokio::test]
async fn a_query_on_a_connection_that_goes_silent_times_out_as_unavailable() {
    use authd::store::{DatabaseSettings, Storage as _, Store, StoreError};

    let proxy = DbProxy::start().await;
    let db = crate::helpers::TestDb::new(Backend::Postgres).await;
    db.store().await;
    // One connection, and a deadline shorter than the pool's wait for a
    // connection (3 s): when the connection goes silent, whether in the
    // pool's test before use or in the query, only the store's own
    // deadline can end the call.
    let mut settings = DatabaseSettings::new(db.url_via(Some(proxy.port)).parse().unwrap());
    settings.max_connections = 1;
    settings.operation_timeout = Duration::from_secs(1);
    let store = Store::connect(&settings).await.unwrap();
    store.ping().await.unwrap();

    proxy.freeze();

    let answer = tokio::time::timeout(Duration::from_secs(20), store.ping())
        .await
        .expect("the store gives up on its own");
    assert!(matches!(answer, Err(StoreError::TimedOut(_))), "{answer:?}");
}

/// Calls beyond the limit of calls in flight are refused at once, while
/// health checks, which are not counted, still answer.
#[tokio::test]
async fn calls_beyond_the_limit_in_flight_are_refused_at_once() {
    let proxy = DbProxy::start().await;
    let mut world = World::behind_with(&proxy, |settings| settings.max_calls_in_flight = 4).await;
    let login = world.alice_token().await;

    // Four Logins that hang on the silent database until its deadline.
    proxy.freeze();
    let hanging: Vec<_> = (0..4)
        .map(|n| {
            let mut client = world.app.client.clone();
            tokio::spawn(async move {
                client
                    .login(authd::grpc::pb::LoginRequest {
                        username: format!("user{n}"),
                        password: "a password".to_owned(),
                    })
                    .await
            })
        })
        .collect();

    // Once all four are in, a fifth call is refused without waiting (the
    // four hang for the 3 s database deadline).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let refused = loop {
        match world.app.try_validate(&login.access_token).await {
            Ok(answer) => assert!(answer.valid),
            Err(status) => break status,
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no call refused while four hang"
        );
    };
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(
        refused.message(),
        "the server is at its limit of calls in flight; retry shortly"
    );
    // Health checks are not counted against the limit: answered while it
    // is reached, whatever the frozen database makes of their status.
    let health = world
        .app
        .health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert!(health.is_ok(), "health refused at the limit: {health:?}");

    for call in hanging {
        let status = call.await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    proxy.restore();
    world.app.eventually_valid(&login.access_token).await;
}

/// A Login the hashing threads could not get to within about a second is
/// refused before it asks the database anything: with the database
/// silent, a flood beyond the hashing queue hears RESOURCE_EXHAUSTED at
/// once, while the Logins that took the queue's places hang on the database.
#[tokio::test]
async fn logins_beyond_the_hashing_queue_are_refused_without_asking_the_database() {
    let proxy = DbProxy::start().await;
    let world = World::behind_with(&proxy, |settings| {
        settings.max_calls_in_flight = 4096;
        // Throttling's own refusals (a name's turn not coming) would be
        // refusals too; this is about the hashing queue alone.
        settings.login_throttle.mode = ThrottleMode::Off;
    })
    .await;

    proxy.freeze();
    // Far more than the queue's places: about a second of checks.
    let (answered, mut answers) = tokio::sync::mpsc::unbounded_channel();
    for n in 0..1_000 {
        let mut client = world.app.client.clone();
        let answered = answered.clone();
        tokio::spawn(async move {
            let answer = client
                .login(authd::grpc::pb::LoginRequest {
                    username: format!("user{n}"),
                    password: "a password".to_owned(),
                })
                .await;
            let _ = answered.send(answer.map(drop).map_err(|status| status.code()));
        });
    }
    drop(answered);

    // While the database is silent, nothing that asked it can answer before
    // its 3 s deadline: the first answer is a refusal that never asked.
    let first = answers.recv().await.unwrap();
    assert_eq!(first, Err(Code::ResourceExhausted));
    while let Some(answer) = answers.recv().await {
        // Refused, or took a place and asked the silent database.
        assert!(
            matches!(answer, Err(Code::ResourceExhausted | Code::Unavailable)),
            "{answer:?}"
        );
    }
    proxy.restore();
}

/// A client flooding Login on its connection takes at most that
/// connection's streams: another client's ValidateToken calls all succeed
/// meanwhile, and every flooded Login gets a token or a quick refusal.
async fn a_login_flood_from_one_client_leaves_another_served(backend: Backend) {
    let mut world = World::new(backend).await;
    let login = world.alice_token().await;
    let flooder = world.app.client_from("127.0.0.2").await;
    let flood = tokio::spawn(async move {
        let calls = (0..1_000).map(|_| {
            let mut client = flooder.clone();
            async move {
                client
                    .login(authd::grpc::pb::LoginRequest {
                        username: "alice".to_owned(),
                        password: "correct horse battery".to_owned(),
                    })
                    .await
            }
        });
        futures_util::future::join_all(calls).await
    });

    let mut other = world.app.client_from("127.0.0.3").await;
    let mut validated = 0;
    while !flood.is_finished() || validated < 100 {
        let answer = other
            .validate_token(authd::grpc::pb::ValidateTokenRequest {
                access_token: login.access_token.clone(),
            })
            .await
            .expect("the other client is served");
        assert!(answer.into_inner().valid);
        validated += 1;
    }

    let answers = flood.await.unwrap();
    let shed = answers
        .iter()
        .filter(|a| matches!(a, Err(s) if s.code() == Code::ResourceExhausted))
        .count();
    let served = answers.iter().filter(|a| a.is_ok()).count();
    assert_eq!(shed + served, 1_000, "only tokens and refusals");
    assert!(shed > 0 && served > 0, "served {served}, shed {shed}");
}

/// Connections that open and say nothing, or finish the HTTP/2 handshake
/// and then idle, hold no one else up.
async fn many_idle_connections_hold_no_one_up(backend: Backend) {
    let mut world = World::new(backend).await;
    let login = world.alice_token().await;
    let mut silent = Vec::new();
    for _ in 0..1_000 {
        silent.push(
            tokio::net::TcpStream::connect(world.app.addr)
                .await
                .unwrap(),
        );
    }
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(
            tonic::transport::Channel::from_shared(format!("http://{}", world.app.addr))
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
    }

    assert!(world.app.validate(&login.access_token).await.valid);
    let mut fresh = world.app.client_from("127.0.0.2").await;
    let answer = fresh
        .validate_token(authd::grpc::pb::ValidateTokenRequest {
            access_token: login.access_token.clone(),
        })
        .await
        .unwrap();
    assert!(answer.into_inner().valid);
    drop((silent, idle));
}

#[tokio::test]
async fn a_call_running_past_the_request_timeout_is_cancelled() {
    let proxy = DbProxy::start().await;
    let mut world = World::behind_with(&proxy, |settings| {
        settings.request_timeout = Duration::from_secs(1);
    })
    .await;
    let login = world.alice_token().await;

    // The Logout waits on the silent database, whose own deadline (3 s)
    // lies past the request timeout.
    proxy.freeze();
    let status = world.app.logout(&login.access_token).await.unwrap_err();

    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    proxy.restore();
}

async fn health_goes_not_serving_as_shutdown_begins(backend: Backend) {
    let world = World::new(backend).await;
    let mut health = world.app.health.clone();
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: authd::grpc::SERVICE_NAME.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().expect("a first status");
    assert_eq!(first.status(), ServingStatus::Serving);

    let stopping = tokio::spawn(world.app.stop());

    // Reported to the watchers before the listener closes.
    let next = watch
        .message()
        .await
        .unwrap()
        .expect("a status at shutdown");
    assert_eq!(next.status(), ServingStatus::NotServing);
    // The watch is the last call in flight: ending it lets the drain end.
    drop(watch);
    stopping.await.unwrap();
}

/// At SIGTERM health goes NOT_SERVING at once, but calls, on open
/// connections and new ones, are answered for the whole shutdown delay:
/// a load balancer has the delay to notice.
async fn calls_are_served_through_the_shutdown_delay(backend: Backend) {
    let mut world = World::with(backend, |settings| {
        settings.shutdown_delay = Duration::from_secs(600);
    })
    .await;
    let login = world.alice_token().await;
    let server = world.app.begin_stop();

    world
        .app
        .wait_for_health("", ServingStatus::NotServing)
        .await;
    world
        .app
        .wait_for_health(authd::grpc::SERVICE_NAME, ServingStatus::NotServing)
        .await;
    let ready = world.app.http("GET", "/readyz", &[]).await;
    assert_eq!(ready.status, 503);
    assert!(world.app.validate(&login.access_token).await.valid);
    let mut fresh = world.app.client_from("127.0.0.3").await;
    let answer = fresh
        .validate_token(authd::grpc::pb::ValidateTokenRequest {
            access_token: login.access_token.clone(),
        })
        .await
        .expect("a new connection is still served")
        .into_inner();
    assert!(answer.valid);
    assert!(!server.is_finished());
    server.abort();
}

/// After the delay the listener closes.
async fn the_listener_closes_after_the_shutdown_delay(backend: Backend) {
    let mut world = World::with(backend, |settings| {
        settings.shutdown_delay = Duration::from_millis(200);
    })
    .await;
    let addr = world.app.addr;
    let server = world.app.begin_stop();
    server.await.unwrap().expect("a clean stop");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

async fn request_headers_over_16_kib_are_refused(backend: Backend) {
    let mut world = World::new(backend).await;
    let login = world.alice_token().await;
    let validate_with_padding = |bytes: usize| {
        let mut client = world.app.client.clone();
        let token = login.access_token.clone();
        async move {
            let mut request = tonic::Request::new(authd::grpc::pb::ValidateTokenRequest {
                access_token: token,
            });
            request
                .metadata_mut()
                .insert("x-padding", "p".repeat(bytes).parse().unwrap());
            client.validate_token(request).await
        }
    };

    let under = validate_with_padding(12 * 1024).await.unwrap();
    assert!(under.into_inner().valid);
    let over = validate_with_padding(17 * 1024).await.unwrap_err();

    // Refused by HTTP/2 before gRPC sees it: 431 Request Header Fields Too
    // Large, which a gRPC client reads as UNKNOWN.
    assert_eq!(over.code(), Code::Unknown, "{over:?}");
    assert!(over.message().contains("431"), "{over:?}");
    // The connection stays usable for calls within the limit.
    assert!(world.app.validate(&login.access_token).await.valid);
}

on_both_backends!(
    health_goes_not_serving_as_shutdown_begins,
    calls_are_served_through_the_shutdown_delay,
    the_listener_closes_after_the_shutdown_delay,
    request_headers_over_16_kib_are_refused,
    a_login_flood_from_one_client_leaves_another_served,
    many_idle_connections_hold_no_one_up,
    health_reports_serving_for_the_server_and_the_service,
    a_logout_survives_a_restart,
    two_instances_share_tokens_and_revocations,
    ten_thousand_streams_on_one_connection_are_all_answered,
);
