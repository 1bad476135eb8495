//! Rotates the signing key when it has signed for the rotation interval:
//! every instance checks, and one rotation happens.

use std::{sync::Arc, time::Duration};

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::auth::{Rotation, SigningKeys};

/// When keys rotate by themselves.
#[derive(Debug, Clone, Copy)]
pub struct RotationSettings {
    /// How long a key signs before the next is scheduled; `None`: only by
    /// `authd keys rotate`.
    pub interval: Option<Duration>,
    /// How long a new key is published before it signs.
    pub publish_lead: Duration,
    /// Time between checks.
    pub check_every: Duration,
}

impl RotationSettings {
    /// The default rotation interval.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(90 * 24 * 3600);
    /// The default time between checks.
    pub const DEFAULT_CHECK_EVERY: Duration = Duration::from_secs(60);

    /// The defaults, with a new key published `publish_lead` before it
    /// signs.
    pub fn new(publish_lead: Duration) -> Self {
        Self {
            interval: Some(Self::DEFAULT_INTERVAL),
            publish_lead,
            check_every: Self::DEFAULT_CHECK_EVERY,
        }
    }
}

/// Checks at start and every `settings.check_every` until `stop` is
/// cancelled; returns at once when rotation is off.
pub async fn run(keys: Arc<SigningKeys>, settings: RotationSettings, stop: CancellationToken) {
    let Some(interval) = settings.interval else {
        return;
    };
    let mut ticks = tokio::time::interval(settings.check_every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let rotated = tokio::select! {
            () = stop.cancelled() => break,
            rotated = keys.rotate_if_due(interval, settings.publish_lead) => rotated,
        };
        match rotated {
            Ok(Rotation::Scheduled { .. } | Rotation::NotDue | Rotation::AlreadyPending { .. }) => {
            }
            Err(err) => tracing::warn!(
                error = %err,
                cause = ?std::error::Error::source(&err).map(ToString::to_string),
                "cannot check whether the signing key is due for rotation"
            ),
        }
    }
    tracing::debug!("key rotation task stopped");
}
