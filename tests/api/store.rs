//! The storage interface's contract, checked on each backend: what one
//! backend does, the other does too.

use authd::{
    domain::{Role, SessionId, UserId, UserRef, Username},
    store::{
        AddUserError, FailedLogins, NewUser, Revocation, SessionRecord, SessionSelection,
        Storage as _, Store,
    },
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::helpers::{Backend, TestDb, on_both_backends};

fn name(raw: &str) -> UserRef {
    UserRef::Name(Username::parse(raw).unwrap())
}

/// A whole second, as cut-offs and expiries are: `offset_s` from an instant
/// fixed the first time it is asked for, so that two calls agree even when
/// the clock ticks between them.
fn second(offset_s: i64) -> OffsetDateTime {
    static BASE: std::sync::LazyLock<i64> = std::sync::LazyLock::new(crate::helpers::now);
    OffsetDateTime::from_unix_timestamp(*BASE + offset_s).unwrap()
}

async fn add(store: &Store, username: &str, roles: &[&str]) -> Result<UserId, AddUserError> {
    let id = UserId::generate();
    let roles: Vec<Role> = roles.iter().map(|r| Role::parse(*r).unwrap()).collect();
    store
        .add_user(NewUser {
            id,
            username: &Username::parse(username).unwrap(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            roles: &roles,
        })
        .await
        .map(|user| {
            assert_eq!(user.id, id, "the user as stored");
            id
        })
}

fn role_names(roles: &[Role]) -> Vec<&str> {
    roles.iter().map(Role::as_str).collect()
}

async fn users_are_found_by_name_whatever_the_case_or_composition(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let id = add(&store, "Élodie", &["reader", "ops"]).await.unwrap();

    for spelling in ["Élodie", "élodie", "ÉLODIE", "E\u{301}lodie"] {
        let user = store
            .find_user(&name(spelling))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{spelling} finds the user"));
        assert_eq!(user.id, id);
        assert_eq!(
            user.username.as_str(),
            "Élodie",
            "the spelling given at creation"
        );
        assert_eq!(role_names(&user.roles), ["reader", "ops"]);
        assert!(user.disabled_at.is_none() && user.tokens_valid_after.is_none());
        assert!((user.created_at - OffsetDateTime::now_utc()).abs() < time::Duration::minutes(1));
    }
    assert!(store.find_user(&name("elodie")).await.unwrap().is_none());
    for taken in ["élodie", "ÉLODIE", "E\u{301}LODIE"] {
        assert!(
            matches!(add(&store, taken, &[]).await, Err(AddUserError::NameTaken)),
            "{taken}"
        );
    }
    assert_eq!(store.count_users().await.unwrap(), 1);
}

async fn users_are_listed_by_name_with_their_roles(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    assert_eq!(store.count_users().await.unwrap(), 0);
    add(&store, "carol", &[]).await.unwrap();
    add(&store, "Alice", &["admin"]).await.unwrap();
    add(&store, "bob", &["a", "b"]).await.unwrap();

    let users = store.list_users(None, 100).await.unwrap();
    let listed: Vec<(&str, Vec<&str>)> = users
        .iter()
        .map(|u| (u.username.as_str(), role_names(&u.roles)))
        .collect();
    assert_eq!(
        listed,
        [
            ("Alice", vec!["admin"]),
            ("bob", vec!["a", "b"]),
            ("carol", vec![]),
        ]
    );
    assert_eq!(store.count_users().await.unwrap(), 3);
}

async fn users_are_listed_a_page_at_a_time_after_a_key(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    for user in ["dave", "Bob", "alice", "Élodie", "carol"] {
        add(&store, user, &[]).await.unwrap();
    }
    let names = |users: Vec<authd::store::UserRecord>| -> Vec<String> {
        users.iter().map(|u| u.username.to_string()).collect()
    };
    let first = store.list_users(None, 2).await.unwrap();
    assert_eq!(names(first), ["alice", "Bob"]);
    let second = store.list_users(Some("bob"), 2).await.unwrap();
    assert_eq!(names(second), ["carol", "dave"]);
    let last = store.list_users(Some("dave"), 2).await.unwrap();
    assert_eq!(names(last), ["Élodie"]);
    assert!(
        store
            .list_users(Some("élodie"), 2)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        names(store.list_users(Some("b"), 1).await.unwrap()),
        ["Bob"],
        "after a key no user has"
    );
}

async fn roles_change_only_from_the_roles_expected(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let id = add(&store, "alice", &["reader", "writer"]).await.unwrap();
    let roles =
        |names: &[&str]| -> Vec<Role> { names.iter().map(|r| Role::parse(*r).unwrap()).collect() };
    let before = store.find_user(&UserRef::Id(id)).await.unwrap().unwrap();

    let stale = store
        .set_roles(id, &roles(&["reader"]), &roles(&["ops"]), None)
        .await
        .unwrap();
    assert!(stale.is_none(), "another change came first");

    let changed = store
        .set_roles(
            id,
            &roles(&["reader", "writer"]),
            &roles(&["reader"]),
            Some(second(7)),
        )
        .await
        .unwrap()
        .expect("changed");
    assert_eq!(role_names(&changed.roles), ["reader"]);
    assert_eq!(changed.tokens_valid_after, Some(second(7)));
    assert!(changed.updated_at >= before.updated_at);
    assert_eq!(
        changed,
        store.find_user(&name("alice")).await.unwrap().unwrap()
    );

    let added = store
        .set_roles(id, &roles(&["reader"]), &roles(&["reader", "ops"]), None)
        .await
        .unwrap()
        .expect("changed");
    assert_eq!(role_names(&added.roles), ["reader", "ops"]);
    assert_eq!(
        added.tokens_valid_after,
        Some(second(7)),
        "no cut-off given"
    );
    let none = store
        .set_roles(id, &roles(&["reader", "ops"]), &[], Some(second(3)))
        .await
        .unwrap()
        .expect("changed");
    assert!(none.roles.is_empty());
    assert_eq!(
        none.tokens_valid_after,
        Some(second(7)),
        "a later one stays"
    );
    assert!(
        store
            .set_roles(UserId::generate(), &[], &[], None)
            .await
            .unwrap()
            .is_none()
    );
}

async fn the_deployment_keeps_its_claims_and_its_longest_lifetime(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    assert!(store.deployment().await.unwrap().is_none());
    let hour = std::time::Duration::from_secs(3600);
    let first = store.record_deployment("iss", "aud", hour).await.unwrap();
    assert_eq!(
        (first.issuer.as_str(), first.audience.as_str()),
        ("iss", "aud")
    );
    assert_eq!(first.max_access_token_ttl, hour);
    let shorter = store
        .record_deployment("iss", "aud", hour / 4)
        .await
        .unwrap();
    assert_eq!(shorter.max_access_token_ttl, hour, "never lowered");
    let longer = store
        .record_deployment("iss", "aud", hour * 2)
        .await
        .unwrap();
    assert_eq!(longer.max_access_token_ttl, hour * 2);
    let other = store
        .record_deployment("other", "aud", hour * 5)
        .await
        .unwrap();
    assert_eq!(other, longer, "other claims change nothing");
    assert_eq!(store.deployment().await.unwrap(), Some(longer));
}

async fn a_cut_off_only_ever_moves_forward(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    add(&store, "alice", &[]).await.unwrap();
    let alice = name("ALICE");

    assert!(
        store
            .set_password(&alice, "h1", second(10))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .set_password(&alice, "h2", second(-10))
            .await
            .unwrap()
            .is_some()
    );
    let user = store.find_user(&alice).await.unwrap().unwrap();
    assert_eq!(user.password_hash, "h2");
    assert_eq!(user.tokens_valid_after, Some(second(10)));

    assert!(
        store
            .disable_user(&alice, second(5))
            .await
            .unwrap()
            .is_some()
    );
    let user = store.find_user(&alice).await.unwrap().unwrap();
    assert_eq!(user.tokens_valid_after, Some(second(10)));
    assert!(
        store
            .disable_user(&alice, second(20))
            .await
            .unwrap()
            .is_some()
    );
    let user = store.find_user(&alice).await.unwrap().unwrap();
    assert_eq!(user.tokens_valid_after, Some(second(20)));

    assert!(
        store
            .set_password(&name("ghost"), "h", second(0))
            .await
            .unwrap()
            .is_none()
    );
}

async fn disabling_keeps_its_first_instant_and_enabling_clears_it(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let id = add(&store, "alice", &[]).await.unwrap();
    let alice = name("alice");

    assert!(
        store
            .disable_user(&alice, second(1))
            .await
            .unwrap()
            .is_some()
    );
    let first = store.find_user(&alice).await.unwrap().unwrap();
    let disabled_at = first.disabled_at.expect("disabled");
    assert!(
        store
            .disable_user(&alice, second(1))
            .await
            .unwrap()
            .is_some()
    );
    let again = store.find_user(&alice).await.unwrap().unwrap();
    assert_eq!(again.disabled_at, Some(disabled_at));
    assert!(revocations(&store).await.contains(&Revocation::User {
        id,
        disabled: true,
        tokens_valid_after: Some(second(1).unix_timestamp()),
    }));

    assert!(store.enable_user(&alice).await.unwrap().is_some());
    let enabled = store.find_user(&alice).await.unwrap().unwrap();
    assert!(enabled.disabled_at.is_none());
    assert_eq!(
        enabled.tokens_valid_after,
        Some(second(1)),
        "the cut-off stays"
    );

    let ghost = name("ghost");
    assert!(
        store
            .disable_user(&ghost, second(0))
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.enable_user(&ghost).await.unwrap().is_none());
    assert!(store.delete_user(&ghost).await.unwrap().is_none());
    assert_eq!(
        store.delete_user(&UserRef::Id(id)).await.unwrap(),
        Some(id),
        "by id"
    );
}

/// Everything the store reports to the in-memory revocation state.
async fn revocations(store: &Store) -> Vec<Revocation> {
    let mut seen = Vec::new();
    store
        .load_revocations(&mut |revocation| seen.push(revocation))
        .await
        .unwrap();
    seen
}

async fn the_feed_reports_every_revocation_in_force(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let alice = add(&store, "alice", &[]).await.unwrap();
    let bob = add(&store, "bob", &[]).await.unwrap();
    add(&store, "carol", &[]).await.unwrap();
    assert_eq!(revocations(&store).await, [], "no one is restricted yet");

    let (live, expired) = (Uuid::new_v4(), Uuid::new_v4());
    assert!(store.revoke(live, alice, second(3600), None).await.unwrap());
    assert!(
        !store.revoke(live, alice, second(3600), None).await.unwrap(),
        "once"
    );
    assert!(
        store
            .revoke(expired, alice, second(-3600), None)
            .await
            .unwrap()
    );
    store
        .set_password(&name("alice"), "h", second(3))
        .await
        .unwrap();
    store.delete_user(&name("bob")).await.unwrap();

    let mut seen = revocations(&store).await;
    seen.sort_by_key(|r| format!("{r:?}"));
    let mut wanted = vec![
        Revocation::Token {
            jti: live,
            expires_at: second(3600).unix_timestamp(),
        },
        Revocation::User {
            id: alice,
            disabled: false,
            tokens_valid_after: Some(second(3).unix_timestamp()),
        },
        Revocation::UserDeleted { id: bob },
    ];
    wanted.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(seen, wanted, "the expired revocation is not loaded");
}

async fn a_catch_up_reads_what_changed_since_the_last_read(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let (reader, writer) = (store.clone(), db.store().await);
    let alice = add(&writer, "alice", &[]).await.unwrap();
    let cursor = reader.load_revocations(&mut |_| {}).await.unwrap();

    let jti = Uuid::new_v4();
    writer.revoke(jti, alice, second(3600), None).await.unwrap();
    writer
        .disable_user(&name("alice"), second(2))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let cursor = reader
        .revocations_since(&cursor, &mut |r| seen.push(r))
        .await
        .unwrap();
    assert!(seen.contains(&Revocation::Token {
        jti,
        expires_at: second(3600).unix_timestamp()
    }));
    assert!(seen.contains(&Revocation::User {
        id: alice,
        disabled: true,
        tokens_valid_after: Some(second(2).unix_timestamp()),
    }));

    writer.delete_user(&name("alice")).await.unwrap();
    let mut later = Vec::new();
    reader
        .revocations_since(&cursor, &mut |r| later.push(r))
        .await
        .unwrap();
    assert!(later.contains(&Revocation::UserDeleted { id: alice }));
}

async fn a_rehash_replaces_only_the_hash_it_was_computed_from(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let id = add(&store, "alice", &[]).await.unwrap();
    let old = store
        .find_user(&name("alice"))
        .await
        .unwrap()
        .unwrap()
        .password_hash;

    assert!(
        !store
            .replace_password_hash(id, "not the hash", "new")
            .await
            .unwrap()
    );
    assert!(store.replace_password_hash(id, &old, "new").await.unwrap());
    assert!(
        !store
            .replace_password_hash(id, &old, "newer")
            .await
            .unwrap()
    );
    let user = store.find_user(&name("alice")).await.unwrap().unwrap();
    assert_eq!(user.password_hash, "new");
    assert!(
        user.tokens_valid_after.is_none(),
        "a rehash revokes nothing"
    );
}

/// Two processes' worth of pools writing at once: every write succeeds (no
/// "database is locked" reaches the caller) and every one is kept.
async fn concurrent_writers_on_one_database_all_succeed(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (one, two) = (db.store().await, db.store().await);
    let id = add(&one, "alice", &[]).await.unwrap();

    let mut writes = tokio::task::JoinSet::new();
    for i in 0..400 {
        let store = if i % 2 == 0 { one.clone() } else { two.clone() };
        writes.spawn(async move {
            if i % 50 == 0 {
                store
                    .set_password(&name("alice"), "h", second(0))
                    .await
                    .map(drop)
            } else {
                store
                    .revoke(Uuid::new_v4(), id, second(3600), None)
                    .await
                    .map(drop)
            }
        });
    }
    while let Some(result) = writes.join_next().await {
        result.unwrap().expect("every concurrent write succeeds");
    }
    assert_eq!(db.sql().await.revoked_rows().await, 400 - 8);
}

/// Instances starting together on a new database each migrate it.
async fn instances_starting_together_all_migrate(backend: Backend) {
    let db = TestDb::new(backend).await;
    let url: authd::store::DatabaseUrl = db.url().parse().unwrap();
    let mut starts = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let settings = authd::store::DatabaseSettings::new(url.clone());
        starts.spawn(async move {
            let store = Store::connect(&settings).await?;
            store.migrate().await?;
            anyhow::Ok(store)
        });
    }
    while let Some(started) = starts.join_next().await {
        let store = started.unwrap().expect("every instance starts");
        assert_eq!(store.count_users().await.unwrap(), 0);
    }
}

async fn deleted_users_are_forgotten_once_their_tokens_cannot_be_current(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let bob = add(&store, "bob", &[]).await.unwrap();
    store.delete_user(&name("bob")).await.unwrap();
    assert_eq!(
        revocations(&store).await,
        [Revocation::UserDeleted { id: bob }]
    );

    assert_eq!(store.forget_deleted_users(second(-3600)).await.unwrap(), 0);
    assert_eq!(store.forget_deleted_users(second(3600)).await.unwrap(), 1);
    assert_eq!(revocations(&store).await, []);
}

async fn failed_logins_are_kept_replaced_deleted_and_forgotten(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let read =
        |store: Store, key: &'static str| async move { store.failed_logins(key).await.unwrap() };
    assert_eq!(read(store.clone(), "alice").await, None);

    let record = FailedLogins {
        failures: 6,
        last_failed_at: second(0),
        blocked_until: Some(second(3)),
    };
    let mut given = Some(record);
    store
        .update_failed_logins("alice", |old| {
            given = old;
            Some(record)
        })
        .await
        .unwrap();
    assert_eq!(given, None, "the update is given what was there");
    assert_eq!(read(store.clone(), "alice").await, Some(record));
    let unblocked = FailedLogins {
        failures: 2,
        last_failed_at: second(10),
        blocked_until: None,
    };
    store
        .update_failed_logins("bob", |_| Some(unblocked))
        .await
        .unwrap();
    assert_eq!(read(store.clone(), "bob").await, Some(unblocked));

    // Forgotten once both the last failure and the back-off are over.
    assert_eq!(store.forget_failed_logins(second(2)).await.unwrap(), 0);
    assert_eq!(store.forget_failed_logins(second(4)).await.unwrap(), 1);
    assert_eq!(read(store.clone(), "alice").await, None);
    assert_eq!(read(store.clone(), "bob").await, Some(unblocked));

    store.update_failed_logins("bob", |_| None).await.unwrap();
    assert_eq!(read(store.clone(), "bob").await, None);
}

/// A session of `user` started at `second(created)`, whose last access
/// token lives until `second(60)`.
fn session(user: UserId, created: i64) -> SessionRecord {
    SessionRecord {
        id: SessionId::generate(),
        user_id: user,
        created_at: second(created),
        last_refreshed_at: second(created),
        expires_at: second(3600),
        max_expires_at: second(7200),
        revoked_at: None,
        client_address: Some("192.0.2.1".to_owned()),
        user_agent: None,
        generation: 1,
        access_expires_at: second(60),
    }
}

fn ended(session: &SessionRecord) -> Revocation {
    Revocation::Session {
        id: session.id,
        expires_at: second(60).unix_timestamp(),
    }
}

async fn sessions_are_stored_changed_listed_ended_and_forgotten(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let alice = add(&store, "alice", &[]).await.unwrap();
    let bob = add(&store, "bob", &[]).await.unwrap();
    let (first, second_one, bobs) = (session(alice, 0), session(alice, 1), session(bob, 0));
    for session in [&first, &second_one, &bobs] {
        store.create_session(session).await.unwrap();
    }
    assert!(
        store.create_session(&first).await.is_err(),
        "an id is never reused"
    );
    let listed = |store: Store| async move {
        let sessions = store.list_sessions(alice, second(2)).await.unwrap();
        sessions.into_iter().map(|s| s.id).collect::<Vec<_>>()
    };
    assert_eq!(
        listed(store.clone()).await,
        [second_one.id, first.id],
        "newest first"
    );
    let live = store.list_sessions(alice, second(2)).await.unwrap();
    assert_eq!(live[1], first, "stored as given");
    assert!(
        store
            .list_sessions(alice, second(3600))
            .await
            .unwrap()
            .is_empty(),
        "expired"
    );

    // A change decided from the stored session and its user.
    let unchanged = store
        .update_session(first.id, |found| {
            let (session, user) = found.expect("found");
            assert_eq!((session.id, user.id), (first.id, alice));
            (None, "decided")
        })
        .await
        .unwrap();
    assert_eq!(unchanged, "decided");
    let mut rotated = first.clone();
    rotated.generation = 2;
    rotated.last_refreshed_at = second(5);
    rotated.expires_at = second(3605);
    rotated.access_expires_at = second(65);
    let next = rotated.clone();
    store
        .update_session(first.id, move |_| (Some(next.clone()), ()))
        .await
        .unwrap();
    let live = store.list_sessions(alice, second(2)).await.unwrap();
    assert_eq!(live[1], rotated);
    let missing = store
        .update_session(SessionId::generate(), |found| (None, found.is_none()))
        .await
        .unwrap();
    assert!(missing);
    let first = rotated;

    // Concurrent decisions on one generation, from two processes: one
    // write wins, the others decide again from what it left.
    let other = db.store().await;
    let rotations = (0..10).map(|n| {
        let store = [&store, &other][n % 2].clone();
        let id = second_one.id;
        tokio::spawn(async move {
            store
                .update_session(id, |found| {
                    let (mut session, _) = found.expect("found");
                    if session.generation != 1 {
                        return (None, false);
                    }
                    session.generation = 2;
                    (Some(session), true)
                })
                .await
                .unwrap()
        })
    });
    let mut won = 0;
    for rotation in rotations.collect::<Vec<_>>() {
        won += usize::from(rotation.await.unwrap());
    }
    assert_eq!(won, 1, "exactly one rotation");

    // Ending: never another user's; the one asked for even when ended.
    let nothing = store
        .end_sessions(alice, SessionSelection::One(bobs.id), second(6))
        .await
        .unwrap();
    assert_eq!(nothing, []);
    let others = store
        .end_sessions(alice, SessionSelection::AllBut(second_one.id), second(6))
        .await
        .unwrap();
    let first_ended = Revocation::Session {
        id: first.id,
        expires_at: second(65).unix_timestamp(),
    };
    assert_eq!(others, [first_ended]);
    let again = store
        .end_sessions(alice, SessionSelection::One(first.id), second(7))
        .await
        .unwrap();
    assert_eq!(again, [first_ended]);
    assert_eq!(listed(store.clone()).await, [second_one.id]);
    assert!(
        revocations(&store).await.contains(&first_ended),
        "in the feed"
    );

    // A cut-off ends the sessions started before it.
    store.cut_off_user(alice, second(2)).await.unwrap().unwrap();
    assert_eq!(listed(store.clone()).await, []);
    assert!(revocations(&store).await.contains(&ended(&second_one)));
    assert_eq!(
        store
            .cut_off_user(UserId::generate(), second(2))
            .await
            .unwrap(),
        None
    );

    // A Logout: the token's row ends its session in the same statement,
    // never another user's.
    let jti = Uuid::new_v4();
    assert!(
        store
            .revoke(jti, alice, second(60), Some(bobs.id))
            .await
            .unwrap()
    );
    assert!(!revocations(&store).await.contains(&ended(&bobs)));
    let jti = Uuid::new_v4();
    assert!(
        store
            .revoke(jti, bob, second(60), Some(bobs.id))
            .await
            .unwrap()
    );
    let seen = revocations(&store).await;
    assert!(seen.contains(&ended(&bobs)));
    assert!(seen.contains(&Revocation::Token {
        jti,
        expires_at: second(60).unix_timestamp()
    }));

    // Forgotten once no access token of theirs can be current.
    assert_eq!(store.forget_sessions(second(60), 2).await.unwrap(), 0);
    assert_eq!(store.forget_sessions(second(61), 2).await.unwrap(), 2);
    assert_eq!(store.forget_sessions(second(66), 2).await.unwrap(), 1);
}

on_both_backends!(
    sessions_are_stored_changed_listed_ended_and_forgotten,
    failed_logins_are_kept_replaced_deleted_and_forgotten,
    deleted_users_are_forgotten_once_their_tokens_cannot_be_current,
    users_are_found_by_name_whatever_the_case_or_composition,
    users_are_listed_by_name_with_their_roles,
    users_are_listed_a_page_at_a_time_after_a_key,
    roles_change_only_from_the_roles_expected,
    the_deployment_keeps_its_claims_and_its_longest_lifetime,
    a_cut_off_only_ever_moves_forward,
    disabling_keeps_its_first_instant_and_enabling_clears_it,
    the_feed_reports_every_revocation_in_force,
    a_catch_up_reads_what_changed_since_the_last_read,
    a_rehash_replaces_only_the_hash_it_was_computed_from,
    concurrent_writers_on_one_database_all_succeed,
    instances_starting_together_all_migrate,
);
