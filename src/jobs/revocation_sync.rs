//! Keeps the in-memory revocation state and key set in step with the
//! store: notifications as they arrive, catch-ups on a short period, and
//! sweeps of what has expired.

use std::{sync::Arc, time::Duration};

use time::OffsetDateTime;
use tokio::{sync::Notify, time::MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{RevocationState, SigningKeys},
    store::{FeedCursor, Notice, Storage as _, Store},
    telemetry::metrics::Meter,
};

/// How the state is kept current.
#[derive(Debug, Clone, Copy)]
pub struct SyncSettings {
    /// Time between catch-ups on PostgreSQL: what bounds a revocation's
    /// lag when a notification is lost, or when there are none (behind a
    /// transaction pooler without a direct URL).
    pub catch_up_interval: Duration,
    /// Time between catch-ups on an SQLite file: the only way another
    /// process's revocations arrive.
    pub poll_interval: Duration,
    /// Time between sweeps of expired revocations out of memory.
    pub sweep_interval: Duration,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            catch_up_interval: Duration::from_secs(1),
            poll_interval: Duration::from_millis(25),
            sweep_interval: Duration::from_secs(30),
        }
    }
}

/// Runs until `stop` is cancelled, starting from `cursor` (where the
/// start-up load left off). Each catch-up reads the signing keys too: the
/// state counts as current only when both were read.
pub async fn run(
    store: Store,
    state: Arc<RevocationState>,
    keys: Arc<SigningKeys>,
    mut cursor: FeedCursor,
    settings: SyncSettings,
    meter: Meter,
    stop: CancellationToken,
) {
    let missed = Arc::new(Notify::new());
    let listening = tokio::spawn(listen(
        store.clone(),
        state.clone(),
        missed.clone(),
        meter,
        stop.clone(),
    ));
    let period = if store.polls_for_revocations() {
        settings.poll_interval
    } else {
        settings.catch_up_interval
    };
    let mut catch_up = tokio::time::interval(period);
    catch_up.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sweep = tokio::time::interval(settings.sweep_interval);
    sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = sweep.tick() => {
                state.forget_expired(OffsetDateTime::now_utc().unix_timestamp());
                continue;
            }
            _ = catch_up.tick() => {}
            () = missed.notified() => {}
        }
        let began = std::time::Instant::now();
        let mut apply = |revocation| state.apply(revocation);
        let read = tokio::select! {
            () = stop.cancelled() => break,
            read = async {
                let next = store.revocations_since(&cursor, &mut apply).await?;
                keys.refresh().await?;
                Ok::<_, crate::store::StoreError>(next)
            } => read,
        };
        match read {
            Ok(next) => {
                cursor = next;
                state.apply_revoked_keys(keys.revoked());
                state.mark_synced(began);
                if failing {
                    failing = false;
                    tracing::info!("the revocation state is current again");
                }
            }
            Err(err) => {
                if !failing {
                    failing = true;
                    tracing::warn!(
                        error = %err,
                        "cannot read revocations; ValidateToken answers UNAVAILABLE once the \
                         state is too old to trust"
                    );
                }
            }
        }
    }
    let _ = listening.await;
}

/// Applies notifications as they arrive; signals `missed` whenever some may
/// have been lost. Returns at once where the store has none. A connection
/// lost is made again here, and counted, rather than inside the driver.
async fn listen(
    store: Store,
    state: Arc<RevocationState>,
    missed: Arc<Notify>,
    meter: Meter,
    stop: CancellationToken,
) {
    let mut listened = false;
    loop {
        let listener = tokio::select! {
            () = stop.cancelled() => return,
            listener = store.listen() => listener,
        };
        let mut pause = Duration::from_secs(1);
        match listener {
            Ok(None) => return,
            Ok(Some(mut listener)) => {
                if listened {
                    meter.listener_reconnected();
                    tracing::info!("listening for revocation notifications again");
                }
                listened = true;
                // Whatever committed before we listened comes by catch-up.
                missed.notify_one();
                loop {
                    let next = tokio::select! {
                        () = stop.cancelled() => return,
                        next = listener.next() => next,
                    };
                    match next {
                        Ok(Notice::Revoked(revocation)) => state.apply(revocation),
                        Ok(Notice::CatchUp) => missed.notify_one(),
                        Ok(Notice::Lost) => {
                            tracing::warn!("lost the revocation notifications; reconnecting");
                            pause = Duration::ZERO;
                            break;
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "lost the revocation notifications; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(err) => {
                tracing::debug!(error = %err, "cannot listen for revocations yet");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}
