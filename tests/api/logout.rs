use authd::grpc::pb::LogoutRequest;
use serde_json::json;
use tonic::{Code, Request};

use crate::helpers::{Forger, World, now};

fn logout_request(token: &str) -> LogoutRequest {
    LogoutRequest {
        access_token: token.to_owned(),
    }
}

#[tokio::test]
async fn logout_commits_a_revocation_kept_until_exp_plus_leeway() {
    let mut world = World::new().await;
    let login = world.alice_token().await;

    world.app.logout(&login.access_token).await.unwrap();

    let (user_id, expires_at): (uuid::Uuid, time::OffsetDateTime) =
        sqlx::query_as("select user_id, expires_at from revoked_tokens")
            .fetch_one(&world.pool)
            .await
            .unwrap();
    assert_eq!(user_id.to_string(), login.user_id);
    assert_eq!(
        expires_at.unix_timestamp(),
        login.expires_at.unwrap().seconds + 5
    );
    let answer = world.app.validate(&login.access_token).await;
    assert!(!answer.valid);
    assert_eq!(
        answer.reason(),
        authd::grpc::pb::TokenInvalidReason::Revoked
    );
    assert!(answer.user_id.is_empty() && answer.jti.is_empty() && answer.expires_at.is_none());
}

#[tokio::test]
async fn logout_takes_the_bearer_metadata_when_the_field_is_empty() {
    let mut world = World::new().await;
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

#[tokio::test]
async fn logout_twice_is_ok_and_writes_once() {
    let mut world = World::new().await;
    let login = world.alice_token().await;

    world.app.logout(&login.access_token).await.unwrap();
    world.app.logout(&login.access_token).await.unwrap();

    assert_eq!(world.revoked_rows().await, 1);
}

#[tokio::test]
async fn logout_of_an_expired_token_is_ok_and_writes_nothing() {
    let mut world = World::new().await;
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

#[tokio::test]
async fn logout_of_a_token_revoked_with_its_user_writes_nothing() {
    let mut world = World::new().await;
    let login = world.alice_token().await;
    world
        .accounts
        .disable(&authd::domain::Username::parse("alice").unwrap())
        .await
        .unwrap();

    world.app.logout(&login.access_token).await.unwrap();

    assert_eq!(world.revoked_rows().await, 0);
}

#[tokio::test]
async fn missing_malformed_or_forged_tokens_are_unauthenticated_and_write_nothing() {
    let mut world = World::new().await;
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

#[tokio::test]
async fn an_oversized_token_is_an_invalid_argument() {
    let mut world = World::new().await;
    let status = world
        .app
        .logout(&"a".repeat(8 * 1024 + 1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}
