//! The signing-key lifecycle: rotation with a publishing lead, retirement,
//! revocation across instances, automatic rotation, restarts, the upgrade
//! from a key file, and the key-encryption key.

use std::time::Duration;

use authd::{
    auth::{KeyError, KeyState, RevokeRefusal, Rotation, SigningKey, SigningKeys, TokenSettings},
    grpc::pb::TokenInvalidReason,
    jobs::purge::{PurgePass, PurgeSettings, purge_as_of},
    startup::Application,
    store::Storage as _,
};
use time::OffsetDateTime;

use crate::helpers::{Backend, TestApp, TestDb, World, now, on_both_backends, settings};

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

/// Sleeps until the wall clock has passed `at`.
async fn sleep_past(at: OffsetDateTime) {
    let left = at - OffsetDateTime::now_utc();
    if let Ok(left) = Duration::try_from(left) {
        tokio::time::sleep(left + Duration::from_millis(50)).await;
    }
}

async fn rotate(app: &TestApp, lead: Duration) -> (String, OffsetDateTime) {
    match app.keys.rotate(lead).await.unwrap() {
        Rotation::Scheduled { kid, activates_at } => (kid, activates_at),
        other => panic!("not rotated: {other:?}"),
    }
}

async fn a_new_key_is_published_before_it_signs(backend: Backend) {
    let mut world = World::new(backend).await;
    let before = world.alice_token().await.access_token;
    let old = kid_of(&before);

    let (new, activates_at) = rotate(&world.app, Duration::from_secs(4)).await;

    assert_eq!(world.app.published_kids().await, [old.clone(), new.clone()]);
    let during = world
        .app
        .login("alice", "correct horse battery")
        .await
        .unwrap();
    assert!(
        OffsetDateTime::now_utc() < activates_at,
        "the login took the whole lead"
    );
    assert_eq!(
        kid_of(&during.access_token),
        old,
        "the pending key does not sign yet"
    );

    sleep_past(activates_at).await;
    let after = world
        .app
        .login("alice", "correct horse battery")
        .await
        .unwrap();
    assert_eq!(kid_of(&after.access_token), new);
    for token in [&before, &during.access_token, &after.access_token] {
        assert!(world.app.validate(token).await.valid, "{}", kid_of(token));
    }
    assert_eq!(world.app.published_kids().await, [old, new]);
}

async fn a_retired_key_is_published_until_its_last_token_has_expired(backend: Backend) {
    let ttl = Duration::from_secs(2);
    let mut world = World::with(backend, |s| {
        s.tokens.ttl = ttl;
        s.tokens.leeway = Duration::ZERO;
    })
    .await;
    let token = world.alice_token().await.access_token;
    let old = kid_of(&token);

    let (new, retired_at) = rotate(&world.app, Duration::ZERO).await;

    assert_eq!(world.app.published_kids().await, [old.clone(), new.clone()]);
    assert!(
        world.app.validate(&token).await.valid,
        "its tokens still validate"
    );
    let listed = SigningKeys::list(&world.store, ttl).await.unwrap();
    assert_eq!(listed[0].state, KeyState::Retired);
    assert_eq!(listed[1].state, KeyState::Active);

    sleep_past(retired_at + ttl).await;
    assert_eq!(world.app.published_kids().await, std::slice::from_ref(&new));
    // The purge keeps it while an instance forgiving the most leeway could
    // still accept its tokens, and deletes it after, in the store's whole
    // seconds.
    let purge = PurgeSettings::new(&world.app.settings.tokens, &Default::default());
    let kept = retired_at + ttl + TokenSettings::MAX_LEEWAY - Duration::from_secs(1);
    let PurgePass::Done(report) = purge_as_of(&world.store, &purge, kept).await.unwrap() else {
        panic!("the purge is busy");
    };
    assert_eq!(report.signing_keys, 0);
    let past = retired_at + ttl + TokenSettings::MAX_LEEWAY + Duration::from_secs(1);
    let PurgePass::Done(report) = purge_as_of(&world.store, &purge, past).await.unwrap() else {
        panic!("the purge is busy");
    };
    assert_eq!(report.signing_keys, 1);
    assert_eq!(world.store.signing_keys().await.unwrap().len(), 1);
}

