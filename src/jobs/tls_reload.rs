//! Reads the TLS certificate and key again on SIGHUP and when their files
//! change (a renewal by cert-manager or certbot, a Secret updated in
//! place), so that certificates rotate without a restart. A pair that does
//! not load leaves the one in use, and says why.

use std::sync::Arc;

use tokio::{signal::unix::Signal, time::MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::tls::ServerTls;

/// Reloads `tls` on each `hangup` (SIGHUP, when it could be listened for)
/// and whenever its files look different at a check, until `stop`. Without
/// TLS, a SIGHUP (`systemctl reload`) is logged and changes nothing.
pub async fn run(tls: Option<Arc<ServerTls>>, mut hangup: Option<Signal>, stop: CancellationToken) {
    let Some(tls) = tls else {
        while let Some(signal) = hangup.as_mut() {
            tokio::select! {
                () = stop.cancelled() => break,
                received = signal.recv() => match received {
                    Some(()) => tracing::info!("SIGHUP: no TLS certificate to reload"),
                    None => break,
                },
            }
        }
        return;
    };
    let mut checks = tls.watch_interval().map(|every| {
        let mut checks = tokio::time::interval(every);
        checks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        checks
    });
    let mut seen = tls.files_stamp();
    loop {
        let cause = tokio::select! {
            () = stop.cancelled() => break,
            Some(()) = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            } => "SIGHUP",
            _ = async {
                match checks.as_mut() {
                    Some(checks) => checks.tick().await,
                    None => std::future::pending().await,
                }
            } => {
                let now = tls.files_stamp();
                if now == seen {
                    continue;
                }
                seen = now;
                "the files changed"
            }
        };
        match tls.reload() {
            Ok(()) => tracing::info!(cause, "reloaded the TLS certificate and key"),
            Err(err) => tracing::error!(
                cause,
                error = format!("{err:#}"),
                "cannot reload the TLS certificate and key; still serving the previous ones"
            ),
        }
    }
}
