//! The `google.rpc.ErrorInfo` of every class of error, as a client decodes
//! it from a real call: domain `authd`, the reason the protos list.

use std::time::Duration;

use authd::grpc::{
    ERROR_DOMAIN,
    admin_pb::{CreateUserRequest, UserRef, user_ref},
    pb::{LogoutRequest, RevokeSessionRequest},
};
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use crate::helpers::{Backend, DbProxy, World, bearer, on_both_backends};

const PASSWORD: &str = "correct horse battery";

/// Asserts `result` failed with `code` and ErrorInfo `reason`.
fn assert_reason<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, reason: &str) {
    let status = result.expect_err(reason);
    assert_eq!(status.code(), code, "{reason}: {status:?}");
    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("{reason}: no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, ERROR_DOMAIN);
    assert_eq!(info.reason, reason, "{status:?}");
}

fn named(name: &str) -> UserRef {
    UserRef {
        user: Some(user_ref::User::Username(name.to_owned())),
    }
}

async fn the_auth_service_errors_carry_their_reasons(backend: Backend) {
    let mut world = World::with(backend, |s| {
        s.sessions.reuse_grace = Duration::ZERO;
        s.login_throttle.free_failures = 1;
    })
    .await;
    world.add_user("alice", PASSWORD, &[]).await;
    world.add_user("bob", PASSWORD, &[]).await;
    let app = &mut world.app;

    assert_reason(
        app.login("", PASSWORD).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    let field = app.login("", PASSWORD).await.unwrap_err();
    assert_eq!(
        field
            .get_error_details()
            .bad_request()
            .unwrap()
            .field_violations[0]
            .field,
        "username"
    );
    assert_reason(
        app.login("bob", "wrong password").await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
    assert_reason(
        app.login("bob", "wrong password").await,
        Code::ResourceExhausted,
        "LOGIN_THROTTLED",
    );

    let login = app.login("alice", PASSWORD).await.unwrap();
    assert_reason(
        app.client.logout(LogoutRequest::default()).await,
        Code::Unauthenticated,
        "TOKEN_MISSING",
    );
    assert_reason(
        app.client
            .logout(bearer("not.a.token", LogoutRequest::default()))
            .await,
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
    assert_reason(
        app.client
            .revoke_session(bearer(
                &login.access_token,
                RevokeSessionRequest {
                    session_id: uuid::Uuid::new_v4().to_string(),
                },
            ))
            .await,
        Code::NotFound,
        "SESSION_NOT_FOUND",
    );

    let rotated = app.refresh(&login.refresh_token).await.unwrap();
    assert_reason(
        app.refresh(&login.refresh_token).await,
        Code::Unauthenticated,
        "REFRESH_TOKEN_REUSED",
    );
    // The session has ended: its newest token is now merely invalid, as is
    // a token authd never made.
    assert_reason(
        app.refresh(&rotated.refresh_token).await,
        Code::Unauthenticated,
        "REFRESH_TOKEN_INVALID",
    );
    assert_reason(
        app.refresh("authd_rt_forged").await,
        Code::Unauthenticated,
        "REFRESH_TOKEN_INVALID",
    );
}

async fn the_admin_service_errors_carry_their_reasons(backend: Backend) {
    let mut world = World::new(backend).await;
    world.add_user("root", PASSWORD, &["authd:admin"]).await;
    world.add_user("alice", PASSWORD, &[]).await;
    let root = world
        .app
        .login("root", PASSWORD)
        .await
        .unwrap()
        .access_token;
    let alice = world
        .app
        .login("alice", PASSWORD)
        .await
        .unwrap()
        .access_token;
    let admin = &mut world.app.admin;

    assert_reason(
        admin.get_user(tonic::Request::new(named("alice"))).await,
        Code::Unauthenticated,
        "TOKEN_MISSING",
    );
    assert_reason(
        admin.get_user(bearer(&alice, named("alice"))).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_reason(
        admin.get_user(bearer(&root, named("ghost"))).await,
        Code::NotFound,
        "USER_NOT_FOUND",
    );
    let taken = CreateUserRequest {
        username: "ALICE".to_owned(),
        password: PASSWORD.to_owned(),
        roles: Vec::new(),
    };
    assert_reason(
        admin.create_user(bearer(&root, taken)).await,
        Code::AlreadyExists,
        "USERNAME_TAKEN",
    );
    assert_reason(
        admin.get_user(bearer(&root, UserRef { user: None })).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
}

#[tokio::test]
async fn shed_calls_are_overloaded_with_a_retry_delay() {
    let mut world = World::with(Backend::Sqlite, |s| s.max_calls_in_flight = 0).await;
    let status = world.app.login("alice", PASSWORD).await.unwrap_err();
    let delay = status
        .get_error_details()
        .retry_info()
        .map(|r| r.retry_delay);
    assert_reason(Err::<(), _>(status), Code::ResourceExhausted, "OVERLOADED");
    assert_eq!(delay, Some(Some(Duration::from_secs(1))));
}

#[tokio::test]
async fn without_its_database_errors_say_which_state_is_unknown() {
    let proxy = DbProxy::start().await;
    let mut world = World::behind(&proxy).await;
    let (login, _) = world.alice_token_and_a_logged_out_one().await;
    proxy.cut();
    assert_reason(
        world.app.login("alice", PASSWORD).await,
        Code::Unavailable,
        "STORE_UNAVAILABLE",
    );
    // Once the revocation state can no longer be kept current, validation
    // says so rather than vouch.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match world.app.try_validate(&login.access_token).await {
            Ok(answer) => assert!(answer.valid),
            Err(status) => {
                assert_reason(
                    Err::<(), _>(status),
                    Code::Unavailable,
                    "REVOCATION_STATE_STALE",
                );
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "never stale");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.restore();
}

on_both_backends!(
    the_auth_service_errors_carry_their_reasons,
    the_admin_service_errors_carry_their_reasons,
);