async fn a_revoked_key_fails_its_tokens_at_once_here_and_soon_everywhere(backend: Backend) {
    let mut world = World::new(backend).await;
    let mut second = world.second_app().await;
    let token = world.alice_token().await.access_token;
    let old = kid_of(&token);
    assert!(world.app.validate(&token).await.valid);
    assert!(second.validate(&token).await.valid);

    let refused = world.app.keys.revoke(&old).await.unwrap_err();
    assert!(
        matches!(refused, KeyError::Refused(RevokeRefusal::OnlySigner(_))),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("authd keys rotate"),
        "{refused}"
    );
    let (new, _) = rotate(&world.app, Duration::ZERO).await;

    world.app.keys.revoke(&old).await.unwrap();

    let answer = world.app.validate(&token).await;
    assert_eq!(answer.reason(), TokenInvalidReason::BadSignature);
    assert_eq!(world.app.published_kids().await, std::slice::from_ref(&new));
    second
        .eventually_invalid(&token, TokenInvalidReason::BadSignature)
        .await;
    assert_eq!(second.published_kids().await, std::slice::from_ref(&new));
    let fresh = second
        .login("alice", "correct horse battery")
        .await
        .unwrap();
    assert_eq!(kid_of(&fresh.access_token), new);
    assert!(world.app.validate(&fresh.access_token).await.valid);
    second.stop().await;
}

async fn revoking_the_active_key_hands_signing_to_the_pending_one(backend: Backend) {
    let mut world = World::new(backend).await;
    let token = world.alice_token().await.access_token;
    let old = kid_of(&token);
    let (pending, _) = rotate(&world.app, Duration::from_secs(3600)).await;

    let promoted = world.app.keys.revoke(&old).await.unwrap();

    assert_eq!(promoted.as_deref(), Some(pending.as_str()));
    let fresh = world
        .app
        .login("alice", "correct horse battery")
        .await
        .unwrap();
    assert_eq!(kid_of(&fresh.access_token), pending);
    assert_eq!(
        world.app.validate(&token).await.reason(),
        TokenInvalidReason::BadSignature
    );
}

async fn an_automatic_rotation_happens_once_however_many_instances_ask(backend: Backend) {
    let world = World::new(backend).await;
    let second = world.second_app().await;
    let lead = Duration::from_secs(3600);

    let asks = (0..8).map(|i| {
        let keys = if i % 2 == 0 {
            &world.app.keys
        } else {
            &second.keys
        };
        keys.rotate_if_due(Duration::ZERO, lead)
    });
    let answers = futures_util::future::join_all(asks).await;

    let scheduled = answers
        .iter()
        .filter(|answer| matches!(answer, Ok(Rotation::Scheduled { .. })))
        .count();
    assert_eq!(scheduled, 1, "{answers:?}");
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    assert_eq!(world.store.signing_keys().await.unwrap().len(), 2);
    second.stop().await;
}

async fn the_server_rotates_by_itself_once_the_interval_has_passed(backend: Backend) {
    let mut world = World::with(backend, |s| {
        s.key_rotation.interval = Some(Duration::from_secs(1));
        s.key_rotation.check_every = Duration::from_millis(100);
        s.key_rotation.publish_lead = Duration::from_secs(3600);
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while world.app.published_kids().await.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no rotation after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let keys = world.store.signing_keys().await.unwrap();
    assert_eq!(keys.len(), 2, "one rotation, pending for an hour: {keys:?}");
    assert!(keys[1].activates_at > OffsetDateTime::now_utc() + Duration::from_secs(3000));
}

async fn a_restart_keeps_the_key_set_and_its_schedule(backend: Backend) {
    let mut world = World::new(backend).await;
    let token = world.alice_token().await.access_token;
    rotate(&world.app, Duration::from_secs(3600)).await;
    let before = world.app.published_kids().await;

    let settings = world.app.settings.clone();
    let old = std::mem::replace(&mut world.app, TestApp::spawn(settings).await);
    old.stop().await;

    assert_eq!(world.app.published_kids().await, before);
    assert!(world.app.validate(&token).await.valid);
    let again = world
        .app
        .login("alice", "correct horse battery")
        .await
        .unwrap();
    assert_eq!(kid_of(&again.access_token), before[0]);
}

async fn tokens_of_the_signing_key_file_stay_valid_after_the_upgrade(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(db.url(), dir.path());
    // A token the service signed before its keys moved to the database.
    let key_file = &settings.keys.signing_key_file;
    let file_key = SigningKey::load_or_generate(key_file).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.typ = Some("at+jwt".into());
    header.kid = Some(file_key.kid().to_owned());
    let claims = serde_json::json!({
        "iss": "authd", "aud": "authd", "sub": uuid::Uuid::new_v4(), "jti": uuid::Uuid::new_v4(),
        "iat": now(), "exp": now() + 600, "username": "alice", "roles": [],
    });
    let pem = std::fs::read(key_file).unwrap();
    let old_token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_pem(&pem).unwrap(),
    )
    .unwrap();

    let mut app = TestApp::spawn(settings).await;

    assert!(app.validate(&old_token).await.valid);
    assert_eq!(app.published_kids().await, [file_key.kid().to_owned()]);
    let keys = db.store().await.signing_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].kid, file_key.kid());
    app.stop().await;
}

