//! Instances on one database that are started with different settings:
//! none may accept a token another has revoked, or a deleted user's.

use std::time::Duration;

use authd::{
    auth::TokenSettings,
    domain::{UserRef, Username},
    grpc::pb::TokenInvalidReason,
    jobs::purge::{PurgePass, PurgeReport, PurgeSettings, purge_as_of},
    startup::{Application, ServeSettings},
    store::Storage as _,
};
use time::OffsetDateTime;

use crate::helpers::{Backend, TestApp, World, on_both_backends};

fn with_lifetimes(settings: &ServeSettings, ttl: u64, leeway: u64) -> ServeSettings {
    let mut settings = settings.clone();
    settings.tokens.ttl = Duration::from_secs(ttl);
    settings.tokens.leeway = Duration::from_secs(leeway);
    settings
}

async fn purge(world: &World, settings: &ServeSettings, at: OffsetDateTime) -> PurgeReport {
    let purge = PurgeSettings::new(&settings.tokens, &settings.login_throttle);
    match purge_as_of(&world.store, &purge, at).await.unwrap() {
        PurgePass::Done(report) => report,
        PurgePass::Busy => panic!("no other purge runs"),
    }
}

async fn instances_with_other_claims_refuse_to_start(backend: Backend) {
    let world = World::new(backend).await;
    for (field, change) in [
        (
            "issuer",
            (|s: &mut ServeSettings| s.tokens.issuer = "other".to_owned()) as fn(&mut _),
        ),
        ("audience", |s: &mut ServeSettings| {
            s.tokens.audience = "other".to_owned();
        }),
    ] {
        let mut settings = world.app.settings.clone();
        change(&mut settings);
        let refused = Application::build(settings).await.unwrap_err().to_string();
        assert!(
            refused.contains(&format!("{field} \"authd\"")) && refused.contains("\"other\""),
            "{refused}"
        );
    }
    let leeway = with_lifetimes(&world.app.settings, 60, 301);
    let refused = Application::build(leeway).await.unwrap_err().to_string();
    assert!(refused.contains("leeway"), "{refused}");
}

async fn a_larger_leeway_elsewhere_never_revives_a_logged_out_token(backend: Backend) {
    // The instance taking the Logout forgives no skew: its row's bound is
    // the token's `exp`.
    let mut world = World::with(backend, |settings| {
        settings.tokens.leeway = Duration::ZERO;
    })
    .await;
    let login = world.alice_token().await;
    world.app.logout(&login.access_token).await.unwrap();
    let exp = OffsetDateTime::from_unix_timestamp(login.expires_at.unwrap().seconds).unwrap();

    // A purge just past that bound, by the instance that set it, keeps the
    // row: an instance forgiving the most skew still accepts the token then.
    let skewed = with_lifetimes(&world.app.settings, 60, 300);
    let report = purge(
        &world,
        &world.app.settings,
        exp + time::Duration::seconds(10),
    )
    .await;
    assert_eq!(report.revocations, 0);
    let mut lenient = TestApp::spawn(skewed.clone()).await;
    assert_eq!(
        lenient.validate(&login.access_token).await.reason(),
        TokenInvalidReason::Revoked
    );
    lenient.stop().await;

    let report = purge(&world, &skewed, exp + time::Duration::seconds(302)).await;
    assert_eq!(report.revocations, 1, "past any leeway it goes");
}

async fn a_shorter_lifetime_elsewhere_never_forgets_a_deleted_user_too_soon(backend: Backend) {
    let mut world = World::with(backend, |settings| {
        settings.tokens.ttl = Duration::from_secs(3600);
    })
    .await;
    let login = world.alice_token().await;
    let alice = UserRef::Name(Username::parse("alice").unwrap());
    world.accounts.delete(&alice).await.unwrap();
    world.app.eventually_revoked(&login.access_token).await;
    let deleted_at = OffsetDateTime::now_utc();

    // An instance issuing one-minute tokens purges two minutes on: the
    // hour-long token is still current, so the deletion stays, and a new
    // instance with the short lifetime still refuses the token.
    let brief = with_lifetimes(&world.app.settings, 60, 5);
    let report = purge(&world, &brief, deleted_at + time::Duration::minutes(2)).await;
    assert_eq!(report.deleted_users, 0);
    let mut restarted = TestApp::spawn(brief.clone()).await;
    assert_eq!(
        restarted.validate(&login.access_token).await.reason(),
        TokenInvalidReason::Revoked
    );
    restarted.stop().await;
    let recorded = world.store.deployment().await.unwrap().unwrap();
    assert_eq!(
        recorded.max_access_token_ttl,
        Duration::from_secs(3600),
        "a shorter lifetime never lowers the record"
    );

    let past = deleted_at
        + time::Duration::seconds(3601)
        + time::Duration::try_from(TokenSettings::MAX_LEEWAY).unwrap();
    let report = purge(&world, &brief, past).await;
    assert_eq!(report.deleted_users, 1);
}

on_both_backends!(
    instances_with_other_claims_refuse_to_start,
    a_larger_leeway_elsewhere_never_revives_a_logged_out_token,
    a_shorter_lifetime_elsewhere_never_forgets_a_deleted_user_too_soon,
);
