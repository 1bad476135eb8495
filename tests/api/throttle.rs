//! Brute force: failed Logins back off exponentially, per username (and,
//! in mode `on`, per client address), and refuse even the right password
//! meanwhile.

use std::time::Duration;

use authd::{
    auth::{HashCost, ThrottleMode},
    grpc::pb::{ListSessionsRequest, LoginRequest, auth_service_client::AuthServiceClient},
};
use tonic::{Code, Request, Status, transport::Channel};
use tonic_types::StatusExt as _;

use crate::helpers::{Backend, TestApp, World, bearer, on_both_backends};

const PASSWORD: &str = "correct horse battery";

async fn login(
    client: &mut AuthServiceClient<Channel>,
    username: &str,
    password: &str,
) -> Result<(), Status> {
    client
        .login(LoginRequest {
            username: username.to_owned(),
            password: password.to_owned(),
        })
        .await
        .map(drop)
}

/// Five wrong passwords, each refused as such.
async fn fail_five_times(client: &mut AuthServiceClient<Channel>, username: &str) {
    for attempt in 1..=5 {
        let status = login(client, username, "wrong password").await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "attempt {attempt}");
    }
}

/// The refusal of a throttled Login: RESOURCE_EXHAUSTED, a generic message,
/// and a RetryInfo of at least a second. Returns the delay.
fn assert_backing_off(result: Result<(), Status>) -> Duration {
    let status = result.expect_err("the login is refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.message(), "too many failed logins; retry later");
    let delay = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("RetryInfo with a delay");
    assert!(delay >= Duration::from_secs(1), "{delay:?}");
    delay
}

/// A world throttling per username and per client address.
async fn per_address(backend: Backend) -> World {
    World::with(backend, |settings| {
        settings.login_throttle.mode = ThrottleMode::On
    })
    .await
}

/// A Login request whose `x-forwarded-for` says `through`.
fn forwarded(through: &str, username: &str, password: &str) -> Request<LoginRequest> {
    let mut request = Request::new(LoginRequest {
        username: username.to_owned(),
        password: password.to_owned(),
    });
    request
        .metadata_mut()
        .insert("x-forwarded-for", through.parse().unwrap());
    request
}

/// A Login whose `x-forwarded-for` says `through`.
async fn login_forwarded(
    client: &mut AuthServiceClient<Channel>,
    through: &str,
    username: &str,
    password: &str,
) -> Result<(), Status> {
    client
        .login(forwarded(through, username, password))
        .await
        .map(drop)
}

async fn five_failures_start_a_backoff_that_refuses_even_the_right_password(backend: Backend) {
    let world = per_address(backend).await;
    world.add_user("alice", PASSWORD, &[]).await;
    let mut client = world.app.client_from("127.0.0.2").await;

    fail_five_times(&mut client, "alice").await;

    assert_backing_off(login(&mut client, "alice", PASSWORD).await);
    assert_backing_off(login(&mut client, "alice", "wrong password").await);
}

async fn unknown_names_are_throttled_alike(backend: Backend) {
    let world = per_address(backend).await;
    let mut client = world.app.client_from("127.0.0.2").await;

    fail_five_times(&mut client, "nobody").await;

    assert_backing_off(login(&mut client, "nobody", PASSWORD).await);
}

async fn the_backoff_ends_and_the_right_password_then_clears_the_count(backend: Backend) {
    let world = per_address(backend).await;
    world.add_user("alice", PASSWORD, &[]).await;
    let mut client = world.app.client_from("127.0.0.2").await;
    fail_five_times(&mut client, "alice").await;
    let delay = assert_backing_off(login(&mut client, "alice", PASSWORD).await);

    // The refusal says when to come back; come back then.
    tokio::time::sleep(delay).await;
    login(&mut client, "alice", PASSWORD)
        .await
        .expect("the back-off is over");

    // The success cleared alice's count: four failures do not block her.
    let mut elsewhere = world.app.client_from("127.0.0.3").await;
    for _ in 0..4 {
        let status = login(&mut elsewhere, "alice", "wrong").await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    login(&mut elsewhere, "alice", PASSWORD).await.unwrap();
}

async fn throttling_one_user_never_blocks_another(backend: Backend) {
    let world = per_address(backend).await;
    world.add_user("alice", PASSWORD, &[]).await;
    world.add_user("bob", PASSWORD, &[]).await;
    let mut attacker = world.app.client_from("127.0.0.2").await;
    fail_five_times(&mut attacker, "alice").await;

    let mut bob = world.app.client_from("127.0.0.3").await;
    login(&mut bob, "bob", PASSWORD).await.unwrap();
    // alice's name is throttled wherever the attempt comes from.
    assert_backing_off(login(&mut bob, "alice", PASSWORD).await);
    // And the attacker's address, whatever the name.
    assert_backing_off(login(&mut attacker, "bob", PASSWORD).await);
}

async fn an_address_spraying_many_names_is_throttled(backend: Backend) {
    let world = per_address(backend).await;
    world.add_user("bob", PASSWORD, &[]).await;
    let mut sprayer = world.app.client_from("127.0.0.2").await;
    for name in ["ann", "ben", "cat", "dan", "eve"] {
        let status = login(&mut sprayer, name, "password1").await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{name}");
    }

    assert_backing_off(login(&mut sprayer, "bob", PASSWORD).await);
    let mut other = world.app.client_from("127.0.0.3").await;
    login(&mut other, "bob", PASSWORD).await.unwrap();
}

async fn username_mode_leaves_addresses_alone(backend: Backend) {
    let world = World::with(backend, |settings| {
        settings.login_throttle.mode = ThrottleMode::Username;
    })
    .await;
    world.add_user("bob", PASSWORD, &[]).await;
    let mut gateway = world.app.client_from("127.0.0.2").await;
    for name in ["ann", "ben", "cat", "dan", "eve", "fay"] {
        let status = login(&mut gateway, name, "password1").await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{name}");
    }
    login(&mut gateway, "bob", PASSWORD).await.unwrap();
}

/// The default counts per username only: a dozen wrong passwords for one
/// user from an address shared by everyone (a backend, a gateway) never
/// refuse another user's right password from it.
async fn by_default_one_users_failures_never_refuse_another(backend: Backend) {
    let world = World::new(backend).await;
    assert_eq!(
        world.app.settings.login_throttle.mode,
        ThrottleMode::Username
    );
    world.add_user("alice", PASSWORD, &[]).await;
    world.add_user("bob", PASSWORD, &[]).await;
    let mut gateway = world.app.client_from("127.0.0.2").await;
    for _ in 0..12 {
        let refused = login(&mut gateway, "alice", "wrong password")
            .await
            .unwrap_err();
        assert!(
            matches!(
                refused.code(),
                Code::Unauthenticated | Code::ResourceExhausted
            ),
            "{refused:?}"
        );
    }
    assert_backing_off(login(&mut gateway, "alice", PASSWORD).await);
    login(&mut gateway, "bob", PASSWORD).await.unwrap();
}

/// Behind a trusted proxy, the forwarded address is the one counted: a
/// sprayer behind the proxy is throttled, a client behind the same proxy
/// is not, and the session records the forwarded address.
async fn behind_a_trusted_proxy_forwarded_clients_are_counted_apart(backend: Backend) {
    let world = World::with(backend, |settings| {
        settings.login_throttle.mode = ThrottleMode::On;
        settings.trusted_proxies = "127.0.0.2/32".parse().unwrap();
    })
    .await;
    world.add_user("bob", PASSWORD, &[]).await;
    let mut proxy = world.app.client_from("127.0.0.2").await;
    for name in ["ann", "ben", "cat", "dan", "eve"] {
        let refused = login_forwarded(&mut proxy, "203.0.113.1", name, "password1")
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{name}");
    }
    assert_backing_off(login_forwarded(&mut proxy, "203.0.113.1", "bob", PASSWORD).await);
    // A forged entry left of what the proxy appended changes nothing.
    assert_backing_off(
        login_forwarded(&mut proxy, "198.51.100.7, 203.0.113.1", "bob", PASSWORD).await,
    );

    let grant = proxy
        .login(forwarded("203.0.113.2", "bob", PASSWORD))
        .await
        .expect("another client")
        .into_inner();
    let sessions = proxy
        .list_sessions(bearer(&grant.access_token, ListSessionsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(sessions[0].client_address, "203.0.113.2");
}

/// A peer that is not a trusted proxy is counted by its own address,
/// whatever `x-forwarded-for` it sends.
async fn an_untrusted_peers_forwarded_for_is_ignored(backend: Backend) {
    let world = World::with(backend, |settings| {
        settings.login_throttle.mode = ThrottleMode::On;
        settings.trusted_proxies = "127.0.0.9/32".parse().unwrap();
    })
    .await;
    world.add_user("bob", PASSWORD, &[]).await;
    let mut sprayer = world.app.client_from("127.0.0.2").await;
    for (n, name) in ["ann", "ben", "cat", "dan", "eve"].into_iter().enumerate() {
        let forged = format!("203.0.113.{n}");
        let refused = login_forwarded(&mut sprayer, &forged, name, "password1")
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{name}");
    }
    assert_backing_off(login_forwarded(&mut sprayer, "203.0.113.99", "bob", PASSWORD).await);
}

async fn off_throttles_nothing(backend: Backend) {
    let world = World::with(backend, |settings| {
        settings.login_throttle.mode = ThrottleMode::Off;
    })
    .await;
    world.add_user("alice", PASSWORD, &[]).await;
    let mut client = world.app.client_from("127.0.0.2").await;
    for _ in 0..8 {
        let status = login(&mut client, "alice", "wrong").await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    login(&mut client, "alice", PASSWORD).await.unwrap();
}

/// Concurrent guesses at one name take turns, each seeing the failures
/// before it: no more than the free five get a password check, however
/// many arrive at once. (Per username only, so the address's count does
/// not stop them first.)
async fn concurrent_guesses_get_no_more_than_five_checks(backend: Backend) {
    let world = World::with(backend, |settings| {
        settings.login_throttle.mode = ThrottleMode::Username;
    })
    .await;
    world.add_user("alice", PASSWORD, &[]).await;
    let client = world.app.client_from("127.0.0.2").await;

    let guesses = (0..60).map(|n| {
        let mut client = client.clone();
        async move { login(&mut client, "alice", &format!("guess {n}")).await }
    });
    let answers = futures_util::future::join_all(guesses).await;

    let checked = answers
        .iter()
        .filter(|a| matches!(a, Err(s) if s.code() == Code::Unauthenticated))
        .count();
    let refused = answers
        .iter()
        .filter(|a| matches!(a, Err(s) if s.code() == Code::ResourceExhausted))
        .count();
    assert_eq!((checked, refused), (5, 55), "{answers:?}");
}

/// Only failures count: many Logins of one user at once, all with the
/// right password, are all served (from one address too).
async fn concurrent_successes_are_never_throttled(backend: Backend) {
    // A cheap hash: twelve checks of the default cost at once approach the
    // hashing queue's one-second bound on a busy two-core machine, and
    // the overload refusal is not what this test is about.
    let world = World::with(backend, |settings| {
        settings.password_cost = HashCost {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        };
    })
    .await;
    world.add_user("alice", PASSWORD, &[]).await;
    let client = world.app.client_from("127.0.0.2").await;

    let logins = (0..12).map(|_| {
        let mut client = client.clone();
        async move { login(&mut client, "alice", PASSWORD).await }
    });
    let answers = futures_util::future::join_all(logins).await;

    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
}

/// On one database, every instance sees the same count for a name.
async fn instances_share_the_count_of_a_name(backend: Backend) {
    let world = World::new(backend).await;
    world.add_user("alice", PASSWORD, &[]).await;
    let second = TestApp::spawn(world.app.settings.clone()).await;
    let mut one = world.app.client_from("127.0.0.2").await;
    let mut two = second.client_from("127.0.0.3").await;

    for (client, times) in [(&mut one, 3), (&mut two, 2)] {
        for _ in 0..times {
            let status = login(client, "alice", "wrong").await.unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated);
        }
    }

    assert_backing_off(login(&mut one, "alice", PASSWORD).await);
    assert_backing_off(login(&mut two, "alice", PASSWORD).await);
    second.stop().await;
}

on_both_backends!(
    five_failures_start_a_backoff_that_refuses_even_the_right_password,
    unknown_names_are_throttled_alike,
    the_backoff_ends_and_the_right_password_then_clears_the_count,
    throttling_one_user_never_blocks_another,
    an_address_spraying_many_names_is_throttled,
    username_mode_leaves_addresses_alone,
    by_default_one_users_failures_never_refuse_another,
    behind_a_trusted_proxy_forwarded_clients_are_counted_apart,
    an_untrusted_peers_forwarded_for_is_ignored,
    off_throttles_nothing,
    concurrent_guesses_get_no_more_than_five_checks,
    concurrent_successes_are_never_throttled,
    instances_share_the_count_of_a_name,
);
