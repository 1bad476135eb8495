//! Sessions: refresh-token rotation, the reuse grace and reuse detection,
//! the logout scopes, and a user's own sessions, on both backends.

use std::time::Duration;

use authd::{
    auth::RefreshTokenKey,
    domain::{UserRef, Username},
    grpc::pb::{
        ListSessionsRequest, LoginResponse, LogoutRequest, LogoutScope, RevokeSessionRequest,
        Session, TokenInvalidReason, auth_service_client::AuthServiceClient,
    },
    jobs::purge::{PurgePass, purge_once},
};
use secrecy::ExposeSecret as _;
use tonic::{Code, Status, transport::Channel};

use crate::helpers::{Backend, DbProxy, Forger, TestApp, World, bearer, now, on_both_backends};

const PASSWORD: &str = "correct horse battery";

async fn list(app: &mut TestApp, token: &str) -> Result<Vec<Session>, Status> {
    app.client
        .list_sessions(bearer(token, ListSessionsRequest {}))
        .await
        .map(|answer| answer.into_inner().sessions)
}

async fn revoke(app: &mut TestApp, token: &str, session_id: &str) -> Result<(), Status> {
    app.client
        .revoke_session(bearer(
            token,
            RevokeSessionRequest {
                session_id: session_id.to_owned(),
            },
        ))
        .await
        .map(drop)
}

async fn logout(app: &mut TestApp, token: &str, scope: LogoutScope) -> Result<(), Status> {
    app.client
        .logout(LogoutRequest {
            access_token: token.to_owned(),
            scope: scope.into(),
        })
        .await
        .map(drop)
}

async fn log_in(world: &mut World) -> LoginResponse {
    world.app.login("alice", PASSWORD).await.unwrap()
}

async fn with_alice(
    backend: Backend,
    tweak: impl FnOnce(&mut authd::startup::ServeSettings),
) -> World {
    let world = World::with(backend, tweak).await;
    world.add_user("alice", PASSWORD, &["reader"]).await;
    world
}

fn assert_refused(result: Result<LoginResponse, Status>) {
    let status = result.expect_err("the refresh is refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "invalid refresh token");
}

async fn assert_revoked(app: &mut TestApp, token: &str) {
    let answer = app.validate(token).await;
    assert_eq!(answer.reason(), TokenInvalidReason::Revoked, "{answer:?}");
}

async fn a_login_starts_a_session_its_tokens_name(backend: Backend) {
    let mut world = with_alice(backend, |_| {}).await;
    let before = now();
    let login = log_in(&mut world).await;
    assert!(
        login.refresh_token.starts_with("authd_rt_"),
        "{}",
        login.refresh_token
    );
    let session_id = uuid::Uuid::parse_str(&login.session_id).unwrap();
    let refresh_expires = login.refresh_expires_at.unwrap().seconds;
    let thirty_days = 30 * 24 * 3600;
    assert!((before + thirty_days..=now() + thirty_days).contains(&refresh_expires));

    let answer = world.app.validate(&login.access_token).await;
    assert!(answer.valid);
    assert_eq!(answer.session_id, login.session_id);
    let claims = Forger::claims_like(&login.access_token, serde_json::json!({}));
    assert_eq!(claims["sid"], session_id.to_string());

    let sessions = list(&mut world.app, &login.access_token).await.unwrap();
    assert_eq!(sessions.len(), 1);
    let session = &sessions[0];
    assert_eq!(session.session_id, login.session_id);
    assert!(session.current);
    assert_eq!(session.client_address, "127.0.0.1");
    assert!(
        session.user_agent.contains("tonic"),
        "{}",
        session.user_agent
    );
    assert_eq!(session.created_at, session.last_refreshed_at);
    assert_eq!(
        session.expires_at, login.refresh_expires_at,
        "the expiry the client was told is the one kept"
    );
    assert_eq!(session.expires_at.unwrap().seconds, refresh_expires);
}

async fn refresh_rotates_the_refresh_token(backend: Backend) {
    let mut world = with_alice(backend, |_| {}).await;
    let login = log_in(&mut world).await;
    let first = world.app.refresh(&login.refresh_token).await.unwrap();
    assert_ne!(first.refresh_token, login.refresh_token);
    assert_ne!(first.access_token, login.access_token);
    assert_eq!(first.session_id, login.session_id);
    assert_eq!(first.user_id, login.user_id);
    assert_eq!(first.token_type, "Bearer");
    let answer = world.app.validate(&first.access_token).await;
    assert!(answer.valid);
    assert_eq!(answer.session_id, login.session_id);
    assert_eq!(answer.roles, ["reader"]);
    let second = world.app.refresh(&first.refresh_token).await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert!(
        world.app.validate(&login.access_token).await.valid,
        "rotation revokes nothing"
    );
    assert_eq!(
        world
            .sql
            .scalar("select cast(generation as bigint) from sessions")
            .await,
        3
    );
}

async fn concurrent_refreshes_of_one_token_share_one_new_generation(backend: Backend) {
    let mut world = with_alice(backend, |_| {}).await;
    let login = log_in(&mut world).await;
    // Half of them on another instance: the lock is the database's.
    let second = world.second_app().await;
    let calls = (0..20).map(|n| {
        let mut client = [&world.app, &second][n % 2].client.clone();
        let token = login.refresh_token.clone();
        tokio::spawn(async move {
            client
                .refresh(authd::grpc::pb::RefreshRequest {
                    refresh_token: token,
                })
                .await
                .map(tonic::Response::into_inner)
        })
    });
    let mut answers = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        answers.push(
            call.await
                .unwrap()
                .expect("every concurrent refresh succeeds"),
        );
    }
    let next = &answers[0].refresh_token;
    assert!(answers.iter().all(|answer| &answer.refresh_token == next));
    let access: std::collections::HashSet<_> = answers.iter().map(|a| &a.access_token).collect();
    assert_eq!(access.len(), 20, "each gets an access token of its own");
    for answer in &answers {
        assert!(world.app.validate(&answer.access_token).await.valid);
    }
    assert_eq!(
        world
            .sql
            .scalar("select cast(generation as bigint) from sessions")
            .await,
        2
    );
    // The chain goes on from the one new token.
    world.app.refresh(next).await.unwrap();
    second.stop().await;
}

