//! The Rust client crate against a real server: its typed calls, the local
//! validator (the server's reasons for every attack, revocations, keys,
//! failing closed) and the tower layer in front of axum and tonic services.

use std::time::Duration;

use authd::{auth::Rotation, grpc::pb::TokenInvalidReason};
use authd_client::{
    AuthLayer, Caller, Client, ClientConfig, Credentials, InvalidToken, LocalValidator,
    LogoutScope, Unavailable, ValidatorConfig, Validity,
};
use axum::{Extension, Router, routing::get};
use secrecy::SecretString;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_types::StatusExt as _;

use crate::{
    helpers::{Backend, DbProxy, World, on_both_backends, within_10s},
    token_attacks::attacks,
};

const WATCHER_PASSWORD: &str = "watcher password 1";
const ALICE_PASSWORD: &str = "correct horse battery";

async fn client_of(addr: std::net::SocketAddr) -> Client {
    Client::connect(ClientConfig::new(format!("http://{addr}")))
        .await
        .unwrap()
}

/// A validator of `app`'s tokens through `addr`, watching as a user of
/// the watch role, once its view is complete.
async fn validator_via(
    world: &World,
    addr: std::net::SocketAddr,
    tweak: impl FnOnce(&mut ValidatorConfig),
) -> LocalValidator {
    world
        .add_user("watcher", WATCHER_PASSWORD, &["authd:watch"])
        .await;
    let client = Client::connect_lazy(ClientConfig::new(format!("http://{addr}"))).unwrap();
    let mut config = ValidatorConfig::new(Credentials::ServiceAccount {
        username: "watcher".to_owned(),
        password: SecretString::from(WATCHER_PASSWORD),
    });
    config.reconnect = (Duration::from_millis(20), Duration::from_millis(200));
    tweak(&mut config);
    let validator = LocalValidator::start(client, config);
    tokio::time::timeout(Duration::from_secs(10), validator.ready())
        .await
        .expect("the validator is ready within 10 s");
    validator
}

async fn validator(world: &World) -> LocalValidator {
    validator_via(world, world.app.addr, |_| {}).await
}

fn reason_of(validity: &Validity) -> TokenInvalidReason {
    match validity {
        Validity::Valid(_) => TokenInvalidReason::Unspecified,
        Validity::Invalid(reason) => match reason {
            InvalidToken::Malformed => TokenInvalidReason::Malformed,
            InvalidToken::BadSignature => TokenInvalidReason::BadSignature,
            InvalidToken::Expired => TokenInvalidReason::Expired,
            InvalidToken::NotYetValid => TokenInvalidReason::NotYetValid,
            InvalidToken::Revoked => TokenInvalidReason::Revoked,
        },
    }
}

/// Waits until `validator` says `token` is invalid for `reason`.
async fn eventually(validator: &LocalValidator, token: &str, reason: InvalidToken) {
    within_10s(&format!("{reason:?}"), || async move {
        validator.validate(token).await == Ok(Validity::Invalid(reason))
    })
    .await;
}

async fn every_attack_gets_the_servers_reason_from_the_local_validator(backend: Backend) {
    let mut world = World::new(backend).await;
    let (cases, real) = attacks(&mut world).await;
    let validator = validator(&world).await;
    for (name, token, expected) in &cases {
        let server = world.app.try_validate(token).await.unwrap().reason();
        let local = validator.validate(token).await.unwrap();
        assert_eq!(reason_of(&local), server, "{name}");
        assert!(expected.contains(&server), "{name}: {server:?}");
    }
    let Validity::Valid(claims) = validator.validate(&real).await.unwrap() else {
        panic!("the real token is refused");
    };
    assert_eq!(claims.username, "alice");
    assert_eq!(claims.roles, ["reader"]);
}

