//! authd: a gRPC authentication service.
//!
//! A tour of the layout, from the wire inwards:
//!
//! - [`grpc`]: the transport edge. Converts protobuf to domain types and
//!   back, maps errors to statuses, logs one line per call; serves the
//!   admin service and Envoy's ext_authz beside our service.
//! - [`http`]: the HTTP face: the JWKS, the server metadata, forward-auth
//!   for nginx, Traefik and Caddy, the probes and the metrics.
//! - [`proxy`]: what a proxy asking about a request is told, in HTTP
//!   terms, shared by ext_authz and forward-auth.
//! - [`domain`]: values parsed at the edge (`Username`, `Password`,
//!   `AccessToken`, …); holding one means it is valid.
//! - [`auth`]: the use cases (login, refresh, logout, validate, a user's
//!   sessions, accounts, signing keys, what instances must agree on), tokens and refresh tokens, password
//!   hashing, the login throttle, and the in-memory revocation state and
//!   key set. Knows nothing of gRPC, HTTP or SQL.
//! - [`store`]: the storage interface and its two backends, PostgreSQL and
//!   an embedded SQLite file (sqlx); the only module with SQL.
//! - [`jobs`]: background tasks of the server (purge, revocation sync,
//!   key rotation, database health, TLS reload).
//! - [`startup`]: builds the server from its settings and runs it until a
//!   shutdown future resolves; [`tls`]: its certificate and key, reloaded
//!   in place.
//! - [`config`] and [`commands`]: the command line and what each
//!   subcommand does; [`telemetry`]: logging and the Prometheus metrics.

pub mod auth;
pub mod commands;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod http;
pub mod jobs;
pub mod proxy;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tls;
