//! What every instance on one database must agree on, so that none accepts
//! a token another has revoked: the claims their tokens carry, and bounds
//! on how long anything about a token is remembered.

use std::time::Duration;

use anyhow::bail;

use super::TokenSettings;
use crate::store::{DeploymentRecord, Storage as _, Store};

/// Joins the deployment recorded in `store` as an instance issuing tokens
/// with `tokens`: records its lifetime, and returns the record.
///
/// Leeways need no record: each is at most [`TokenSettings::MAX_LEEWAY`],
/// and the purge keeps revocations that long past expiry.
///
/// # Errors
/// When the deployment's issuer or audience is not this instance's (its
/// tokens would be refused by the others, and theirs by it), its leeway is
/// over the bound, or the database fails.
pub async fn join(store: &Store, tokens: &TokenSettings) -> anyhow::Result<DeploymentRecord> {
    if tokens.leeway > TokenSettings::MAX_LEEWAY {
        bail!(
            "the leeway is {}; it must be at most {}",
            humantime::format_duration(tokens.leeway),
            humantime::format_duration(TokenSettings::MAX_LEEWAY)
        );
    }
    let record = store
        .record_deployment(&tokens.issuer, &tokens.audience, tokens.ttl)
        .await?;
    for (what, flag, theirs, ours) in [
        ("issuer", "--issuer", &record.issuer, &tokens.issuer),
        ("audience", "--audience", &record.audience, &tokens.audience),
    ] {
        if theirs != ours {
            bail!(
                "the instances on this database issue tokens with {what} {theirs:?}, this one \
                 with {ours:?}: start it with {flag} {theirs:?} (to change it for every \
                 instance, stop them all and update the deployment table)"
            );
        }
    }
    Ok(record)
}

/// How long after its end a record that can make a token invalid (a
/// deleted user, a retired or revoked key) must be kept in the database:
/// the longest lifetime any instance has issued tokens with, plus the most
/// leeway any may forgive.
pub fn token_retention(record: Option<&DeploymentRecord>, tokens: &TokenSettings) -> Duration {
    longest_ttl(record, tokens.ttl) + TokenSettings::MAX_LEEWAY
}

/// How long an instance issuing tokens of lifetime `ttl` and forgiving
/// `leeway` still accepts a token after its key retired: the longest
/// lifetime any instance issues tokens with, plus its own leeway.
pub fn key_retention(
    record: Option<&DeploymentRecord>,
    ttl: Duration,
    leeway: Duration,
) -> Duration {
    longest_ttl(record, ttl) + leeway
}

fn longest_ttl(record: Option<&DeploymentRecord>, ttl: Duration) -> Duration {
    record.map_or(ttl, |record| record.max_access_token_ttl.max(ttl))
}
