//! Keeps the gRPC health status, and the HTTP readiness probe, in step
//! with the database.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    grpc::{ADMIN_SERVICE_NAME, EXT_AUTHZ_SERVICE_NAME, SERVICE_NAME},
    store::{Storage as _, Store},
};

/// How often the database is pinged.
const PING_EVERY: Duration = Duration::from_secs(1);
/// How long a ping may take before the database counts as unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the server is SERVING, for `GET /readyz`. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Whether the health status is SERVING.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }
}

/// Reports SERVING while the database answers and NOT_SERVING while it does
/// not, for the server (`""`) and for `auth.v1.AuthService`, and to
/// `readiness`. When `stop` fires it reports NOT_SERVING for good and
/// returns.
pub async fn watch(
    store: Store,
    reporter: HealthReporter,
    readiness: Readiness,
    stop: CancellationToken,
) {
    let set = |status| {
        readiness.set(status == ServingStatus::Serving);
        set(&reporter, status)
    };
    let mut reachable = true;
    set(ServingStatus::Serving).await;
    let mut ticks = tokio::time::interval(PING_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let answered = tokio::select! {
            () = stop.cancelled() => break,
            ping = tokio::time::timeout(PING_TIMEOUT, store.ping()) => matches!(ping, Ok(Ok(()))),
        };
        if answered != reachable {
            reachable = answered;
            if reachable {
                tracing::info!("the database answers again; serving");
                set(ServingStatus::Serving).await;
            } else {
                tracing::warn!("the database does not answer; health is NOT_SERVING");
                set(ServingStatus::NotServing).await;
            }
        }
    }
    set(ServingStatus::NotServing).await;
}

async fn set(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(SERVICE_NAME, status).await;
    reporter
        .set_service_status(EXT_AUTHZ_SERVICE_NAME, status)
        .await;
    reporter
        .set_service_status(ADMIN_SERVICE_NAME, status)
        .await;
}
