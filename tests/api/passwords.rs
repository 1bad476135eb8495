use authd::{
    auth::{AccountError, HashCost, HashingPriority, Passwords},
    domain::{Password, UserRef, Username},
};
use tonic::Code;

use crate::helpers::{Backend, World, on_both_backends};

async fn composed_and_decomposed_accents_are_the_same_password(backend: Backend) {
    let mut world = World::new(backend).await;
    world.add_user("alice", "caf\u{e9} au lait", &[]).await;

    assert!(
        world
            .app
            .login("alice", "cafe\u{301} au lait")
            .await
            .is_ok()
    );
    assert!(world.app.login("alice", "caf\u{e9} au lait").await.is_ok());
}

async fn new_passwords_shorter_than_the_policy_are_refused(backend: Backend) {
    let world = World::new(backend).await;
    let name = Username::parse("alice").unwrap();
    let alice = UserRef::Name(name.clone());

    let short = world
        .accounts
        .add(&name, &Password::parse("seven77").unwrap(), &[])
        .await;

    assert!(matches!(short, Err(AccountError::PasswordTooShort(8))));
    // Eight characters, though more bytes than that, is enough.
    world
        .accounts
        .add(&name, &Password::parse("\u{e9}".repeat(8)).unwrap(), &[])
        .await
        .unwrap();
    let passwd = world
        .accounts
        .change_password(&alice, &Password::parse("short").unwrap())
        .await;
    assert!(matches!(passwd, Err(AccountError::PasswordTooShort(8))));
}

async fn a_hash_of_an_older_cost_is_replaced_at_login_without_revoking_tokens(backend: Backend) {
    let mut world = World::new(backend).await;
    world.add_user("alice", "correct horse battery", &[]).await;
    let first = world
        .app
        .login("alice", "correct horse battery")
        .await
        .unwrap();
    let cheap = Passwords::new(
        HashCost {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        },
        1,
        HashingPriority::default(),
    )
    .unwrap();
    let old = cheap
        .hash(&Password::parse("correct horse battery").unwrap())
        .await
        .unwrap();
    world.set_password_hash("alice", &old).await;

    world
        .app
        .login("alice", "correct horse battery")
        .await
        .unwrap();

    let new = world.password_hash("alice").await;
    assert!(new.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{new}");
    assert!(world.app.validate(&first.access_token).await.valid);
    assert!(
        world
            .app
            .login("alice", "correct horse battery")
            .await
            .is_ok()
    );
}

async fn a_stored_hash_of_absurd_cost_is_refused_not_run(backend: Backend) {
    let mut world = World::new(backend).await;
    world.add_user("alice", "correct horse battery", &[]).await;
    let hash = world.password_hash("alice").await;
    world
        .set_password_hash("alice", &hash.replace("m=19456,", "m=4194304,"))
        .await;

    let status = world
        .app
        .login("alice", "correct horse battery")
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::Unauthenticated);
}

on_both_backends!(
    composed_and_decomposed_accents_are_the_same_password,
    new_passwords_shorter_than_the_policy_are_refused,
    a_hash_of_an_older_cost_is_replaced_at_login_without_revoking_tokens,
    a_stored_hash_of_absurd_cost_is_refused_not_run,
);
