//! WatchRevocations under measurement: how long a Logout on one instance
//! takes to reach a watcher of another, and what a thousand idle watchers
//! cost a server.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use authd::grpc::pb::{
    LoginRequest, LogoutRequest, RevocationEvent, ValidateTokenRequest, WatchRevocationsRequest,
    auth_service_client::AuthServiceClient, revocation::Subject, revocation_event::Event,
};
use tokio::task::JoinSet;
use tonic::{Streaming, transport::Channel};

use crate::{drive::Measured, server::Server};

/// The watcher user's name; `main` adds it with the watch role.
pub(crate) const WATCHER: &str = "bench-watcher";

/// A watcher's access token on `server`.
pub(crate) async fn watcher_token(server: &Server, password: &str) -> anyhow::Result<String> {
    Ok(AuthServiceClient::new(server.channel().await?)
        .login(LoginRequest {
            username: WATCHER.into(),
            password: password.into(),
        })
        .await?
        .into_inner()
        .access_token)
}

/// A stream on `channel`, read through its snapshot and first heartbeat.
async fn watching(channel: Channel, token: &str) -> anyhow::Result<Streaming<RevocationEvent>> {
    let mut request = tonic::Request::new(WatchRevocationsRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let mut stream = AuthServiceClient::new(channel)
        .watch_revocations(request)
        .await?
        .into_inner();
    loop {
        match stream.message().await?.map(|e| e.event) {
            Some(Some(Event::Heartbeat(_))) => return Ok(stream),
            Some(Some(Event::Snapshot(_))) => {}
            other => bail!("the stream began with {other:?}"),
        }
    }
}

/// For each of `tokens`: Logout on `first`, and the time until a watcher
/// of `second` hears its `jti`.
pub(crate) async fn logout_to_watcher(
    first: &Server,
    second: &Server,
    token: &str,
    tokens: &[String],
) -> anyhow::Result<Measured> {
    let mut stream = watching(second.channel().await?, token).await?;
    let mut on_first = AuthServiceClient::new(first.channel().await?);
    let mut measured = Measured::new();
    let start = Instant::now();
    for access_token in tokens {
        let jti = on_first
            .validate_token(ValidateTokenRequest {
                access_token: access_token.clone(),
            })
            .await?
            .into_inner()
            .jti;
        on_first
            .logout(LogoutRequest {
                access_token: access_token.clone(),
                ..Default::default()
            })
            .await?;
        let revoked_at = Instant::now();
        loop {
            let event = tokio::time::timeout(Duration::from_secs(30), stream.message())
                .await
                .context("the watcher never heard of the Logout")??
                .context("the stream ended")?;
            if let Some(Event::Revoked(revocation)) = event.event
                && revocation.subject == Some(Subject::Jti(jti.clone()))
            {
                break;
            }
        }
        measured.record_lag(revoked_at.elapsed());
    }
    measured.window = start.elapsed();
    Ok(measured)
}

/// `count` watchers of `server`, each read to its end on a task of its own
/// (over a connection per 200, as HTTP/2 bounds streams per connection).
pub(crate) async fn idle_watchers(
    server: &Server,
    token: &str,
    count: usize,
) -> anyhow::Result<JoinSet<anyhow::Result<()>>> {
    let mut watchers = JoinSet::new();
    let mut channel = server.channel().await?;
    for n in 0..count {
        if n > 0 && n % 200 == 0 {
            channel = server.channel().await?;
        }
        let mut stream = watching(channel.clone(), token).await?;
        watchers.spawn(async move {
            while stream.message().await?.is_some() {}
            Ok(())
        });
    }
    Ok(watchers)
}