async fn tokens_without_a_session_still_validate(backend: Backend) {
    let mut world = with_alice(backend, |_| {}).await;
    let login = log_in(&mut world).await;
    let forger = Forger::for_app(&world.app, &login.access_token);
    // As issued before sessions existed.
    let legacy = forger.sign(
        &forger.header(),
        &Forger::fresh_like(&login.access_token, serde_json::json!({"sid": null})),
    );
    let answer = world.app.validate(&legacy).await;
    assert!(answer.valid, "{answer:?}");
    assert_eq!(answer.session_id, "");
    for bad in [serde_json::json!("not-a-uuid"), serde_json::json!(7)] {
        let token = forger.sign(
            &forger.header(),
            &Forger::fresh_like(&login.access_token, serde_json::json!({ "sid": bad })),
        );
        let answer = world.app.validate(&token).await;
        assert_eq!(answer.reason(), TokenInvalidReason::Malformed, "{bad}");
    }
    // Logging it out ends no session; the user's sessions live on.
    world.app.logout(&legacy).await.unwrap();
    assert_revoked(&mut world.app, &legacy).await;
    world.app.refresh(&login.refresh_token).await.unwrap();
}

async fn the_previous_token_within_the_grace_gets_the_same_new_token(backend: Backend) {
    let mut world = with_alice(backend, |_| {}).await;
    let login = log_in(&mut world).await;
    let first = world.app.refresh(&login.refresh_token).await.unwrap();
    let retried = world.app.refresh(&login.refresh_token).await.unwrap();
    assert_eq!(retried.refresh_token, first.refresh_token);
    assert_ne!(retried.access_token, first.access_token);
    assert!(world.app.validate(&retried.access_token).await.valid);
    assert!(world.app.validate(&first.access_token).await.valid);
    world.app.refresh(&first.refresh_token).await.unwrap();
}

async fn a_spent_token_ends_the_session_and_revokes_its_access_tokens(backend: Backend) {
    // No grace: the token replaced last is spent at once.
    let mut world = with_alice(backend, |s| s.sessions.reuse_grace = Duration::ZERO).await;
    for reused in [0, 1] {
        let login = log_in(&mut world).await;
        let first = world.app.refresh(&login.refresh_token).await.unwrap();
        let second = world.app.refresh(&first.refresh_token).await.unwrap();
        // 0: an older token; 1: the one replaced last, after the grace.
        let spent = [&login.refresh_token, &first.refresh_token][reused];
        assert_refused(world.app.refresh(spent).await);
        for access in [
            &login.access_token,
            &first.access_token,
            &second.access_token,
        ] {
            assert_revoked(&mut world.app, access).await;
        }
        assert_refused(world.app.refresh(&second.refresh_token).await);
    }
}

