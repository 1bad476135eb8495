use std::time::Duration;

use authd::grpc::pb::LoginRequest;
use tonic::Code;

use crate::helpers::{Backend, TestSql, World, now, on_both_backends};

async fn good_credentials_get_a_bearer_token_that_validates(backend: Backend) {
    let mut world = World::new(backend).await;
    world
        .add_user("alice", "correct horse battery", &["reader", "writer"])
        .await;

    let login = world
        .app
        .login("alice", "correct horse battery")
        .await
        .unwrap();

    assert_eq!(login.token_type, "Bearer");
    assert_eq!(login.expires_in, 900);
    let expires_at = login.expires_at.unwrap().seconds;
    assert!(
        (expires_at - (now() + 900)).abs() <= 2,
        "expires_at {expires_at}"
    );
    let header = jsonwebtoken::decode_header(&login.access_token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert!(header.kid.is_some());

    let claims = world.app.validate(&login.access_token).await;
    assert!(claims.valid);
    assert_eq!(claims.reason, 0);
    assert_eq!(claims.user_id, login.user_id);
    assert_eq!(claims.username, "alice");
    assert_eq!(claims.roles, ["reader", "writer"]);
    assert!(uuid::Uuid::parse_str(&claims.jti).is_ok());
    assert_eq!(claims.expires_at.unwrap().seconds, expires_at);
    assert_eq!(claims.issued_at.unwrap().seconds, expires_at - 900);
}

async fn usernames_are_case_insensitive(backend: Backend) {
    let mut world = World::new(backend).await;
    world.add_user("Alice", "correct horse battery", &[]).await;

    let upper = world
        .app
        .login("ALICE", "correct horse battery")
        .await
        .unwrap();
    let lower = world
        .app
        .login("alice", "correct horse battery")
        .await
        .unwrap();

    assert_eq!(upper.user_id, lower.user_id);
    let dup = world
        .accounts
        .add(
            &authd::domain::Username::parse("aLiCe").unwrap(),
            &authd::domain::Password::parse("another password").unwrap(),
            &[],
        )
        .await;
    assert!(matches!(dup, Err(authd::auth::AccountError::NameTaken(_))));
}

async fn empty_or_oversized_fields_are_invalid_arguments(backend: Backend) {
    let mut world = World::new(backend).await;
    world.add_user("alice", "correct horse battery", &[]).await;
    let long_name = "a".repeat(257);
    let long_password = "p".repeat(1025);

    for (username, password) in [
        ("", "correct horse battery"),
        ("alice", ""),
        (long_name.as_str(), "correct horse battery"),
        ("alice", long_password.as_str()),
    ] {
        let status = world.app.login(username, password).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{username:.10}/{password:.10}"
        );
    }
    // The limits themselves are allowed (and simply fail authentication).
    let at_limit = world
        .app
        .login(&"a".repeat(256), &"p".repeat(1024))
        .await
        .unwrap_err();
    assert_eq!(at_limit.code(), Code::Unauthenticated);
}

async fn unknown_user_wrong_password_and_disabled_user_look_the_same(backend: Backend) {
    let mut world = World::new(backend).await;
    world.add_user("alice", "correct horse battery", &[]).await;
    world.add_user("bob", "bobs password!", &[]).await;
    world
        .accounts
        .disable(&authd::domain::Username::parse("bob").unwrap().into())
        .await
        .unwrap();

    let unknown = world
        .app
        .login("mallory", "correct horse battery")
        .await
        .unwrap_err();
    let wrong = world
        .app
        .login("alice", "wrong horse battery")
        .await
        .unwrap_err();
    let disabled = world.app.login("bob", "bobs password!").await.unwrap_err();

    for status in [&unknown, &wrong, &disabled] {
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), unknown.message());
    }
    assert!(!unknown.message().contains("mallory"));
}

on_both_backends!(
    good_credentials_get_a_bearer_token_that_validates,
    usernames_are_case_insensitive,
    empty_or_oversized_fields_are_invalid_arguments,
    unknown_user_wrong_password_and_disabled_user_look_the_same,
);

/// A Login whose password check could only start more than a second after
/// it arrived (here: its first read, of the name's failed logins, waited on
/// a lock) is refused as overload, not answered late.
#[tokio::test]
async fn a_login_that_waited_over_a_second_for_the_database_is_refused_as_overload() {
    let mut world = World::new(Backend::Postgres).await;
    world.add_user("alice", "correct horse battery", &[]).await;
    let TestSql::Postgres(pool) = &world.sql else {
        unreachable!("a PostgreSQL world");
    };

    let mut lock = pool.begin().await.unwrap();
    sqlx::query("lock table failed_logins in access exclusive mode")
        .execute(&mut *lock)
        .await
        .unwrap();
    let sent = tokio::time::Instant::now();
    let mut client = world.app.client.clone();
    let login = tokio::spawn(async move {
        client
            .login(LoginRequest {
                username: "alice".to_owned(),
                password: "correct horse battery".to_owned(),
            })
            .await
    });

    // Once the Login's read waits on the lock, and a second has passed
    // since the Login was sent (well within the 3 s deadline of a database
    // operation), let it go.
    let blocked = "select count(*) from pg_stat_activity \
                   where datname = current_database() and wait_event_type = 'Lock' \
                   and query like '%from failed_logins where username_key = $1%'";
    while sqlx::query_scalar::<_, i64>(blocked)
        .fetch_one(pool)
        .await
        .unwrap()
        == 0
    {
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "the Login never waited on the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep_until(sent + Duration::from_millis(1_200)).await;
    lock.rollback().await.unwrap();

    let refused = login.await.unwrap().unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    // Nothing else was wrong: the same Login now succeeds.
    world
        .app
        .login("alice", "correct horse battery")
        .await
        .unwrap();
}
