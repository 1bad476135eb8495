//! The service end to end: a real PostgreSQL, the real server on port 0,
//! the generated tonic client.

mod helpers;
mod login;
mod logout;
mod operations;
mod passwords;
mod purge;
mod token_attacks;
mod user_revocation;
mod validate;
