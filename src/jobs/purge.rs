//! The purge: deletes what is kept only for a while (expired revocations,
//! deleted users past their tokens' lifetime, old failed Logins, keys
//! retired or revoked past their tokens' lifetime, sessions that can
//! neither refresh nor have a current access token), as one
//! pass that `authd purge` runs once and the server runs periodically.

use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{ThrottleSettings, TokenSettings, deployment::token_retention},
    store::{PurgeOutcome, Storage as _, Store, StoreError},
    telemetry::metrics::{Meter, PurgedRows},
};

/// How often and in what batches to purge, and how long to keep what the
/// pass forgets.
#[derive(Debug, Clone, Copy)]
pub struct PurgeSettings {
    /// Time between passes; the first runs one interval after start-up.
    pub interval: Duration,
    /// Rows deleted per statement.
    pub batch_size: u32,
    /// How long a deleted user is remembered at least: the longest a token
    /// issued before its deletion can stay current (token lifetime plus the
    /// most leeway allowed). Longer when another instance on the database
    /// issues longer-lived tokens.
    pub deleted_user_retention: Duration,
    /// How long failed Logins are counted after the last one (see
    /// [`ThrottleSettings::memory`]).
    pub failed_login_memory: Duration,
    /// How long a retired or revoked signing key is kept at least: as long
    /// as a token it signed can be current (longer, as for deleted users).
    pub signing_key_retention: Duration,
}

impl PurgeSettings {
    /// The default interval between passes.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5 * 60);
    /// The default rows per statement.
    pub const DEFAULT_BATCH_SIZE: u32 = 10_000;

    /// The default interval and batch size, keeping what tokens issued with
    /// `tokens` and failures counted with `throttle` still need.
    pub fn new(tokens: &TokenSettings, throttle: &ThrottleSettings) -> Self {
        Self {
            interval: Self::DEFAULT_INTERVAL,
            batch_size: Self::DEFAULT_BATCH_SIZE,
            deleted_user_retention: token_retention(None, tokens),
            failed_login_memory: throttle.memory(),
            signing_key_retention: token_retention(None, tokens),
        }
    }
}

/// What one pass deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PurgeReport {
    /// Revocations of tokens that have expired.
    pub revocations: u64,
    /// Deleted users whose tokens have all expired.
    pub deleted_users: u64,
    /// Failed-Login counts no longer remembered.
    pub failed_logins: u64,
    /// Signing keys retired or revoked longer than any token lives.
    pub signing_keys: u64,
    /// Sessions ended or expired, whose access tokens have all expired.
    pub sessions: u64,
}

/// The outcome of one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgePass {
    /// The pass ran.
    Done(PurgeReport),
    /// Another process holds the purge lock and runs the pass; nothing was
    /// done here.
    Busy,
}

/// Runs one pass now: what `authd purge` and each tick of [`run`] do.
///
/// # Errors
/// [`StoreError`] when the database fails; what was deleted before the
/// failure stays deleted.
pub async fn purge_once(store: &Store, settings: &PurgeSettings) -> Result<PurgePass, StoreError> {
    purge_as_of(store, settings, OffsetDateTime::now_utc()).await
}

/// Runs one pass as if the time were `now`.
///
/// What can make a token invalid is kept for as long as any instance on
/// the database could accept that token: revocations and ended sessions
/// until their bound plus the most leeway any instance may forgive, deleted
/// users and keys for the longest lifetime any instance has issued with.
///
/// # Errors
/// As [`purge_once`].
pub async fn purge_as_of(
    store: &Store,
    settings: &PurgeSettings,
    now: OffsetDateTime,
) -> Result<PurgePass, StoreError> {
    let deployment = store.deployment().await?;
    let longest = deployment
        .as_ref()
        .map_or(Duration::ZERO, |record| record.max_access_token_ttl)
        + TokenSettings::MAX_LEEWAY;
    let past_any_leeway = now - TokenSettings::MAX_LEEWAY;
    let revocations = match store
        .purge_expired(past_any_leeway, settings.batch_size)
        .await?
    {
        PurgeOutcome::Removed(rows) => rows,
        PurgeOutcome::Busy => return Ok(PurgePass::Busy),
    };
    let deleted_users = store
        .forget_deleted_users(now - settings.deleted_user_retention.max(longest))
        .await?;
    let failed_logins = store
        .forget_failed_logins(now - settings.failed_login_memory)
        .await?;
    let signing_keys = store
        .forget_signing_keys(now - settings.signing_key_retention.max(longest))
        .await?;
    let sessions = store
        .forget_sessions(past_any_leeway, settings.batch_size)
        .await?;
    Ok(PurgePass::Done(PurgeReport {
        revocations,
        deleted_users,
        failed_logins,
        signing_keys,
        sessions,
    }))
}

/// Purges every `settings.interval` until `stop` is cancelled. A failed
/// pass is logged and retried at the next tick; a pass in progress when
/// `stop` fires is abandoned (what it deleted stays deleted).
pub async fn run(store: Store, settings: PurgeSettings, meter: Meter, stop: CancellationToken) {
    let first = tokio::time::Instant::now() + settings.interval;
    let mut ticks = tokio::time::interval_at(first, settings.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let outcome = tokio::select! {
            () = stop.cancelled() => break,
            outcome = purge_once(&store, &settings) => outcome,
        };
        if let Ok(PurgePass::Done(report)) = &outcome {
            meter.purged(PurgedRows([
                report.revocations,
                report.deleted_users,
                report.failed_logins,
                report.signing_keys,
                report.sessions,
            ]));
        }
        match outcome {
            Ok(PurgePass::Done(report)) if report == PurgeReport::default() => {
                tracing::debug!("purge: nothing to delete");
            }
            Ok(PurgePass::Done(report)) => tracing::info!(
                revocations = report.revocations,
                deleted_users = report.deleted_users,
                failed_logins = report.failed_logins,
                signing_keys = report.signing_keys,
                sessions = report.sessions,
                "purged"
            ),
            Ok(PurgePass::Busy) => {
                tracing::debug!("purge: another instance is purging; skipped");
            }
            Err(err) => tracing::warn!(
                error = %err,
                cause = ?std::error::Error::source(&err).map(ToString::to_string),
                retry_in = %humantime::format_duration(settings.interval),
                "purge failed"
            ),
        }
    }
    tracing::debug!("purge task stopped");
}