async fn bad_refresh_tokens_are_refused_alike(backend: Backend) {
    let mut world = with_alice(backend, |_| {}).await;
    let login = log_in(&mut world).await;
    let key = world.app.keys.refresh_token_key();
    let session = authd::domain::SessionId::parse(&login.session_id).unwrap();
    let other_key = RefreshTokenKey::generate().unwrap();
    let unknown_session = key.mint(authd::domain::SessionId::generate(), 1);
    let never_issued = key.mint(session, 5);
    let other = other_key.mint(session, 1);
    let mut altered = login.refresh_token.clone();
    altered.pop();
    for token in [
        "authd_rt_",
        "not a token",
        altered.as_str(),
        unknown_session.expose_secret(),
        never_issued.expose_secret(),
        other.expose_secret(),
        &login.access_token,
    ] {
        assert_refused(world.app.refresh(token).await);
    }
    // None of them ended the session.
    world.app.refresh(&login.refresh_token).await.unwrap();

    for (token, problem) in [
        (String::new(), "must not be empty"),
        ("a".repeat(1025), "at most 1024"),
    ] {
        let status = world.app.refresh(&token).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("refresh_token"),
            "{}",
            status.message()
        );
        assert!(status.message().contains(problem), "{}", status.message());
    }
}

async fn sessions_lapse_unused_and_at_their_maximum_age(backend: Backend) {
    let mut world = with_alice(backend, |s| s.sessions.max_age = Duration::from_secs(3600)).await;
    let login = log_in(&mut world).await;
    let created = world
        .sql
        .scalar("select count(*) from sessions where expires_at = max_expires_at")
        .await;
    assert_eq!(
        created, 1,
        "a refresh-token lifetime beyond the maximum age is cut to it"
    );
    let refreshed = world.app.refresh(&login.refresh_token).await.unwrap();
    let max_age_end = login.refresh_expires_at.unwrap().seconds;
    assert_eq!(refreshed.refresh_expires_at.unwrap().seconds, max_age_end);

    // Unused past its expiry.
    world
        .sql
        .execute("update sessions set expires_at = created_at")
        .await;
    assert_refused(world.app.refresh(&refreshed.refresh_token).await);
    assert!(
        list(&mut world.app, &refreshed.access_token)
            .await
            .unwrap()
            .is_empty()
    );

    // At its maximum age, however recently refreshed.
    let mut world = with_alice(backend, |s| s.sessions.max_age = Duration::from_secs(2)).await;
    let login = log_in(&mut world).await;
    let expires = login.refresh_expires_at.unwrap().seconds;
    assert!(expires <= now() + 2, "{expires}");
    world
        .sql
        .execute("update sessions set max_expires_at = created_at, expires_at = created_at")
        .await;
    assert_refused(world.app.refresh(&login.refresh_token).await);
}

async fn users_that_may_not_log_in_cannot_refresh(backend: Backend) {
    let mut world = with_alice(backend, |_| {}).await;
    let alice = UserRef::Name(Username::parse("alice").unwrap());

    let login = log_in(&mut world).await;
    world.accounts.disable(&alice).await.unwrap();
    assert_refused(world.app.refresh(&login.refresh_token).await);
    world.accounts.enable(&alice).await.unwrap();
    assert_refused(world.app.refresh(&login.refresh_token).await);

    let login = log_in(&mut world).await;
    let password = authd::domain::Password::parse("another long password").unwrap();
    world
        .accounts
        .change_password(&alice, &password)
        .await
        .unwrap();
    assert_refused(world.app.refresh(&login.refresh_token).await);
    assert!(world.accounts.sessions(&alice).await.unwrap().is_empty());

    let login = world
        .app
        .login("alice", "another long password")
        .await
        .unwrap();
    world.accounts.delete(&alice).await.unwrap();
    assert_refused(world.app.refresh(&login.refresh_token).await);
    assert_eq!(world.sql.scalar("select count(*) from sessions").await, 0);
}

