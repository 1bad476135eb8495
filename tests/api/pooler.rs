//! authd behind PgBouncer in transaction mode (`--database-pooler
//! transaction`), with and without a direct URL for LISTEN and migrations:
//! the calls, the purge's one-at-a-time rule, and revocations between
//! instances.

use std::time::Duration;

use authd::{
    jobs::purge::{PurgePass, purge_once},
    store::{DatabasePooler, DatabaseSettings, PurgeOutcome, Storage as _, Store},
};
use time::OffsetDateTime;

use crate::helpers::{TestSql, World, insert_revocations};

async fn the_calls_work_through_the_pooler(direct: bool) {
    let Some(mut world) = World::through_pooler(direct).await else {
        return;
    };
    let token = world.alice_token().await.access_token;
    assert!(world.app.validate(&token).await.valid);
    world.app.logout(&token).await.unwrap();
    assert!(!world.app.validate(&token).await.valid);
    assert_eq!(world.revoked_rows().await, 1);
    world
        .app
        .keys
        .rotate(Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(world.app.published_kids().await.len(), 2);
}

#[tokio::test]
async fn login_logout_validate_and_keys_work_through_the_pooler() {
    the_calls_work_through_the_pooler(false).await;
}

#[tokio::test]
async fn login_logout_validate_and_keys_work_through_the_pooler_with_a_direct_url() {
    the_calls_work_through_the_pooler(true).await;
}

async fn revocations_reach_the_other_instance(direct: bool) {
    let Some(mut world) = World::through_pooler(direct).await else {
        return;
    };
    let mut second = world.second_app().await;
    let token = world.alice_token().await.access_token;
    assert!(second.validate(&token).await.valid);

    world.app.logout(&token).await.unwrap();

    // By LISTEN on the direct URL, or by the catch-up without one.
    second.eventually_revoked(&token).await;
    second.stop().await;
}

#[tokio::test]
async fn a_logout_reaches_another_instance_by_the_catch_up_alone() {
    revocations_reach_the_other_instance(false).await;
}

#[tokio::test]
async fn a_logout_reaches_another_instance_by_listen_on_the_direct_url() {
    revocations_reach_the_other_instance(true).await;
}

/// Behind the pooler one purge runs at a time by a lease row: while
/// another holds it, a pass is Busy; once it is given back, or has
/// expired, a pass runs.
#[tokio::test]
async fn one_instance_purges_at_a_time_through_the_pooler() {
    let Some(world) = World::through_pooler(false).await else {
        return;
    };
    let pooled = world.app.settings.database.clone();
    let store = Store::connect(&pooled).await.unwrap();
    let past = OffsetDateTime::now_utc() - time::Duration::hours(1);
    insert_revocations(&store, 25, past).await;
    let TestSql::Postgres(sql) = &world.sql else {
        panic!("a PostgreSQL world");
    };
    sqlx::query(
        "insert into purge_lease (id, holder, expires_at) \
         values (true, gen_random_uuid(), now() + interval '1 hour')",
    )
    .execute(sql)
    .await
    .unwrap();

    assert_eq!(
        store
            .purge_expired(OffsetDateTime::now_utc(), 10)
            .await
            .unwrap(),
        PurgeOutcome::Busy
    );
    let settings = world.app.settings.purge;
    assert_eq!(
        purge_once(&store, &settings).await.unwrap(),
        PurgePass::Busy
    );
    assert_eq!(world.revoked_rows().await, 25);

    sqlx::query("update purge_lease set expires_at = now() - interval '1 second'")
        .execute(sql)
        .await
        .unwrap();
    assert_eq!(
        store
            .purge_expired(OffsetDateTime::now_utc(), 10)
            .await
            .unwrap(),
        PurgeOutcome::Removed(25),
        "an expired lease is taken over, in batches of 10"
    );
    let left: i64 = sqlx::query_scalar("select count(*) from purge_lease")
        .fetch_one(sql)
        .await
        .unwrap();
    assert_eq!(left, 0, "the lease is given back");
    assert_eq!(world.revoked_rows().await, 0);
    store.close().await;
}

/// Two instances through the pooler purging every second: the rows go, and
/// neither pass fails.
#[tokio::test]
async fn two_instances_purge_through_the_pooler() {
    let Some(mut world) = World::through_pooler(false).await else {
        return;
    };
    let mut settings = world.app.settings.clone();
    settings.purge.interval = Duration::from_secs(1);
    let first = std::mem::replace(
        &mut world.app,
        crate::helpers::TestApp::spawn(settings.clone()).await,
    );
    first.stop().await;
    let second = crate::helpers::TestApp::spawn(settings).await;
    let past = OffsetDateTime::now_utc() - time::Duration::hours(1);
    insert_revocations(&world.store, 50, past).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while world.revoked_rows().await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not purged within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    second.stop().await;
}

#[tokio::test]
async fn the_pooler_mode_is_refused_for_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = DatabaseSettings::new(
        format!("sqlite://{}", dir.path().join("a.db").display())
            .parse()
            .unwrap(),
    );
    settings.pooler = DatabasePooler::Transaction;
    let err = Store::connect(&settings).await.unwrap_err().to_string();
    assert!(err.contains("SQLite"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

/// A statement stuck on the server (here behind another session's lock)
/// still ends in UNAVAILABLE at the operation deadline through the pooler:
/// the deadline is set in the transaction, not at connect.
#[tokio::test]
async fn a_stuck_statement_is_unavailable_at_the_deadline_through_the_pooler() {
    let Some(pooler) = crate::helpers::pgbouncer_url() else {
        return;
    };
    let db = crate::helpers::TestDb::new(crate::helpers::Backend::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = crate::helpers::settings(db.url_through(&pooler), dir.path());
    settings.database.pooler = DatabasePooler::Transaction;
    settings.database.operation_timeout = Duration::from_millis(500);
    let mut app = crate::helpers::TestApp::spawn(settings).await;
    let TestSql::Postgres(sql) = db.sql().await else {
        panic!("a PostgreSQL database");
    };
    let mut holder = sql.begin().await.unwrap();
    sqlx::query("lock table users in access exclusive mode")
        .execute(&mut *holder)
        .await
        .unwrap();

    let mut request = tonic::Request::new(authd::grpc::pb::LoginRequest {
        username: "alice".into(),
        password: "correct horse battery".into(),
    });
    request.set_timeout(Duration::from_secs(5));
    let refused = app.client.login(request).await.unwrap_err();

    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    holder.rollback().await.unwrap();
    app.stop().await;
}
