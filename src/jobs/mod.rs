//! Background tasks of `authd serve`. Each takes a [`CancellationToken`]
//! and returns when it is cancelled, so shutdown can await it.
//!
//! [`CancellationToken`]: tokio_util::sync::CancellationToken

pub mod database_health;
pub mod key_rotation;
pub mod purge;
pub mod revocation_sync;
pub mod tls_reload;
