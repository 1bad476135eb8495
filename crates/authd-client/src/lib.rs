//! A Rust client for authd.
//!
//! - [`Client`]: Login, Refresh, Logout, ValidateToken and GetJwks as typed
//!   async calls, with TLS, a deadline per call, and retries only of the
//!   calls that are safe to repeat.
//! - [`LocalValidator`]: validates tokens in-process, with the server's
//!   rules and reasons, following revocations as they are made; fails
//!   closed once its view is older than `max_staleness`.
//! - [`AuthLayer`]: a tower layer for tonic and axum servers that refuses
//!   requests without a valid token and hands the handler a [`Caller`].
//! - [`pb`]: the generated `auth.v1` messages and client, for the rest.

mod backoff;
mod client;
mod layer;
pub mod pb;
mod validator;

use std::sync::Arc;

pub use authd_token::{Claims, InvalidToken};
pub use client::{Client, ClientConfig, ClientError, LogoutScope, PublicKey, TlsConfig, Tokens};
pub use layer::{AuthLayer, Caller, RequireToken};
pub use validator::{Credentials, LocalValidator, Unavailable, ValidatorConfig};

/// Whether a token is valid, and its claims when it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validity {
    /// Signed by authd, current and not revoked.
    Valid(Arc<Claims>),
    /// Not valid, and why.
    Invalid(InvalidToken),
}
