//! Validation in-process with authd-client's LocalValidator: its rate on
//! one task for tokens it has seen (cached) and has not (a signature check
//! each), beside the raw Ed25519 verification rate; and how long a Logout
//! on one instance takes to be refused by a validator following another.

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use authd_client::{
    Client, ClientConfig, Credentials, InvalidToken, LocalValidator, ValidatorConfig, Validity,
};
use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::{drive::Measured, server::Server, watch::WATCHER};

/// A validator following `server`, watching as the bench's watcher user,
/// once ready; `cache_bytes` of verified tokens.
async fn validator(
    server: &Server,
    password: &str,
    cache_bytes: u64,
) -> anyhow::Result<LocalValidator> {
    let client = Client::from_channel(
        server.channel().await?,
        ClientConfig::new(format!("http://{}", server.addr)),
    );
    let mut config = ValidatorConfig::new(Credentials::ServiceAccount {
        username: WATCHER.to_owned(),
        password: password.to_owned().into(),
    });
    config.cache_bytes = cache_bytes;
    let validator = LocalValidator::start(client, config);
    tokio::time::timeout(Duration::from_secs(10), validator.ready())
        .await
        .context("the local validator was not ready within 10 s")?;
    Ok(validator)
}

/// Validations per second of `tokens`, in turn, on this one task for
/// `duration`; every answer must be valid.
async fn rate(
    validator: &LocalValidator,
    tokens: &[String],
    duration: Duration,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < duration {
        for token in tokens.iter().take(1_024) {
            match validator.validate(token).await {
                Ok(Validity::Valid(_)) => done += 1,
                other => bail!("a live token answered {other:?}"),
            }
        }
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

/// Ed25519 verifications per second of the tokens' signatures, with the
/// public key of their signer (base64url).
fn raw_ed25519_rate(
    tokens: &[String],
    public_key: &str,
    duration: Duration,
) -> anyhow::Result<f64> {
    let public_key = URL_SAFE_NO_PAD.decode(public_key)?;
    let key = UnparsedPublicKey::new(&ED25519, public_key);
    let signed: Vec<(&str, Vec<u8>)> = tokens
        .iter()
        .take(1_024)
        .map(|token| {
            let (message, signature) = token
                .rsplit_once('.')
                .context("a token without a signature")?;
            Ok((message, URL_SAFE_NO_PAD.decode(signature)?))
        })
        .collect::<anyhow::Result<_>>()?;
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < duration {
        for (message, signature) in &signed {
            key.verify(message.as_bytes(), signature)
                .map_err(|_| anyhow::anyhow!("a signature of ours does not verify"))?;
            done += 1;
        }
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

/// What in-process validation measured, in the report's words, and the
/// goals' numbers: cached rate, and uncached over raw Ed25519.
pub(crate) struct LocalReport {
    pub text: String,
    pub cached_rate: f64,
    pub cold_ratio: f64,
}

/// Measures in-process validation of `live` tokens, and the lag from a
/// Logout of each of `to_log_out` on `first` to its refusal by a
/// validator following `second`.
pub(crate) async fn measure(
    first: &Server,
    second: &Server,
    password: &str,
    live: &[String],
    public_key: &str,
    to_log_out: &[String],
    duration: Duration,
) -> anyhow::Result<LocalReport> {
    let cached = validator(first, password, 64 << 20).await?;
    // A first pass fills the cache.
    rate(&cached, live, Duration::ZERO).await?;
    let cached_rate = rate(&cached, live, duration).await?;
    let uncached = validator(first, password, 0).await?;
    let cold_rate = rate(&uncached, live, duration).await?;
    let raw = raw_ed25519_rate(live, public_key, duration)?;

    let follower = validator(second, password, 64 << 20).await?;
    let mut on_first =
        authd::grpc::pb::auth_service_client::AuthServiceClient::new(first.channel().await?);
    let mut lag = Measured::new();
    for token in to_log_out {
        if !matches!(follower.validate(token).await, Ok(Validity::Valid(_))) {
            bail!("a live token is not valid before its Logout");
        }
        on_first
            .logout(authd::grpc::pb::LogoutRequest {
                access_token: token.clone(),
                ..Default::default()
            })
            .await?;
        let logged_out = Instant::now();
        loop {
            match follower.validate(token).await {
                Ok(Validity::Invalid(InvalidToken::Revoked)) => break,
                Ok(Validity::Valid(_)) => {}
                other => bail!("a token being logged out answered {other:?}"),
            }
            if logged_out.elapsed() > Duration::from_secs(30) {
                bail!("a Logout was not refused by the other instance's validator within 30 s");
            }
            tokio::task::yield_now().await;
        }
        lag.record_lag(logged_out.elapsed());
    }
    let ms = |q: f64| lag.served.value_at_quantile(q) as f64 / 1000.0;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "- LocalValidator on one task: a cached token {cached_rate:.0}/s ({:.0} ns each); \
         uncached {cold_rate:.0}/s, {:.2} x the raw Ed25519 rate of {raw:.0}/s",
        1e9 / cached_rate,
        cold_rate / raw
    );
    let _ = writeln!(
        text,
        "- Logout on one instance refused by a LocalValidator following the other: \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} Logouts)",
        ms(0.5),
        ms(0.99),
        lag.served.max() as f64 / 1000.0,
        to_log_out.len()
    );
    Ok(LocalReport {
        text,
        cached_rate,
        cold_ratio: cold_rate / raw,
    })
}
