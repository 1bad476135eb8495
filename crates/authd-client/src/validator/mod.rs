//! [`LocalValidator`]: validates access tokens in-process, with the
//! server's rules and reasons, against the JWKS and a copy of the
//! revocation state that WatchRevocations keeps current. Fails closed: when
//! the copy is older than `max_staleness` it answers [`Unavailable`].

mod follow;
mod keys;
mod view;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use authd_token::{DecodingKey, TokenRules, VerifiedTokens};
use secrecy::SecretString;
use tokio::sync::Notify;

use self::{keys::KeySet, view::View};
use crate::{Client, InvalidToken, Validity};

/// How the validator proves to authd that it may watch revocations.
#[derive(Clone)]
pub enum Credentials {
    /// Logs in as this user, who holds the server's watch role
    /// (`authd:watch` unless `--watch-role` says otherwise); the token is
    /// refreshed, or the user logged in again, as it is needed.
    ServiceAccount {
        /// The user's name.
        username: String,
        /// The user's password.
        password: SecretString,
    },
    /// No token: the client certificate of the connection is enough, on a
    /// server that requires them.
    ClientCertificate,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ServiceAccount { username, .. } => f
                .debug_struct("ServiceAccount")
                .field("username", username)
                .field("password", &"[REDACTED]")
                .finish(),
            Self::ClientCertificate => f.write_str("ClientCertificate"),
        }
    }
}

/// What tokens are checked against and how current the view must be.
#[derive(Debug, Clone)]
pub struct ValidatorConfig {
    /// The `iss` the server writes (its `--issuer`).
    pub issuer: String,
    /// The `aud` the server writes (its `--audience`).
    pub audience: String,
    /// Clock skew forgiven on `exp` and `iat` (the server's `--leeway`).
    pub leeway: Duration,
    /// How old the revocation view may be, by the server's heartbeats,
    /// before every answer is [`Unavailable`].
    pub max_staleness: Duration,
    /// Who the validator watches as.
    pub credentials: Credentials,
    /// Time between fetches of the JWKS.
    pub jwks_refresh: Duration,
    /// The least time between two fetches of the JWKS caused by tokens of
    /// an unknown `kid`, so that forged ones cannot make it fetch often.
    pub jwks_min_refetch: Duration,
    /// Bytes of verified tokens kept, so that a token seen before skips
    /// the signature check (0: none).
    pub cache_bytes: u64,
    /// The first and the longest wait before reconnecting.
    pub reconnect: (Duration, Duration),
}

impl ValidatorConfig {
    /// The server's defaults (issuer and audience `authd`, 5 s of leeway),
    /// a view trusted for 5 s, watching as `credentials`.
    pub fn new(credentials: Credentials) -> Self {
        Self {
            issuer: "authd".to_owned(),
            audience: "authd".to_owned(),
            leeway: Duration::from_secs(5),
            max_staleness: Duration::from_secs(5),
            credentials,
            jwks_refresh: Duration::from_secs(300),
            jwks_min_refetch: Duration::from_secs(10),
            cache_bytes: 16 << 20,
            reconnect: (Duration::from_millis(100), Duration::from_secs(5)),
        }
    }

    /// Heartbeats asked of the server: often enough that one that is lost
    /// leaves the view fresh.
    fn heartbeat(&self) -> Duration {
        (self.max_staleness / 4).max(Duration::from_secs(1))
    }
}

/// Whether a token is revoked cannot be known now; never treat it as
/// valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// No JWKS has been fetched yet.
    #[error("the signing keys are not known yet")]
    NoKeys,
    /// The revocation view is older than `max_staleness`.
    #[error("the revocation view is too old to trust")]
    Stale,
}

/// What the background task and the validators share.
struct Shared {
    config: ValidatorConfig,
    client: Client,
    rules: TokenRules,
    keys: KeySet,
    view: View,
    verified: VerifiedTokens,
    /// When a token of an unknown `kid` last made the JWKS be fetched.
    refetched: tokio::sync::Mutex<Option<Instant>>,
    /// Woken whenever the view becomes complete.
    updated: Notify,
}

/// Aborts the background task when the last validator is dropped.
struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Validates tokens in-process. Cheap to clone: clones share one view and
/// one background task, which stops when the last clone is dropped.
#[derive(Clone)]
pub struct LocalValidator {
    shared: Arc<Shared>,
    _task: Arc<Task>,
}

