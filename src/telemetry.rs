//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default: `info`,
//! with sqlx's per-statement chatter at `warn`).

use std::io::IsTerminal as _;

use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
