//! The background task of a validator: keeps its own access token, fetches
//! the JWKS, follows WatchRevocations and reconnects with backoff, resuming
//! where it left off.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use secrecy::SecretString;
use tonic::{Code, Streaming};

use super::{Credentials, Shared, view::Revoked};
use crate::{
    ClientError, Tokens,
    backoff::Backoff,
    pb::{RevocationEvent, revocation::Subject, revocation_event::Event},
};

/// Time between sweeps of what has expired out of the view.
const SWEEP: Duration = Duration::from_secs(30);

/// Follows the server until the validator is dropped.
pub(super) async fn follow(shared: Arc<Shared>) {
    let config = &shared.config;
    let mut backoff = Backoff::new(config.reconnect.0, config.reconnect.1);
    let mut session: Option<Tokens> = None;
    // Empty until a view is complete: then the server resumes after it.
    let mut resume = String::new();
    let mut next_key_fetch = Instant::now();
    loop {
        if Instant::now() >= next_key_fetch {
            next_key_fetch = refresh_keys(&shared).await;
        }
        let outcome = async {
            let bearer = bearer(&shared, &mut session).await?;
            let stream = shared
                .client
                .watch_revocations(bearer.as_ref(), &resume, config.heartbeat())
                .await?;
            read(
                &shared,
                stream,
                &mut resume,
                &mut next_key_fetch,
                &mut backoff,
            )
            .await
        }
        .await;
        match outcome {
            Ok(()) => tracing::info!("authd ended the revocation stream; reconnecting"),
            Err(err) => {
                if err.code() == Code::Unauthenticated {
                    // The token may have expired or been revoked: log in
                    // afresh next time.
                    session = None;
                }
                // Once per outage, not once per attempt.
                if backoff.failures() == 0 {
                    tracing::warn!(error = %err, "cannot follow authd's revocations; retrying");
                } else {
                    tracing::debug!(error = %err, "cannot follow authd's revocations; retrying");
                }
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Reads events until the stream ends or fails.
async fn read(
    shared: &Shared,
    mut stream: Streaming<RevocationEvent>,
    resume: &mut String,
    next_key_fetch: &mut Instant,
    backoff: &mut Backoff,
) -> Result<(), ClientError> {
    let margin = i64::try_from(shared.config.leeway.as_secs()).unwrap_or(i64::MAX);
    // A snapshot being received, applied whole once complete.
    let mut pending: Option<Revoked> = None;
    let mut sweep = tokio::time::interval(SWEEP);
    // A stream silent for three heartbeats is given up on, rather than
    // waiting for the connection's keep-alive to notice.
    let silence = shared.config.heartbeat() * 3;
    let mut heard = Instant::now();
    loop {
        let event = tokio::select! {
            message = stream.message() => match message? {
                Some(event) => event,
                None => return Ok(()),
            },
            () = tokio::time::sleep_until((heard + silence).into()) => {
                return Err(ClientError::Protocol("no heartbeat for three intervals"));
            }
            () = tokio::time::sleep_until((*next_key_fetch).into()) => {
                *next_key_fetch = refresh_keys(shared).await;
                continue;
            }
            _ = sweep.tick() => {
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |since| i64::try_from(since.as_secs()).unwrap_or(i64::MAX));
                shared.view.write().forget_expired(now);
                continue;
            }
        };
        heard = Instant::now();
        if backoff.reset() > 0 {
            tracing::info!("following authd's revocations again");
        }
        match event.event {
            Some(Event::Snapshot(chunk)) => {
                let snapshot = pending.get_or_insert_with(Revoked::default);
                for revocation in &chunk.revocations {
                    snapshot.apply(revocation, margin);
                }
                if !chunk.complete {
                    // Resuming after a part would skip the rest.
                    continue;
                }
                let complete = pending.take().unwrap_or_default();
                for kid in complete.keys() {
                    shared.keys.revoke(kid);
                }
                *shared.view.write() = complete;
                tracing::debug!(
                    entries = shared.view.read().len(),
                    "revocation snapshot applied"
                );
            }
            Some(Event::Revoked(revocation)) => {
                shared.view.write().apply(&revocation, margin);
                if let Some(Subject::KeyId(kid)) = &revocation.subject {
                    shared.keys.revoke(kid);
                }
            }
            Some(Event::Heartbeat(heartbeat)) => {
                let as_of = heartbeat.as_of.and_then(|at| SystemTime::try_from(at).ok());
                if let (Some(as_of), None) = (as_of, &pending) {
                    shared.view.heartbeat(as_of, Instant::now());
                    shared.updated.notify_waiters();
                }
            }
            None => continue,
        }
        resume.clone_from(&event.resume_token);
    }
}

/// Fetches the JWKS; returns when to fetch it next: sooner after a
/// failure, soonest while no key is known.
async fn refresh_keys(shared: &Shared) -> Instant {
    match fetch_keys(shared).await {
        Ok(()) => Instant::now() + shared.config.jwks_refresh,
        Err(err) => {
            // While none is known, the fetch is tried every second and
            // the watch's own warning says authd cannot be reached.
            let retry = if shared.keys.is_loaded() {
                tracing::warn!(error = %err, "cannot fetch authd's JWKS");
                30
            } else {
                tracing::debug!(error = %err, "cannot fetch authd's JWKS");
                1
            };
            Instant::now() + Duration::from_secs(retry).min(shared.config.jwks_refresh)
        }
    }
}

/// Fetches the JWKS and installs it, less the keys known revoked.
pub(super) async fn fetch_keys(shared: &Shared) -> Result<(), ClientError> {
    let published = shared.client.get_jwks().await?;
    let view = &shared.view;
    shared
        .keys
        .install(&published, |kid| view.read().revokes_key(kid));
    shared.updated.notify_waiters();
    Ok(())
}

/// The access token to watch with, refreshed or obtained anew as needed;
/// none where the client certificate is enough.
async fn bearer(
    shared: &Shared,
    session: &mut Option<Tokens>,
) -> Result<Option<SecretString>, ClientError> {
    let Credentials::ServiceAccount { username, password } = &shared.config.credentials else {
        return Ok(None);
    };
    // The stream is authorized when it opens: a token with a little life
    // left is enough.
    let soon = SystemTime::now() + Duration::from_secs(30);
    if let Some(tokens) = session.as_ref()
        && tokens.expires_at > soon
    {
        return Ok(Some(tokens.access_token.clone()));
    }
    if let Some(tokens) = session.take()
        && tokens.refresh_expires_at > soon
    {
        match shared.client.refresh(&tokens.refresh_token).await {
            Ok(fresh) => {
                let bearer = fresh.access_token.clone();
                *session = Some(fresh);
                return Ok(Some(bearer));
            }
            Err(err) => {
                tracing::info!(error = %err, "cannot refresh the watcher's token; logging in");
            }
        }
    }
    let fresh = shared.client.login(username, password).await?;
    let bearer = fresh.access_token.clone();
    *session = Some(fresh);
    Ok(Some(bearer))
}