async fn logout_ends_the_session_of_its_token(backend: Backend) {
    let mut world = with_alice(backend, |_| {}).await;
    let login = log_in(&mut world).await;
    let refreshed = world.app.refresh(&login.refresh_token).await.unwrap();
    let other = world.app.login("alice", PASSWORD).await.unwrap();

    world.app.logout(&refreshed.access_token).await.unwrap();
    assert_eq!(
        world.revoked_rows().await,
        1,
        "the token's own row, as before"
    );
    assert_revoked(&mut world.app, &refreshed.access_token).await;
    assert_revoked(&mut world.app, &login.access_token).await;
    assert_refused(world.app.refresh(&refreshed.refresh_token).await);
    // The other session lives on.
    assert!(world.app.validate(&other.access_token).await.valid);
    world.app.refresh(&other.refresh_token).await.unwrap();
    // Again: OK, and nothing more is written.
    logout(
        &mut world.app,
        &refreshed.access_token,
        LogoutScope::Session,
    )
    .await
    .unwrap();
    assert_eq!(world.revoked_rows().await, 1);
}

async fn logout_of_an_expired_token_still_ends_its_session(backend: Backend) {
    let mut world = with_alice(backend, |_| {}).await;
    let login = log_in(&mut world).await;
    let forger = Forger::for_app(&world.app, &login.access_token);
    let past = now() - 3600;
    let expired = forger.sign(
        &forger.header(),
        &Forger::fresh_like(
            &login.access_token,
            serde_json::json!({"iat": past, "exp": past + 900}),
        ),
    );
    assert_eq!(
        world.app.validate(&expired).await.reason(),
        TokenInvalidReason::Expired
    );
    world.app.logout(&expired).await.unwrap();
    assert_refused(world.app.refresh(&login.refresh_token).await);
    assert_revoked(&mut world.app, &login.access_token).await;
}

