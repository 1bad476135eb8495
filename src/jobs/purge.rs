//! The periodic purge of expired revocations, and of what else is kept
//! only for a while (deleted users, old failed Logins).

use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::store::{PurgeOutcome, Store, StoreError};

/// How often and in what batches to purge.
#[derive(Debug, Clone, Copy)]
pub struct PurgeSettings {
    /// Time between passes; the first runs one interval after start-up.
    pub interval: Duration,
    /// Rows deleted per statement.
    pub batch_size: u32,
    /// How long a deleted user is remembered: the longest a token issued
    /// before its deletion can stay current (token lifetime plus leeway).
    pub deleted_user_retention: Duration,
    /// How long failed Logins are counted after the last one (see
    /// [`crate::auth::ThrottleSettings::memory`]).
    pub failed_login_memory: Duration,
}

/// Runs one purge pass now: what `authd purge` and each tick do.
///
/// # Errors
/// [`StoreError`] when the database fails.
pub async fn purge_once(store: &Store, batch_size: u32) -> Result<PurgeOutcome, StoreError> {
    store
        .purge_expired(OffsetDateTime::now_utc(), batch_size)
        .await
}

/// Purges every `settings.interval` until `stop` is cancelled. A failed
/// pass is logged and retried at the next tick; a pass in progress when
/// `stop` fires is abandoned (what it deleted stays deleted).
pub async fn run(store: Store, settings: PurgeSettings, stop: CancellationToken) {
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
            outcome = purge_once(&store, settings.batch_size) => outcome,
        };
        match outcome {
            Ok(PurgeOutcome::Removed(0)) => tracing::debug!("purge: no expired revocations"),
            Ok(PurgeOutcome::Removed(rows)) => {
                tracing::info!(rows, "purged expired revocations");
            }
            Ok(PurgeOutcome::Busy) => {
                tracing::debug!("purge: another instance is purging; skipped");
            }
            Err(err) => tracing::warn!(
                error = %err,
                cause = ?std::error::Error::source(&err).map(ToString::to_string),
                retry_in = %humantime::format_duration(settings.interval),
                "purge failed"
            ),
        }
        let before = OffsetDateTime::now_utc() - settings.deleted_user_retention;
        match store.forget_deleted_users(before).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(
                rows,
                "forgot users deleted before any token of theirs could be current"
            ),
            Err(err) => tracing::warn!(error = %err, "cannot forget old deleted users"),
        }
        let before = OffsetDateTime::now_utc() - settings.failed_login_memory;
        match store.forget_failed_logins(before).await {
            Ok(0) => {}
            Ok(rows) => tracing::debug!(rows, "forgot old failed logins"),
            Err(err) => tracing::warn!(error = %err, "cannot forget old failed logins"),
        }
    }
    tracing::debug!("purge task stopped");
}
