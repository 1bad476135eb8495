use authd::{
    domain::{Password, UserRef, Username},
    grpc::pb::TokenInvalidReason,
};

use crate::helpers::{Backend, World, on_both_backends};

fn alice() -> UserRef {
    UserRef::Name(Username::parse("alice").unwrap())
}

async fn disabling_revokes_earlier_tokens_and_enabling_does_not_restore_them(backend: Backend) {
    let mut world = World::new(backend).await;
    let before = world.alice_token().await;

    world.accounts.disable(&alice()).await.unwrap();
    world.app.eventually_revoked(&before.access_token).await;

    world.accounts.enable(&alice()).await.unwrap();
    let after = world
        .app
        .login("alice", "correct horse battery")
        .await
        .unwrap();
    world.app.eventually_valid(&after.access_token).await;
    assert_eq!(
        world.app.validate(&before.access_token).await.reason(),
        TokenInvalidReason::Revoked
    );
}

async fn a_password_change_revokes_earlier_tokens_and_new_ones_work_at_once(backend: Backend) {
    let mut world = World::new(backend).await;
    let before = world.alice_token().await;

    world
        .accounts
        .change_password(&alice(), &Password::parse("new horse battery").unwrap())
        .await
        .unwrap();
    // Within the same second as the change: the new token must not be born
    // revoked.
    let after = world.app.login("alice", "new horse battery").await.unwrap();

    world.app.eventually_revoked(&before.access_token).await;
    assert!(world.app.validate(&after.access_token).await.valid);
    assert!(
        world
            .app
            .login("alice", "correct horse battery")
            .await
            .is_err()
    );
}

async fn deleting_a_user_revokes_its_tokens(backend: Backend) {
    let mut world = World::new(backend).await;
    let login = world.alice_token().await;

    world.accounts.delete(&alice()).await.unwrap();

    world.app.eventually_revoked(&login.access_token).await;
    assert!(
        world
            .app
            .login("alice", "correct horse battery")
            .await
            .is_err()
    );
}

async fn account_operations_on_unknown_users_say_so(backend: Backend) {
    let world = World::new(backend).await;
    let ghost = UserRef::Name(Username::parse("ghost").unwrap());
    for result in [
        world.accounts.disable(&ghost).await.map(|_| ()),
        world.accounts.enable(&ghost).await.map(|_| ()),
        world.accounts.delete(&ghost).await.map(|_| ()),
        world
            .accounts
            .change_password(&ghost, &Password::parse("whatever1").unwrap())
            .await
            .map(|_| ()),
    ] {
        assert!(matches!(
            result,
            Err(authd::auth::AccountError::NotFound(_))
        ));
    }
}

async fn a_cut_off_far_in_the_future_does_not_hold_logins_hostage(backend: Backend) {
    let mut world = World::new(backend).await;
    world.add_user("alice", "correct horse battery", &[]).await;
    // As written by an instance whose clock runs an hour fast.
    world
        .sql
        .set_cutoff(time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .await;

    let login = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        world.app.login("alice", "correct horse battery"),
    )
    .await
    .expect("Login answers instead of waiting for the cut-off")
    .unwrap();

    // The token is issued, and revoked until the clocks agree: fail closed.
    world.app.eventually_revoked(&login.access_token).await;
}

on_both_backends!(
    disabling_revokes_earlier_tokens_and_enabling_does_not_restore_them,
    a_password_change_revokes_earlier_tokens_and_new_ones_work_at_once,
    deleting_a_user_revokes_its_tokens,
    account_operations_on_unknown_users_say_so,
    a_cut_off_far_in_the_future_does_not_hold_logins_hostage,
);
