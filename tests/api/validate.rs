use authd::grpc::pb::TokenInvalidReason::{self, *};
use serde_json::json;
use tonic::Code;

use crate::helpers::{Backend, Forger, World, now, on_both_backends};

async fn reason_of(world: &mut World, token: &str) -> TokenInvalidReason {
    let answer = world.app.validate(token).await;
    assert!(!answer.valid, "{token:.40} validated");
    assert!(answer.user_id.is_empty() && answer.roles.is_empty() && answer.issued_at.is_none());
    answer.reason()
}

async fn empty_or_oversized_tokens_are_invalid_arguments(backend: Backend) {
    let mut world = World::new(backend).await;
    for token in [String::new(), "a".repeat(8 * 1024 + 1)] {
        let status = world.app.try_validate(&token).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }
}

async fn expiry_and_issue_time_are_checked_with_the_leeway(backend: Backend) {
    let mut world = World::new(backend).await;
    let login = world.alice_token().await;
    let forger = Forger::for_app(&world.app, &login.access_token);
    let sign = |changes| {
        forger.sign(
            &forger.header(),
            &Forger::fresh_like(&login.access_token, changes),
        )
    };

    let expired = sign(json!({"iat": now() - 100, "exp": now() - 30}));
    let just_expired_within_leeway = sign(json!({"iat": now() - 100, "exp": now() - 2}));
    let issued_in_the_future = sign(json!({"iat": now() + 60, "exp": now() + 960}));
    let issued_a_little_ahead = sign(json!({"iat": now() + 2, "exp": now() + 900}));
    let not_before_later = sign(json!({"nbf": now() + 60}));
    let huge_exp = sign(json!({"exp": 1e300}));

    assert_eq!(reason_of(&mut world, &expired).await, Expired);
    assert!(world.app.validate(&just_expired_within_leeway).await.valid);
    assert_eq!(
        reason_of(&mut world, &issued_in_the_future).await,
        NotYetValid
    );
    assert!(world.app.validate(&issued_a_little_ahead).await.valid);
    assert_eq!(reason_of(&mut world, &not_before_later).await, NotYetValid);
    assert_eq!(reason_of(&mut world, &huge_exp).await, Malformed);
}

async fn a_message_over_16_kib_is_refused_before_decoding(backend: Backend) {
    let mut world = World::new(backend).await;

    let status = world
        .app
        .try_validate(&"a".repeat(17 * 1024))
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");
}

on_both_backends!(
    empty_or_oversized_tokens_are_invalid_arguments,
    expiry_and_issue_time_are_checked_with_the_leeway,
    a_message_over_16_kib_is_refused_before_decoding,
);
