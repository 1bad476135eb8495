use authd::grpc::pb::LogoutRequest;
use serde_json::json;
use tonic::{Code, Request};

use crate::helpers::{Backend, Forger, World, now, on_both_backends};

fn logout_request(token: &str) -> LogoutRequest {
    LogoutRequest {
        access_token: token.to_owned(),
        ..Default::default()
    }
}

async fn logout_commits_a_revocation_kept_until_exp_plus_leeway(backend: Backend) {
    let mut world = World::new(backend).await;
    let login = world.alice_token().await;

    world.app.logout(&login.access_token).await.unwrap();

    let (user_id, expires_at) = world.sql.only_revocation().await;
    assert_eq!(user_id.to_string(), login.user_id);
    assert_eq!(expires_at, login.expires_at.unwrap().seconds + 5);
    let answer = world.app.validate(&login.access_token).await;
    assert!(!answer.valid);
    assert_eq!(
        answer.reason(),
        authd::grpc::pb::TokenInvalidReason::Revoked
    );
    assert!(answer.user_id.is_empty() && answer.jti.is_empty() && answer.expires_at.is_none());
}

async fn logout_takes_the_bearer_metadata_when_the_field_is_empty(backend: Backend) {
    let mut world = World::new(backend).await;
    let login = world.alice_token().await;

    let mut request = Request::new(logout_request(""));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", login.access_token).parse().unwrap(),
    );
    world.app.client.logout(request).await.unwrap();

    assert_eq!(world.revoked_rows().await, 1);
    assert!(!world.app.validate(&login.access_token).await.valid);
}

async fn logout_twice_is_ok_and_writes_once(backend: Backend) {
    let mut world = World::new(backend).await;
    let login = world.alice_token().await;

    world.app.logout(&login.access_token).await.unwrap();
    world.app.logout(&login.access_token).await.unwrap();

    assert_eq!(world.revoked_rows().await, 1);
}

async fn logout_of_an_expired_token_is_ok_and_writes_nothing(backend: Backend) {
    let mut world = World::new(backend).await;
    let login = world.alice_token().await;
    let forger = Forger::for_app(&world.app, &login.access_token);
    let expired = forger.sign(
        &forger.header(),
        &Forger::fresh_like(
            &login.access_token,
            json!({"iat": now() - 1000, "exp": now() - 60}),
        ),
    );

    world.app.logout(&expired).await.unwrap();

    assert_eq!(world.revoked_rows().await, 0);
}

async fn logout_of_a_token_revoked_with_its_user_writes_nothing(backend: Backend) {
    let mut world = World::new(backend).await;
    let login = world.alice_token().await;
    world
        .accounts
        .disable(&authd::domain::Username::parse("alice").unwrap().into())
        .await
        .unwrap();
    world.app.eventually_revoked(&login.access_token).await;

    world.app.logout(&login.access_token).await.unwrap();

    assert_eq!(world.revoked_rows().await, 0);
}

async fn missing_malformed_or_forged_tokens_are_unauthenticated_and_write_nothing(
    backend: Backend,
) {
    let mut world = World::new(backend).await;
    let login = world.alice_token().await;
    let mut forged = login.access_token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });

    for token in ["", "not a token", "a.b.c", forged.as_str()] {
        let status = world.app.logout(token).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{token:.20}");
    }
    let mut basic = Request::new(logout_request(""));
    basic
        .metadata_mut()
        .insert("authorization", "Basic YWxpY2U6cHc=".parse().unwrap());
    let status = world.app.client.logout(basic).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    assert_eq!(world.revoked_rows().await, 0);
    assert!(world.app.validate(&login.access_token).await.valid);
}

async fn an_oversized_token_is_an_invalid_argument(backend: Backend) {
    let mut world = World::new(backend).await;
    let status = world
        .app
        .logout(&"a".repeat(8 * 1024 + 1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

on_both_backends!(
    logout_commits_a_revocation_kept_until_exp_plus_leeway,
    logout_takes_the_bearer_metadata_when_the_field_is_empty,
    logout_twice_is_ok_and_writes_once,
    logout_of_an_expired_token_is_ok_and_writes_nothing,
    logout_of_a_token_revoked_with_its_user_writes_nothing,
    missing_malformed_or_forged_tokens_are_unauthenticated_and_write_nothing,
    an_oversized_token_is_an_invalid_argument,
);
