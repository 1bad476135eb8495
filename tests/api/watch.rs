//! WatchRevocations: a snapshot, then each revocation as any instance makes
//! it, heartbeats, resuming with nothing sent twice, and who may watch.

use std::time::Duration;

use authd::{
    auth::Rotation,
    grpc::pb::{
        LogoutRequest, LogoutScope, Revocation, RevocationEvent, WatchRevocationsRequest,
        revocation::Subject, revocation_event::Event,
    },
};
use tonic::{Code, Streaming};

use crate::helpers::{Backend, TestApp, World, bearer, on_both_backends};

const WATCHER_PASSWORD: &str = "watcher password 1";

/// A watcher's token, of a user holding the watch role.
async fn watcher_token(world: &mut World) -> String {
    world
        .add_user("watcher", WATCHER_PASSWORD, &["authd:watch"])
        .await;
    world
        .app
        .login("watcher", WATCHER_PASSWORD)
        .await
        .unwrap()
        .access_token
}

async fn watch(app: &TestApp, token: &str, resume_token: &str) -> Streaming<RevocationEvent> {
    app.client
        .clone()
        .watch_revocations(bearer(
            token,
            WatchRevocationsRequest {
                resume_token: resume_token.to_owned(),
                heartbeat_interval: None,
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn next(stream: &mut Streaming<RevocationEvent>) -> RevocationEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an event within 10 s")
        .unwrap()
        .expect("the stream goes on")
}

/// The revocations of a whole snapshot, and the resume token of its last
/// chunk; the heartbeat that follows it is read too.
async fn snapshot(stream: &mut Streaming<RevocationEvent>) -> (Vec<Revocation>, String) {
    let mut all = Vec::new();
    loop {
        let event = next(stream).await;
        let Some(Event::Snapshot(chunk)) = event.event else {
            panic!("not a snapshot: {event:?}");
        };
        all.extend(chunk.revocations);
        if chunk.complete {
            let heartbeat = next(stream).await;
            assert!(
                matches!(heartbeat.event, Some(Event::Heartbeat(_))),
                "{heartbeat:?}"
            );
            return (all, heartbeat.resume_token);
        }
    }
}

/// The next revocation, skipping heartbeats; with its resume token.
async fn revoked(stream: &mut Streaming<RevocationEvent>) -> (Subject, String) {
    loop {
        let event = next(stream).await;
        match event.event {
            Some(Event::Revoked(revocation)) => {
                return (revocation.subject.unwrap(), event.resume_token);
            }
            Some(Event::Heartbeat(_)) => {}
            other => panic!("not a revocation: {other:?}"),
        }
    }
}

/// Revocations, skipping heartbeats, until every one of `wanted` has come
/// (in whatever order: a change may also bring a later bound to an entry
/// held already); all of them, and the resume token of the last.
async fn revoked_until(
    stream: &mut Streaming<RevocationEvent>,
    wanted: &[Subject],
) -> (Vec<Subject>, String) {
    let mut seen = Vec::new();
    let mut resume = String::new();
    while !wanted.iter().all(|subject| seen.contains(subject)) {
        let (subject, token) = revoked(stream).await;
        seen.push(subject);
        resume = token;
    }
    (seen, resume)
}

async fn jti_and_sid(app: &mut TestApp, token: &str) -> (Subject, Subject) {
    let answer = app.validate(token).await;
    assert!(answer.valid);
    (
        Subject::Jti(answer.jti),
        Subject::SessionId(answer.session_id),
    )
}

async fn a_watcher_gets_a_snapshot_then_each_revocation_once(backend: Backend) {
    let mut world = World::new(backend).await;
    let watcher = watcher_token(&mut world).await;
    let (live, before) = world.alice_token_and_a_logged_out_one().await;
    let before_sid = {
        let login = world
            .app
            .login("alice", "correct horse battery")
            .await
            .unwrap();
        let ids = jti_and_sid(&mut world.app, &login.access_token).await;
        world.app.logout(&login.access_token).await.unwrap();
        ids
    };

    let mut stream = watch(&world.app, &watcher, "").await;
    let (held, _) = snapshot(&mut stream).await;
    let subjects: Vec<Subject> = held.iter().filter_map(|r| r.subject.clone()).collect();
    assert!(subjects.contains(&before_sid.0), "{subjects:?}");
    assert!(subjects.contains(&before_sid.1), "{subjects:?}");
    assert!(held.iter().all(|r| r.expires_at.is_some()));
    let _ = before;

    // A Logout now arrives as its token and its session.
    let (jti, sid) = jti_and_sid(&mut world.app, &live.access_token).await;
    world.app.logout(&live.access_token).await.unwrap();
    let (_, resume) = revoked_until(&mut stream, &[jti.clone(), sid.clone()]).await;
    drop(stream);

    // Resuming: what was missed, then a heartbeat; no snapshot, and nothing
    // sent before.
    let missed = world
        .app
        .login("alice", "correct horse battery")
        .await
        .unwrap();
    let (missed_jti, missed_sid) = jti_and_sid(&mut world.app, &missed.access_token).await;
    world.app.logout(&missed.access_token).await.unwrap();
    let mut resumed = watch(&world.app, &watcher, &resume).await;
    let mut caught_up = Vec::new();
    loop {
        let event = next(&mut resumed).await;
        match event.event {
            Some(Event::Revoked(revocation)) => caught_up.push(revocation.subject.unwrap()),
            Some(Event::Heartbeat(heartbeat)) => {
                assert!(heartbeat.as_of.is_some());
                break;
            }
            other => panic!("resumed with {other:?}"),
        }
    }
    // The missed Logout's token is in the gap; its session may come after
    // the heartbeat, once this instance has it.
    assert!(caught_up.contains(&missed_jti), "{caught_up:?}");
    assert!(!caught_up.contains(&jti), "sent twice: {caught_up:?}");
    if !caught_up.contains(&missed_sid) {
        revoked_until(&mut resumed, &[missed_sid]).await;
    }

    // A token of no process of this one's starts over.
    let mut fresh = watch(&world.app, &watcher, "r1.1.1").await;
    let (again, _) = snapshot(&mut fresh).await;
    assert!(again.len() >= held.len() + 2);
}

async fn another_instances_logout_reaches_the_watcher(backend: Backend) {
    let mut world = World::new(backend).await;
    let watcher = watcher_token(&mut world).await;
    let mut other = world.second_app().await;
    let login = world.alice_token().await;
    let (jti, _) = jti_and_sid(&mut world.app, &login.access_token).await;

    let mut stream = watch(&other, &watcher, "").await;
    snapshot(&mut stream).await;
    world.app.logout(&login.access_token).await.unwrap();
    revoked_until(&mut stream, &[jti]).await;

    // A logout everywhere is the user's cut-off.
    let again = world
        .app
        .login("alice", "correct horse battery")
        .await
        .unwrap();
    other.eventually_valid(&again.access_token).await;
    world
        .app
        .client
        .logout(LogoutRequest {
            access_token: again.access_token.clone(),
            scope: LogoutScope::User.into(),
        })
        .await
        .unwrap();
    loop {
        let event = next(&mut stream).await;
        if let Some(Event::Revoked(Revocation {
            subject: Some(Subject::UserId(user)),
            tokens_issued_before,
            ..
        })) = event.event
        {
            assert_eq!(user, login.user_id);
            assert!(tokens_issued_before.is_some());
            break;
        }
    }
}

async fn a_revoked_key_reaches_the_watcher(backend: Backend) {
    let mut world = World::new(backend).await;
    let watcher = watcher_token(&mut world).await;
    let old = world.app.published_kids().await[0].clone();
    let mut stream = watch(&world.app, &watcher, "").await;
    snapshot(&mut stream).await;
    let Rotation::Scheduled { .. } = world.app.keys.rotate(Duration::ZERO).await.unwrap() else {
        panic!("not rotated");
    };
    world.app.keys.revoke(&old).await.unwrap();
    revoked_until(&mut stream, &[Subject::KeyId(old)]).await;
}

async fn heartbeats_say_how_current_the_view_is(backend: Backend) {
    let mut world = World::with(backend, |s| {
        s.watch.heartbeat = Duration::from_millis(100);
    })
    .await;
    let watcher = watcher_token(&mut world).await;
    let mut stream = watch(&world.app, &watcher, "").await;
    snapshot(&mut stream).await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        if let Some(Event::Heartbeat(heartbeat)) = next(&mut stream).await.event {
            seen.push(heartbeat.as_of.unwrap());
        }
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        seen.iter().all(|at| (now - at.seconds).abs() <= 5),
        "{seen:?}"
    );
}

async fn only_watchers_may_watch(backend: Backend) {
    let mut world = World::new(backend).await;
    let alice = world.alice_token().await.access_token;
    let mut client = world.app.client.clone();
    let refused = client
        .watch_revocations(WatchRevocationsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let refused = client
        .watch_revocations(bearer(&alice, WatchRevocationsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("authd:watch"), "{refused:?}");
}

on_both_backends!(
    a_watcher_gets_a_snapshot_then_each_revocation_once,
    another_instances_logout_reaches_the_watcher,
    a_revoked_key_reaches_the_watcher,
    heartbeats_say_how_current_the_view_is,
    only_watchers_may_watch,
);

#[tokio::test]
async fn the_stream_ends_unavailable_when_the_server_stops() {
    let mut world = World::new(Backend::Sqlite).await;
    let watcher = watcher_token(&mut world).await;
    let mut stream = watch(&world.app, &watcher, "").await;
    snapshot(&mut stream).await;
    let stopping = world.app.begin_stop();
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the stream ends within 10 s")
        {
            Ok(Some(_)) => {}
            Ok(None) => panic!("ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Unavailable);
    stopping.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_watcher_may_ask_for_heartbeats_more_often_than_the_servers() {
    let mut world = World::with(Backend::Sqlite, |s| {
        s.watch.heartbeat = Duration::from_secs(3600);
    })
    .await;
    let watcher = watcher_token(&mut world).await;
    let asking = |interval: prost_types::Duration| {
        bearer(
            &watcher,
            WatchRevocationsRequest {
                resume_token: String::new(),
                heartbeat_interval: Some(interval),
            },
        )
    };
    let mut stream = world
        .app
        .client
        .clone()
        .watch_revocations(asking(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    snapshot(&mut stream).await;
    // Two more within `next`'s 10 s, where the server's own come hourly.
    for _ in 0..2 {
        let event = next(&mut stream).await;
        assert!(
            matches!(event.event, Some(Event::Heartbeat(_))),
            "{event:?}"
        );
    }

    let refused = world
        .app
        .client
        .clone()
        .watch_revocations(asking(prost_types::Duration {
            seconds: -1,
            nanos: 0,
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    use tonic_types::StatusExt as _;
    let details = refused.get_error_details();
    assert_eq!(
        details.bad_request().unwrap().field_violations[0].field,
        "heartbeat_interval"
    );
}