async fn the_database_holds_no_private_key_in_plaintext(backend: Backend) {
    let world = World::new(backend).await;
    rotate(&world.app, Duration::from_secs(60)).await;
    let pem = std::fs::read(&world.app.key_file).unwrap();
    let der = pem::parse(&pem).unwrap().into_contents();
    // An Ed25519 PKCS#8 v1 document ends with the 32-byte private seed.
    let seed = &der[der.len() - 32..];

    let sealed = world.sql.sealed_keys().await;

    assert_eq!(sealed.len(), 2);
    for (kid, bytes) in &sealed {
        assert!(
            !bytes.windows(32).any(|w| w == seed),
            "{kid}: the file key's seed"
        );
        assert!(
            !bytes.windows(16).any(|w| der.windows(16).any(|d| d == w)),
            "{kid}"
        );
        assert!(!bytes.windows(11).any(|w| w == b"PRIVATE KEY"), "{kid}");
        // The PKCS#8 prefix of every Ed25519 key.
        assert!(!bytes.windows(16).any(|w| w == &der[..16]), "{kid}");
    }
}

async fn a_wrong_key_encryption_key_stops_start_up_and_changes_nothing(backend: Backend) {
    let world = World::new(backend).await;
    let rows = world.store.signing_keys().await.unwrap();
    let other = tempfile::tempdir().unwrap();
    let elsewhere = settings(world.db.url(), other.path());

    let missing = Application::build(elsewhere.clone()).await.unwrap_err();
    let missing = format!("{missing:#}");
    assert!(missing.contains("does not exist"), "{missing}");
    assert!(!missing.contains('\n'), "one line: {missing}");
    assert!(
        !elsewhere.keys.encryption_key_file.exists(),
        "nothing generated"
    );

    let kek = &elsewhere.keys.encryption_key_file;
    authd::auth::KeyEncryptionKey::generate_into(kek).unwrap();
    let written = std::fs::read(kek).unwrap();
    let wrong = Application::build(elsewhere.clone()).await.unwrap_err();
    let wrong = format!("{wrong:#}");
    assert!(wrong.contains("another key-encryption key"), "{wrong}");
    assert!(!wrong.contains('\n'), "one line: {wrong}");

    assert_eq!(std::fs::read(kek).unwrap(), written);
    assert_eq!(world.store.signing_keys().await.unwrap(), rows);
}

on_both_backends!(
    a_new_key_is_published_before_it_signs,
    a_retired_key_is_published_until_its_last_token_has_expired,
    a_revoked_key_fails_its_tokens_at_once_here_and_soon_everywhere,
    revoking_the_active_key_hands_signing_to_the_pending_one,
    an_automatic_rotation_happens_once_however_many_instances_ask,
    the_server_rotates_by_itself_once_the_interval_has_passed,
    a_restart_keeps_the_key_set_and_its_schedule,
    tokens_of_the_signing_key_file_stay_valid_after_the_upgrade,
    the_database_holds_no_private_key_in_plaintext,
    a_wrong_key_encryption_key_stops_start_up_and_changes_nothing,
);