impl std::fmt::Debug for LocalValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalValidator")
            .field("keys", &self.shared.keys)
            .field("staleness", &self.staleness())
            .finish_non_exhaustive()
    }
}

/// The longest token ValidateToken takes.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

impl LocalValidator {
    /// Starts following authd through `client`: fetches the JWKS, then
    /// watches revocations, reconnecting with backoff. Answers
    /// [`Unavailable`] until the first view is complete ([`Self::ready`]).
    /// Must be called within a Tokio runtime.
    pub fn start(client: Client, config: ValidatorConfig) -> Self {
        let shared = Arc::new(Shared {
            rules: TokenRules::new(&config.issuer, &config.audience, config.leeway.as_secs()),
            verified: VerifiedTokens::new(config.cache_bytes, config.leeway.as_secs()),
            view: View::new(config.max_staleness),
            keys: KeySet::default(),
            refetched: tokio::sync::Mutex::new(None),
            updated: Notify::new(),
            config,
            client,
        });
        let task = tokio::spawn(follow::follow(shared.clone()));
        Self {
            shared,
            _task: Arc::new(Task(task)),
        }
    }

    /// Waits until the validator can answer: keys fetched and the view
    /// complete and fresh.
    pub async fn ready(&self) {
        loop {
            let updated = self.shared.updated.notified();
            if self.is_ready() {
                return;
            }
            updated.await;
        }
    }

    /// Whether the validator can answer now.
    pub fn is_ready(&self) -> bool {
        self.shared.keys.is_loaded() && self.shared.view.is_fresh()
    }

    /// How long ago the revocation view was last known complete; `None`
    /// before it ever was.
    pub fn staleness(&self) -> Option<Duration> {
        self.shared.view.age()
    }

    /// Whether `token` is valid now: its header, signature, claims and
    /// lifetime by the server's rules, then its revocation (of the token,
    /// its session, its user, or its key), with the server's reasons. A
    /// token over 8 KiB, which ValidateToken refuses as INVALID_ARGUMENT,
    /// is malformed here.
    ///
    /// # Errors
    /// [`Unavailable`] when the keys are not known yet or the view is
    /// too old: never valid then.
    pub async fn validate(&self, token: &str) -> Result<Validity, Unavailable> {
        if !self.shared.keys.is_loaded() {
            return Err(Unavailable::NoKeys);
        }
        let claims = match self.verify(token).await {
            Ok(claims) => claims,
            Err(reason) => return Ok(Validity::Invalid(reason)),
        };
        match self.shared.view.revokes(&claims) {
            None => Err(Unavailable::Stale),
            Some(true) => Ok(Validity::Invalid(InvalidToken::Revoked)),
            Some(false) => Ok(Validity::Valid(claims)),
        }
    }

    /// The token's claims, from the cache or by verifying it.
    async fn verify(&self, token: &str) -> Result<Arc<authd_token::Claims>, InvalidToken> {
        let shared = &self.shared;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(InvalidToken::Malformed);
        }
        let now = authd_token::now();
        // Read before verifying: a key revoked meanwhile moves it on, and
        // the entry is never used.
        let generation = shared.keys.generation();
        if let Some(claims) = shared.verified.get(token, now, generation) {
            return Ok(claims);
        }
        let kid = TokenRules::key_id(token)?;
        let key = match shared.keys.get(&kid) {
            Some(key) => key,
            None => self
                .refetch_for(&kid)
                .await
                .ok_or(InvalidToken::BadSignature)?,
        };
        let claims = Arc::new(shared.rules.verify(token, &key, true, now)?);
        shared.verified.insert(token, claims.clone(), generation);
        Ok(claims)
    }

    /// The key of `kid` after fetching the JWKS again, unless a fetch
    /// happened too recently or the key is revoked.
    async fn refetch_for(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        let shared = &self.shared;
        if shared.view.read().revokes_key(kid) {
            return None;
        }
        let mut last = shared.refetched.lock().await;
        // Fetched by another caller while this one waited.
        if let Some(key) = shared.keys.get(kid) {
            return Some(key);
        }
        if last.is_some_and(|at| at.elapsed() < shared.config.jwks_min_refetch) {
            return None;
        }
        *last = Some(Instant::now());
        if let Err(err) = follow::fetch_keys(shared).await {
            tracing::warn!(error = %err, "cannot fetch the JWKS for a token of an unknown key");
        }
        shared.keys.get(kid)
    }
}