async fn logouts_sessions_and_users_are_followed(backend: Backend) {
    let mut world = World::new(backend).await;
    let validator = validator(&world).await;
    let first = world.alice_token().await.access_token;
    let second = world.app.login("alice", ALICE_PASSWORD).await.unwrap();
    let third = world.app.login("alice", ALICE_PASSWORD).await.unwrap();
    assert!(matches!(
        validator.validate(&first).await,
        Ok(Validity::Valid(_))
    ));

    world.app.logout(&first).await.unwrap();
    eventually(&validator, &first, InvalidToken::Revoked).await;
    assert!(matches!(
        validator.validate(&second.access_token).await,
        Ok(Validity::Valid(_))
    ));

    // Logged out everywhere: the other sessions' tokens go too.
    let client = client_of(world.app.addr).await;
    client
        .logout(
            &SecretString::from(second.access_token.clone()),
            LogoutScope::User,
        )
        .await
        .unwrap();
    eventually(&validator, &third.access_token, InvalidToken::Revoked).await;
    // The server agrees on every one.
    for token in [&first, &second.access_token, &third.access_token] {
        assert_eq!(
            world.app.validate(token).await.reason(),
            TokenInvalidReason::Revoked
        );
    }
}

async fn a_key_rotation_and_a_key_revocation_are_followed(backend: Backend) {
    let mut world = World::new(backend).await;
    let validator = validator(&world).await;
    let old = world.alice_token().await.access_token;
    let old_kid = jsonwebtoken::decode_header(&old).unwrap().kid.unwrap();

    let Rotation::Scheduled { kid: new_kid, .. } =
        world.app.keys.rotate(Duration::ZERO).await.unwrap()
    else {
        panic!("not rotated");
    };
    let new = world
        .app
        .login("alice", ALICE_PASSWORD)
        .await
        .unwrap()
        .access_token;
    assert_eq!(
        jsonwebtoken::decode_header(&new).unwrap().kid.unwrap(),
        new_kid
    );
    // A kid it has not seen yet: the JWKS is fetched again.
    assert!(matches!(
        validator.validate(&new).await,
        Ok(Validity::Valid(_))
    ));
    assert!(matches!(
        validator.validate(&old).await,
        Ok(Validity::Valid(_))
    ));

    world.app.keys.revoke(&old_kid).await.unwrap();
    eventually(&validator, &old, InvalidToken::BadSignature).await;
    assert_eq!(
        world.app.validate(&old).await.reason(),
        TokenInvalidReason::BadSignature
    );
    assert!(matches!(
        validator.validate(&new).await,
        Ok(Validity::Valid(_))
    ));
}

