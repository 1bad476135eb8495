//! Keeps the gRPC health status in step with the database.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    grpc::SERVICE_NAME,
    store::{Storage as _, Store},
};

/// How often the database is pinged.
const PING_EVERY: Duration = Duration::from_secs(1);
/// How long a ping may take before the database counts as unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Reports SERVING while the database answers and NOT_SERVING while it does
/// not, for the server (`""`) and for `auth.v1.AuthService`. When `stop`
/// fires it reports NOT_SERVING for good and returns.
pub async fn watch(store: Store, reporter: HealthReporter, stop: CancellationToken) {
    let mut reachable = true;
    set(&reporter, ServingStatus::Serving).await;
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
                set(&reporter, ServingStatus::Serving).await;
            } else {
                tracing::warn!("the database does not answer; health is NOT_SERVING");
                set(&reporter, ServingStatus::NotServing).await;
            }
        }
    }
    set(&reporter, ServingStatus::NotServing).await;
}

async fn set(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(SERVICE_NAME, status).await;
}
