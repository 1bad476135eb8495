use std::time::Duration;

use authd::store::{PurgeOutcome, Store};
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::helpers::{TestDb, World, revoked_rows};

async fn insert_revocations(pool: &PgPool, count: usize, expires_at: OffsetDateTime) {
    for _ in 0..count {
        sqlx::query("insert into revoked_tokens (jti, user_id, expires_at) values ($1, $2, $3)")
            .bind(uuid::Uuid::new_v4())
            .bind(uuid::Uuid::new_v4())
            .bind(expires_at)
            .execute(pool)
            .await
            .unwrap();
    }
}

/// A migrated database with no server on it: no purge task races the test.
async fn quiet_database() -> (TestDb, PgPool) {
    let db = TestDb::new().await;
    let pool = db.pool().await;
    authd::store::MIGRATOR.run(&pool).await.unwrap();
    (db, pool)
}

#[tokio::test]
async fn purge_removes_expired_rows_in_batches_and_keeps_live_ones() {
    let (_db, pool) = quiet_database().await;
    let now = OffsetDateTime::now_utc();
    insert_revocations(&pool, 25, now - time::Duration::hours(1)).await;
    insert_revocations(&pool, 3, now + time::Duration::hours(1)).await;
    let store = Store::from_pool(pool.clone());

    let outcome = store.purge_expired(now, 10).await.unwrap();

    assert_eq!(outcome, PurgeOutcome::Removed(25));
    assert_eq!(revoked_rows(&pool).await, 3);
    assert_eq!(
        store.purge_expired(now, 10).await.unwrap(),
        PurgeOutcome::Removed(0)
    );
}

#[tokio::test]
async fn a_logged_out_token_stays_revoked_until_exp_plus_leeway() {
    let mut world = World::new().await;
    let login = world.alice_token().await;
    world.app.logout(&login.access_token).await.unwrap();
    let exp = OffsetDateTime::from_unix_timestamp(login.expires_at.unwrap().seconds).unwrap();
    let store = Store::from_pool(world.pool.clone());

    // Past `exp` but within the leeway the token could still validate, so
    // its revocation must survive a purge.
    let within_leeway = exp + time::Duration::seconds(4);
    assert_eq!(
        store.purge_expired(within_leeway, 100).await.unwrap(),
        PurgeOutcome::Removed(0)
    );
    let past_leeway = exp + time::Duration::seconds(6);
    assert_eq!(
        store.purge_expired(past_leeway, 100).await.unwrap(),
        PurgeOutcome::Removed(1)
    );
}

#[tokio::test]
async fn only_one_process_purges_at_a_time() {
    let (_db, pool) = quiet_database().await;
    let now = OffsetDateTime::now_utc();
    insert_revocations(&pool, 2, now - time::Duration::hours(1)).await;
    let store = Store::from_pool(pool.clone());
    let mut holder = pool.acquire().await.unwrap();
    sqlx::query("select pg_advisory_lock($1)")
        .bind(0x6175_7468_6470_7572_i64)
        .execute(&mut *holder)
        .await
        .unwrap();

    assert_eq!(
        store.purge_expired(now, 100).await.unwrap(),
        PurgeOutcome::Busy
    );

    sqlx::query("select pg_advisory_unlock($1)")
        .bind(0x6175_7468_6470_7572_i64)
        .execute(&mut *holder)
        .await
        .unwrap();
    assert_eq!(
        store.purge_expired(now, 100).await.unwrap(),
        PurgeOutcome::Removed(2)
    );
}

#[tokio::test]
async fn the_server_purges_on_its_own() {
    let (db, pool) = quiet_database().await;
    insert_revocations(
        &pool,
        4,
        OffsetDateTime::now_utc() - time::Duration::hours(1),
    )
    .await;
    insert_revocations(
        &pool,
        1,
        OffsetDateTime::now_utc() + time::Duration::hours(1),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = crate::helpers::settings(db.url_via(None), dir.path().join("key.pem"));
    settings.purge.interval = Duration::from_secs(1);

    let app = crate::helpers::TestApp::spawn(settings).await;

    // The first pass runs one interval (1 s) after start; wait for its
    // effect, bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if revoked_rows(&pool).await == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the purge task never ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}
