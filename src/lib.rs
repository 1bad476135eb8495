//! authd: a gRPC authentication service.
//!
//! A tour of the layout, from the wire inwards:
//!
//! - [`grpc`]: the transport edge. Converts protobuf to domain types and
//!   back, maps errors to statuses, logs one line per call.
//! - [`domain`]: values parsed at the edge (`Username`, `Password`,
//!   `AccessToken`, …); holding one means it is valid.
//! - [`auth`]: the use cases (login, logout, validate, accounts), tokens,
//!   keys, password hashing, the login throttle, and the in-memory
//!   revocation state. Knows nothing of gRPC or SQL.
//! - [`store`]: the storage interface and its two backends, PostgreSQL and
//!   an embedded SQLite file (sqlx); the only module with SQL.
//! - [`jobs`]: background tasks of the server (purge, revocation sync,
//!   database health).
//! - [`startup`]: builds the server from its settings and runs it until a
//!   shutdown future resolves; [`tls`]: its certificate and key.
//! - [`config`] and [`commands`]: the command line and what each
//!   subcommand does; [`telemetry`]: logging.

pub mod auth;
pub mod commands;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod jobs;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tls;
