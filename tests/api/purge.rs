use std::time::Duration;

use authd::store::{PurgeOutcome, Storage as _, Store};
use time::OffsetDateTime;

use crate::helpers::{Backend, TestDb, TestSql, World, insert_revocations, on_both_backends};

/// A migrated database with no server on it: no purge task races the test.
async fn quiet_database(backend: Backend) -> (TestDb, Store, TestSql) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let sql = db.sql().await;
    (db, store, sql)
}

async fn purge_removes_expired_rows_in_batches_and_keeps_live_ones(backend: Backend) {
    let (_db, store, sql) = quiet_database(backend).await;
    let now = OffsetDateTime::now_utc();
    insert_revocations(&store, 25, now - time::Duration::hours(1)).await;
    insert_revocations(&store, 3, now + time::Duration::hours(1)).await;

    assert_eq!(
        store.purge_expired(now, 10).await.unwrap(),
        PurgeOutcome::Removed(25)
    );
    assert_eq!(sql.revoked_rows().await, 3);
    assert_eq!(
        store.purge_expired(now, 10).await.unwrap(),
        PurgeOutcome::Removed(0)
    );
}

async fn a_logged_out_token_stays_revoked_until_exp_plus_leeway(backend: Backend) {
    let mut world = World::new(backend).await;
    let login = world.alice_token().await;
    world.app.logout(&login.access_token).await.unwrap();
    let exp = OffsetDateTime::from_unix_timestamp(login.expires_at.unwrap().seconds).unwrap();
    let store = world.db.store().await;

    // Past `exp` but within the leeway the token could still validate, so
    // its revocation must survive a purge.
    let within_leeway = exp + time::Duration::seconds(4);
    assert_eq!(
        store.purge_expired(within_leeway, 100).await.unwrap(),
        PurgeOutcome::Removed(0)
    );
    // At `exp + leeway` exactly the token stops validating; its row may go
    // from then on (SQLite, counting whole seconds, takes it a second later).
    let at_leeway = exp + time::Duration::seconds(5);
    assert_eq!(
        store.purge_expired(at_leeway, 100).await.unwrap(),
        PurgeOutcome::Removed(0)
    );
    let past_leeway = exp + time::Duration::seconds(6);
    assert_eq!(
        store.purge_expired(past_leeway, 100).await.unwrap(),
        PurgeOutcome::Removed(1)
    );
}

/// Holds the purge lock the way another authd process would, until dropped.
enum PurgeLockHolder {
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
    Sqlite(std::fs::File),
}

impl PurgeLockHolder {
    async fn take(db: &TestDb, sql: &TestSql) -> Self {
        match (db, sql) {
            (TestDb::Postgres { .. }, TestSql::Postgres(pool)) => {
                let mut conn = pool.acquire().await.unwrap();
                sqlx::query("select pg_advisory_lock($1)")
                    .bind(0x6175_7468_6470_7572_i64)
                    .execute(&mut *conn)
                    .await
                    .unwrap();
                Self::Postgres(conn)
            }
            (TestDb::Sqlite { dir }, TestSql::Sqlite(_)) => {
                let file = std::fs::File::create(dir.path().join("authd.db-purge.lock")).unwrap();
                file.lock().unwrap();
                Self::Sqlite(file)
            }
            _ => unreachable!("the pool is of the database's backend"),
        }
    }

    async fn release(self) {
        match self {
            Self::Postgres(mut conn) => {
                sqlx::query("select pg_advisory_unlock($1)")
                    .bind(0x6175_7468_6470_7572_i64)
                    .execute(&mut *conn)
                    .await
                    .unwrap();
            }
            Self::Sqlite(file) => file.unlock().unwrap(),
        }
    }
}

async fn only_one_process_purges_at_a_time(backend: Backend) {
    let (db, store, sql) = quiet_database(backend).await;
    let now = OffsetDateTime::now_utc();
    insert_revocations(&store, 2, now - time::Duration::hours(1)).await;
    let holder = PurgeLockHolder::take(&db, &sql).await;

    assert_eq!(
        store.purge_expired(now, 100).await.unwrap(),
        PurgeOutcome::Busy
    );
    assert_eq!(sql.revoked_rows().await, 2);

    holder.release().await;
    assert_eq!(
        store.purge_expired(now, 100).await.unwrap(),
        PurgeOutcome::Removed(2)
    );
}

async fn the_server_purges_on_its_own(backend: Backend) {
    let (db, store, sql) = quiet_database(backend).await;
    insert_revocations(
        &store,
        4,
        OffsetDateTime::now_utc() - time::Duration::hours(1),
    )
    .await;
    insert_revocations(
        &store,
        1,
        OffsetDateTime::now_utc() + time::Duration::hours(1),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = crate::helpers::settings(db.url(), dir.path());
    settings.purge.interval = Duration::from_secs(1);

    let app = crate::helpers::TestApp::spawn(settings).await;

    // The first pass runs one interval (1 s) after start; wait for its
    // effect, bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if sql.revoked_rows().await == 1 {
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

on_both_backends!(
    purge_removes_expired_rows_in_batches_and_keeps_live_ones,
    a_logged_out_token_stays_revoked_until_exp_plus_leeway,
    only_one_process_purges_at_a_time,
    the_server_purges_on_its_own,
);
