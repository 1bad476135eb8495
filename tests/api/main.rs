//! The service end to end, on each storage backend (a real PostgreSQL and
//! an SQLite file): the real server on port 0, the generated tonic client,
//! and the storage interface's own contract.

mod admin;
mod client;
mod deployment;
mod errors;
mod helpers;
mod http;
mod jwks;
mod keys;
mod login;
mod logout;
mod metrics;
mod operations;
mod passwords;
mod pooler;
mod proxy_auth;
mod purge;
mod sessions;
mod store;
mod throttle;
mod tls;
mod token_attacks;
mod user_revocation;
mod validate;
mod watch;