async fn logout_everywhere_ends_every_session_and_token(backend: Backend) {
    let mut world = with_alice(backend, |_| {}).await;
    let first = log_in(&mut world).await;
    let second = log_in(&mut world).await;
    logout(&mut world.app, &first.access_token, LogoutScope::User)
        .await
        .unwrap();
    for session in [&first, &second] {
        assert_revoked(&mut world.app, &session.access_token).await;
        assert_refused(world.app.refresh(&session.refresh_token).await);
    }
    let alice = UserRef::Name(Username::parse("alice").unwrap());
    assert!(world.accounts.sessions(&alice).await.unwrap().is_empty());
    // A new Login works (after the cut-off second).
    let again = log_in(&mut world).await;
    assert!(world.app.validate(&again.access_token).await.valid);
    world.app.refresh(&again.refresh_token).await.unwrap();
    // A revoked token does not log anyone out.
    let status = logout(&mut world.app, &first.access_token, LogoutScope::User)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

async fn logout_of_the_other_sessions_keeps_this_one(backend: Backend) {
    let mut world = with_alice(backend, |_| {}).await;
    let mine = log_in(&mut world).await;
    let others = [log_in(&mut world).await, log_in(&mut world).await];
    logout(
        &mut world.app,
        &mine.access_token,
        LogoutScope::OtherSessions,
    )
    .await
    .unwrap();
    assert!(world.app.validate(&mine.access_token).await.valid);
    for other in &others {
        assert_revoked(&mut world.app, &other.access_token).await;
        assert_refused(world.app.refresh(&other.refresh_token).await);
    }
    let sessions = list(&mut world.app, &mine.access_token).await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert!(sessions[0].current);
    world.app.refresh(&mine.refresh_token).await.unwrap();

    let status = world
        .app
        .client
        .logout(LogoutRequest {
            access_token: mine.access_token.clone(),
            scope: 9,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

async fn list_sessions_shows_the_users_own_newest_first(backend: Backend) {
    let mut world = with_alice(backend, |_| {}).await;
    world.add_user("bob", PASSWORD, &[]).await;
    let first = log_in(&mut world).await;
    let channel = Channel::from_shared(format!("http://{}", world.app.addr))
        .unwrap()
        .user_agent(format!("test-agent/{}", "é".repeat(300)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = AuthServiceClient::new(channel);
    let second = client
        .login(authd::grpc::pb::LoginRequest {
            username: "ALICE".to_owned(),
            password: PASSWORD.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    world.app.login("bob", PASSWORD).await.unwrap();

    let sessions = list(&mut world.app, &first.access_token).await.unwrap();
    let ids: Vec<_> = sessions.iter().map(|s| s.session_id.as_str()).collect();
    assert_eq!(ids, [second.session_id.as_str(), first.session_id.as_str()]);
    assert_eq!(
        sessions.iter().map(|s| s.current).collect::<Vec<_>>(),
        [false, true]
    );
    let agent = &sessions[0].user_agent;
    assert!(agent.starts_with("test-agent/é"), "{agent}");
    assert!(agent.len() <= 256 && agent.len() > 250, "{}", agent.len());

    let status = world
        .app
        .client
        .list_sessions(ListSessionsRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    world.app.logout(&first.access_token).await.unwrap();
    let status = list(&mut world.app, &first.access_token).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("revoked"), "{}", status.message());
}

async fn revoke_session_ends_one_of_the_users_own(backend: Backend) {
    let mut world = with_alice(backend, |_| {}).await;
    world.add_user("bob", PASSWORD, &[]).await;
    let mine = log_in(&mut world).await;
    let other = log_in(&mut world).await;
    let bobs = world.app.login("bob", PASSWORD).await.unwrap();

    revoke(&mut world.app, &mine.access_token, &other.session_id)
        .await
        .unwrap();
    assert_revoked(&mut world.app, &other.access_token).await;
    assert_refused(world.app.refresh(&other.refresh_token).await);
    assert!(world.app.validate(&mine.access_token).await.valid);
    revoke(&mut world.app, &mine.access_token, &other.session_id)
        .await
        .unwrap();

    let not_found = revoke(&mut world.app, &mine.access_token, &bobs.session_id)
        .await
        .unwrap_err();
    assert_eq!(not_found.code(), Code::NotFound);
    let unknown = revoke(
        &mut world.app,
        &mine.access_token,
        &uuid::Uuid::new_v4().to_string(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (unknown.code(), unknown.message()),
        (not_found.code(), not_found.message())
    );
    assert!(world.app.validate(&bobs.access_token).await.valid);

    let malformed = revoke(&mut world.app, &mine.access_token, "not-a-uuid")
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert!(malformed.message().contains("session_id"));
}

async fn another_instance_refuses_an_ended_session_within_the_bound(backend: Backend) {
    let mut world = with_alice(backend, |_| {}).await;
    let mut second = world.second_app().await;
    let login = log_in(&mut world).await;
    // The refresh-token key is the deployment's: the second instance takes
    // the first one's tokens.
    let refreshed = second.refresh(&login.refresh_token).await.unwrap();
    assert!(second.validate(&refreshed.access_token).await.valid);
    revoke(&mut world.app, &login.access_token, &login.session_id)
        .await
        .unwrap();
    second.eventually_revoked(&refreshed.access_token).await;
    second.eventually_revoked(&login.access_token).await;
    assert_refused(second.refresh(&refreshed.refresh_token).await);
    second.stop().await;
}

async fn a_restart_keeps_sessions(backend: Backend) {
    let mut world = with_alice(backend, |_| {}).await;
    let login = log_in(&mut world).await;
    let ended = world.app.login("alice", PASSWORD).await.unwrap();
    revoke(&mut world.app, &login.access_token, &ended.session_id)
        .await
        .unwrap();
    let settings = world.app.settings.clone();
    let app = std::mem::replace(&mut world.app, TestApp::spawn(settings.clone()).await);
    app.stop().await;
    let mut restarted = TestApp::spawn(settings).await;
    restarted.refresh(&login.refresh_token).await.unwrap();
    assert_revoked(&mut restarted, &ended.access_token).await;
    restarted.stop().await;
}

async fn the_purge_keeps_live_sessions(backend: Backend) {
    let mut world = with_alice(backend, |_| {}).await;
    let live = log_in(&mut world).await;
    let ended = log_in(&mut world).await;
    let idle = log_in(&mut world).await;
    revoke(&mut world.app, &live.access_token, &ended.session_id)
        .await
        .unwrap();
    let purge = world.app.settings.purge;
    let run = async || match purge_once(&world.store, &purge).await.unwrap() {
        PurgePass::Done(report) => report.sessions,
        PurgePass::Busy => panic!("nothing else purges"),
    };
    assert_eq!(
        run().await,
        0,
        "the ended session's access tokens are current"
    );
    // Their access tokens have expired: the ended and the lapsed one go.
    let hour_before = match backend {
        Backend::Postgres => "created_at - interval '1 hour'",
        Backend::Sqlite => "created_at - 3600",
    };
    world
        .sql
        .execute(&format!(
            "update sessions set access_expires_at = {hour_before} where revoked_at is not null"
        ))
        .await;
    let idle_id = uuid::Uuid::parse_str(&idle.session_id).unwrap();
    let lapse = match backend {
        Backend::Postgres => format!("where id = '{idle_id}'"),
        Backend::Sqlite => format!("where id = x'{}'", idle_id.simple()),
    };
    let lapse = format!(
        "update sessions set expires_at = {hour_before}, access_expires_at = {hour_before} {lapse}"
    );
    assert_eq!(world.sql.execute(&lapse).await, 1);
    assert_eq!(run().await, 2);
    assert_eq!(world.sql.scalar("select count(*) from sessions").await, 1);
    world.app.refresh(&live.refresh_token).await.unwrap();
}

async fn the_database_holds_nothing_that_refreshes(backend: Backend) {
    let mut world = with_alice(backend, |_| {}).await;
    let login = log_in(&mut world).await;
    let refreshed = world.app.refresh(&login.refresh_token).await.unwrap();
    use base64::Engine as _;
    let mut secrets = Vec::new();
    for token in [&login.refresh_token, &refreshed.refresh_token] {
        let body = token.strip_prefix("authd_rt_").unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .unwrap();
        secrets.push(token.clone());
        // The tag, the only part not derived from stored values.
        secrets.push(
            format!("{:?}", &bytes[25..])
                .trim_matches(['[', ']'])
                .to_owned(),
        );
    }
    let dump = world.sql.session_dump().await;
    assert!(!dump.is_empty());
    for value in &dump {
        for secret in &secrets {
            assert!(!value.contains(secret.as_str()), "{value} holds {secret}");
        }
    }
}

on_both_backends!(
    a_login_starts_a_session_its_tokens_name,
    refresh_rotates_the_refresh_token,
    concurrent_refreshes_of_one_token_share_one_new_generation,
    tokens_without_a_session_still_validate,
    the_previous_token_within_the_grace_gets_the_same_new_token,
    a_spent_token_ends_the_session_and_revokes_its_access_tokens,
    bad_refresh_tokens_are_refused_alike,
    sessions_lapse_unused_and_at_their_maximum_age,
    users_that_may_not_log_in_cannot_refresh,
    logout_ends_the_session_of_its_token,
    logout_of_an_expired_token_still_ends_its_session,
    logout_everywhere_ends_every_session_and_token,
    logout_of_the_other_sessions_keeps_this_one,
    list_sessions_shows_the_users_own_newest_first,
    revoke_session_ends_one_of_the_users_own,
    another_instance_refuses_an_ended_session_within_the_bound,
    a_restart_keeps_sessions,
    the_purge_keeps_live_sessions,
    the_database_holds_nothing_that_refreshes,
);

#[tokio::test]
async fn refresh_is_unavailable_while_the_database_is_cut_off() {
    let proxy = DbProxy::start().await;
    let mut world = World::behind(&proxy).await;
    world.add_user("alice", PASSWORD, &[]).await;
    let login = world.app.login("alice", PASSWORD).await.unwrap();
    proxy.cut();
    let status = world.app.refresh(&login.refresh_token).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let status = revoke(&mut world.app, &login.access_token, &login.session_id)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    proxy.restore();
    // Nothing was lost or half done: the token still refreshes.
    let refreshed = world.app.refresh(&login.refresh_token).await.unwrap();
    world.app.refresh(&refreshed.refresh_token).await.unwrap();
}

#[tokio::test]
async fn sessions_work_through_a_transaction_pooler() {
    let Some(mut world) = World::through_pooler(true).await else {
        return;
    };
    world.add_user("alice", PASSWORD, &[]).await;
    let login = world.app.login("alice", PASSWORD).await.unwrap();
    let refreshed = world.app.refresh(&login.refresh_token).await.unwrap();
    let retried = world.app.refresh(&login.refresh_token).await.unwrap();
    assert_eq!(retried.refresh_token, refreshed.refresh_token);
    let sessions = list(&mut world.app, &refreshed.access_token).await.unwrap();
    assert_eq!(sessions.len(), 1);
    logout(&mut world.app, &refreshed.access_token, LogoutScope::User)
        .await
        .unwrap();
    assert_refused(world.app.refresh(&refreshed.refresh_token).await);
}