/// An axum service that greets the caller, behind `layer`.
async fn greeter(layer: AuthLayer) -> std::net::SocketAddr {
    let app = Router::new()
        .route(
            "/hello",
            get(|Extension(caller): Extension<Caller>| async move {
                format!("hello, {}", caller.username)
            }),
        )
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// GET /hello of `addr` with `token`: the status, a header and the body.
async fn hello(addr: std::net::SocketAddr, token: Option<&str>) -> (u16, String, String) {
    let authorization = token.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = authorization
        .as_deref()
        .map(|value| ("authorization", value))
        .into_iter()
        .collect();
    let response = crate::helpers::http_request(addr, "GET", "/hello", &headers).await;
    let challenge = response
        .headers
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (
        response.status,
        challenge,
        String::from_utf8(response.body).unwrap(),
    )
}

async fn a_protected_http_service_refuses_a_logged_out_token(backend: Backend) {
    let mut world = World::new(backend).await;
    let validator = validator(&world).await;
    let service = greeter(AuthLayer::local(validator.clone())).await;
    let token = world.alice_token().await.access_token;

    assert_eq!(
        hello(service, Some(&token)).await,
        (200, String::new(), "hello, alice".to_owned())
    );
    let (status, challenge, _) = hello(service, None).await;
    assert_eq!(
        (status, challenge.as_str()),
        (401, r#"Bearer realm="authd""#)
    );

    world.app.logout(&token).await.unwrap();
    let logged_out = token.as_str();
    within_10s("refused", || async move {
        hello(service, Some(logged_out)).await.0 == 401
    })
    .await;
    let (_, challenge, _) = hello(service, Some(&token)).await;
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );

    // The same through ValidateToken, and a role this token lacks.
    let fresh = world
        .app
        .login("alice", ALICE_PASSWORD)
        .await
        .unwrap()
        .access_token;
    let remote = greeter(AuthLayer::remote(client_of(world.app.addr).await)).await;
    assert_eq!(hello(remote, Some(&fresh)).await.0, 200);
    assert_eq!(hello(remote, Some(&token)).await.0, 401);
    let admins_only = greeter(AuthLayer::local(validator).require_role("authd:admin")).await;
    let (status, challenge, _) = hello(admins_only, Some(&fresh)).await;
    assert_eq!(status, 403);
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
}

async fn a_protected_grpc_service_answers_with_grpc_statuses(backend: Backend) {
    let mut world = World::new(backend).await;
    let validator = validator(&world).await;
    world
        .add_user("reporter", "reporter password 1", &["reports"])
        .await;
    let alice = world.alice_token().await.access_token;
    let reporter = world
        .app
        .login("reporter", "reporter password 1")
        .await
        .unwrap()
        .access_token;

    let (_, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let layer = AuthLayer::local(validator).require_role("reports");
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut client = HealthClient::new(
        tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let check = |token: Option<&str>| {
        let mut request = tonic::Request::new(HealthCheckRequest::default());
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        request
    };
    let refused = |status: tonic::Status| {
        let reason = status
            .get_error_details()
            .error_info()
            .unwrap()
            .reason
            .clone();
        (status.code(), reason)
    };

    let none = client.check(check(None)).await.unwrap_err();
    assert_eq!(
        refused(none),
        (Code::Unauthenticated, "TOKEN_MISSING".into())
    );
    let junk = client.check(check(Some("a.b.c"))).await.unwrap_err();
    assert_eq!(
        refused(junk),
        (Code::Unauthenticated, "TOKEN_INVALID".into())
    );
    let lacking = client.check(check(Some(&alice))).await.unwrap_err();
    assert_eq!(
        refused(lacking),
        (Code::PermissionDenied, "PERMISSION_DENIED".into())
    );
    client.check(check(Some(&reporter))).await.unwrap();
}

/// The staleness bound of the failing-closed tests: short, to keep them so.
const MAX_STALENESS: Duration = Duration::from_secs(2);

/// A greeter behind a validator following authd at `addr` with
/// [`MAX_STALENESS`], and a token of alice's it has just let through.
async fn greeter_following(
    world: &mut World,
    addr: std::net::SocketAddr,
) -> (LocalValidator, std::net::SocketAddr, String) {
    let validator = validator_via(world, addr, |config| {
        config.max_staleness = MAX_STALENESS;
    })
    .await;
    let service = greeter(AuthLayer::local(validator.clone())).await;
    let token = world.alice_token().await.access_token;
    assert_eq!(hello(service, Some(&token)).await.0, 200);
    (validator, service, token)
}

async fn the_layer_fails_closed_when_authd_is_gone_and_recovers(backend: Backend) {
    let mut world = World::new(backend).await;
    let proxy = DbProxy::to(world.app.addr.to_string()).await;
    let via = std::net::SocketAddr::from(([127, 0, 0, 1], proxy.port));
    let (validator, service, token) = greeter_following(&mut world, via).await;

    // authd unreachable: no heartbeats, so after MAX_STALENESS nothing is
    // valid, a token seen before included.
    proxy.cut();
    let (held, seen) = (&validator, token.as_str());
    within_10s("unavailable", || async move {
        held.validate(seen).await == Err(Unavailable::Stale)
    })
    .await;
    assert!(validator.staleness().unwrap() > MAX_STALENESS);
    let (status, _, _) = hello(service, Some(&token)).await;
    assert_eq!(status, 503);
    // What is invalid whatever the revocations stays so.
    assert_eq!(
        validator.validate("a.b.c").await,
        Ok(Validity::Invalid(InvalidToken::Malformed))
    );

    // A Logout while the validator cannot hear: once back, it knows.
    world.app.logout(&token).await.unwrap();
    proxy.restore();
    tokio::time::timeout(Duration::from_secs(10), validator.ready())
        .await
        .expect("ready again within 10 s");
    assert_eq!(
        validator.validate(&token).await,
        Ok(Validity::Invalid(InvalidToken::Revoked))
    );
    assert_eq!(hello(service, Some(&token)).await.0, 401);
}

/// The built `authd serve` on `world`'s database and data directory, on
/// ports of its own choosing; with the address it serves gRPC on.
async fn serve_binary(world: &World) -> (tokio::process::Child, std::net::SocketAddr) {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_authd"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(["--database-url", &world.db.url(), "--log-format", "json"])
        .arg("--data-dir")
        .arg(world.dir.path())
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let event: serde_json::Value = serde_json::from_str(&line).unwrap();
            if event["message"] == "authd is serving" {
                return event["addr"].as_str().unwrap().parse().unwrap();
            }
        }
        panic!("authd exited before serving");
    })
    .await
    .expect("authd serves within 30 s");
    // Keeps reading, so that a full pipe never stalls the server.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

async fn killing_authd_makes_the_layer_fail_closed(backend: Backend) {
    let mut world = World::new(backend).await;
    let (mut authd, addr) = serve_binary(&world).await;
    let (validator, service, token) = greeter_following(&mut world, addr).await;

    authd.start_kill().unwrap();
    authd.wait().await.unwrap();
    let seen = token.as_str();
    within_10s("refused after the kill", || async move {
        hello(service, Some(seen)).await.0 != 200
    })
    .await;
    assert_eq!(hello(service, Some(&token)).await.0, 503);
    assert_eq!(validator.validate(&token).await, Err(Unavailable::Stale));
    assert!(validator.staleness().unwrap() > MAX_STALENESS);
}

async fn the_typed_client_makes_each_call(backend: Backend) {
    let world = World::new(backend).await;
    world.add_user("alice", ALICE_PASSWORD, &["reader"]).await;
    let client = client_of(world.app.addr).await;

    let wrong = client
        .login("alice", &SecretString::from("wrong"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(wrong.reason().as_deref(), Some("INVALID_CREDENTIALS"));

    let tokens = client
        .login("alice", &SecretString::from(ALICE_PASSWORD))
        .await
        .unwrap();
    let debug = format!("{tokens:?}");
    assert!(!debug.contains(secrecy::ExposeSecret::expose_secret(&tokens.access_token)));
    let access = secrecy::ExposeSecret::expose_secret(&tokens.access_token).to_owned();
    let Validity::Valid(claims) = client.validate(&access).await.unwrap() else {
        panic!("not valid");
    };
    assert_eq!(
        (claims.sub, claims.sid),
        (tokens.user_id, Some(tokens.session_id))
    );
    assert_eq!(claims.iss, "authd");

    let kid = jsonwebtoken::decode_header(&access).unwrap().kid.unwrap();
    assert!(
        client
            .get_jwks()
            .await
            .unwrap()
            .iter()
            .any(|k| k.kid == kid)
    );

    // Two rotations, then the first token again: older than the one
    // replaced last, so no lost answer explains it.
    let once = client.refresh(&tokens.refresh_token).await.unwrap();
    let refreshed = client.refresh(&once.refresh_token).await.unwrap();
    let reused = client.refresh(&tokens.refresh_token).await.unwrap_err();
    assert_eq!(reused.code(), Code::Unauthenticated);
    assert_eq!(reused.reason().as_deref(), Some("REFRESH_TOKEN_REUSED"));
    // Reuse ended the session: its newest token is revoked too.
    let newest = secrecy::ExposeSecret::expose_secret(&refreshed.access_token).to_owned();
    assert_eq!(
        client.validate(&newest).await.unwrap(),
        Validity::Invalid(InvalidToken::Revoked)
    );

    let again = client
        .login("alice", &SecretString::from(ALICE_PASSWORD))
        .await
        .unwrap();
    client
        .logout(&again.access_token, LogoutScope::Session)
        .await
        .unwrap();
    let text = secrecy::ExposeSecret::expose_secret(&again.access_token).to_owned();
    assert_eq!(
        client.validate(&text).await.unwrap(),
        Validity::Invalid(InvalidToken::Revoked)
    );
}

on_both_backends!(
    every_attack_gets_the_servers_reason_from_the_local_validator,
    logouts_sessions_and_users_are_followed,
    a_key_rotation_and_a_key_revocation_are_followed,
    a_protected_http_service_refuses_a_logged_out_token,
    a_protected_grpc_service_answers_with_grpc_statuses,
    the_layer_fails_closed_when_authd_is_gone_and_recovers,
    killing_authd_makes_the_layer_fail_closed,
    the_typed_client_makes_each_call,
);
