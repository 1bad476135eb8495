//! Prometheus metrics, served at `GET /metrics` on the HTTP listener.
//!
//! One [`Metrics`] per server holds its own registry (servers in one
//! process, as in the tests, never mix their counts). Every labelled
//! series is made up front and held by handle, so counting on the hot path
//! is an atomic add, with no lookup and no lock. What the use cases and
//! jobs count goes through a [`Meter`], which does nothing when metrics
//! are off; gauges of the live state are read at each scrape.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use prometheus::{
    Encoder as _, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
    core::{Collector, Desc},
    proto::MetricFamily,
};

use crate::auth::{
    AuthError, Grant, InvalidToken, KeyState, Passwords, RevocationState, SigningKeys, Validity,
};

/// The media type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `grpc_server_handling_seconds`' buckets: from 50 µs (a ValidateToken
/// answered from memory) to 10 s (the longest a call may run by default).
const HANDLING_BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// `authd_password_hash_seconds`' buckets, around the ~50 ms of the default
/// cost.
const HASH_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0,
];

/// The gRPC status codes by number, as go-grpc-prometheus writes them in
/// `grpc_code` (Go's names: `Canceled` with one l).
const GRPC_CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// `grpc_code` `Unknown`: a status authd cannot read.
pub const UNKNOWN: usize = 2;
/// `grpc_code` `Canceled`: a call dropped before it was answered (the
/// client went away, or the request timeout fired).
pub const CANCELED: usize = 1;

/// ValidateToken's outcomes, as `result` and `reason`; the reasons are the
/// names of the proto's `TokenInvalidReason` without its prefix, and of the
/// error reason of an unknowable answer.
const VALIDATIONS: [(&str, &str); 7] = [
    ("valid", "none"),
    ("invalid", "MALFORMED"),
    ("invalid", "BAD_SIGNATURE"),
    ("invalid", "EXPIRED"),
    ("invalid", "NOT_YET_VALID"),
    ("invalid", "REVOKED"),
    ("unavailable", "REVOCATION_STATE_STALE"),
];

const LOGINS: [&str; 6] = [
    "ok",
    "unauthenticated",
    "throttled",
    "overloaded",
    "unavailable",
    "internal",
];

const REFRESHES: [&str; 5] = ["ok", "invalid", "reused", "unavailable", "internal"];

const PURGED_TABLES: [&str; 5] = [
    "revocations",
    "deleted_users",
    "failed_logins",
    "signing_keys",
    "sessions",
];

/// The metrics of one server.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    validations: [IntCounter; 7],
    logins: [IntCounter; 6],
    refreshes: [IntCounter; 5],
    refresh_reuse: IntCounter,
    password_hash: Histogram,
    listener_reconnects: IntCounter,
    purged: [IntCounter; 5],
    grpc: Arc<GrpcMetrics>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// What can go wrong making the metrics: a name or label broken in the
/// code, never in the input.
pub type MetricsError = prometheus::Error;

impl Metrics {
    /// The registry with every metric of authd, the gRPC server metrics of
    /// the `methods` served (see [`GrpcMethod`]), and the process's.
    ///
    /// # Errors
    /// When a metric is defined twice or badly, a bug.
    pub fn new(methods: &[GrpcMethod]) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let validations = counters(
            &registry,
            "authd_token_validations_total",
            "Tokens checked (ValidateToken, ext_authz, forward-auth), by result and reason.",
            &["result", "reason"],
            &VALIDATIONS.map(|(result, reason)| [result, reason]),
        )?;
        let logins = counters(
            &registry,
            "authd_logins_total",
            "Login calls answered, by result.",
            &["result"],
            &LOGINS.map(|result| [result]),
        )?;
        let refreshes = counters(
            &registry,
            "authd_refreshes_total",
            "Refresh calls answered, by result.",
            &["result"],
            &REFRESHES.map(|result| [result]),
        )?;
        let refresh_reuse = counter(
            &registry,
            "authd_refresh_reuse_detected_total",
            "Spent refresh tokens presented again past the grace: each ended its session.",
        )?;
        let password_hash = Histogram::with_opts(
            HistogramOpts::new(
                "authd_password_hash_seconds",
                "Time one argon2id hash or check took on a hashing thread.",
            )
            .buckets(HASH_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(password_hash.clone()))?;
        let listener_reconnects = counter(
            &registry,
            "authd_revocation_listener_reconnects_total",
            "Times the PostgreSQL notification listener was connected again after losing its connection.",
        )?;
        let purged = counters(
            &registry,
            "authd_purge_rows_total",
            "Rows the purge deleted, by table.",
            &["table"],
            &PURGED_TABLES.map(|table| [table]),
        )?;
        let build = IntGaugeVec::new(
            Opts::new(
                "authd_build_info",
                "Always 1; the labels say which authd runs.",
            ),
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        registry.register(Box::new(build))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let grpc = Arc::new(GrpcMetrics::new(&registry, methods)?);
        Ok(Self(Arc::new(Inner {
            registry,
            validations,
            logins,
            refreshes,
            refresh_reuse,
            password_hash,
            listener_reconnects,
            purged,
            grpc,
        })))
    }

    /// The handle the use cases and jobs count through.
    pub fn meter(&self) -> Meter {
        Meter(Some(self.clone()))
    }

    /// The gRPC server metrics, for the layer in front of the services.
    pub fn grpc(&self) -> Arc<GrpcMetrics> {
        self.0.grpc.clone()
    }

    /// Reads the gauges of `live` at each scrape.
    ///
    /// # Errors
    /// When called twice, a bug.
    pub fn watch(&self, live: LiveState) -> Result<(), MetricsError> {
        self.0.registry.register(Box::new(LiveGauges::new(live)?))
    }

    /// Every metric, in the text exposition format.
    ///
    /// # Errors
    /// When a metric cannot be written, a bug.
    pub fn render(&self) -> Result<Vec<u8>, MetricsError> {
        let mut out = Vec::with_capacity(64 * 1024);
        TextEncoder::new().encode(&self.0.registry.gather(), &mut out)?;
        Ok(out)
    }
}

/// Registers one counter with no labels.
fn counter(registry: &Registry, name: &str, help: &str) -> Result<IntCounter, MetricsError> {
    let counter = IntCounter::new(name, help)?;
    registry.register(Box::new(counter.clone()))?;
    Ok(counter)
}

/// Registers a labelled counter and makes each of its `series` now, so
/// that each is written (as 0) before it first moves, and is counted
/// through its handle.
fn counters<const L: usize, const N: usize>(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str; L],
    series: &[[&str; L]; N],
) -> Result<[IntCounter; N], MetricsError> {
    let family = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(family.clone()))?;
    let made: Vec<IntCounter> = series
        .iter()
        .map(|values| family.get_metric_with_label_values(values))
        .collect::<Result<_, _>>()?;
    made.try_into()
        .map_err(|_| prometheus::Error::Msg(format!("{name}: series miscounted")))
}

/// Counts what the use cases and jobs do; does nothing when metrics are
/// off (the default value).
#[derive(Clone, Debug, Default)]
pub struct Meter(Option<Metrics>);

impl Meter {
    /// A meter that counts nothing.
    pub fn off() -> Self {
        Self(None)
    }

    /// A token was checked.
    pub fn validated(&self, outcome: &Result<Validity, AuthError>) {
        if let Some(metrics) = &self.0 {
            metrics.0.validations[validation_series(outcome)].inc();
        }
    }

    /// A Login was answered.
    pub fn logged_in(&self, outcome: &Result<Grant, AuthError>) {
        if let Some(metrics) = &self.0 {
            metrics.0.logins[login_series(outcome)].inc();
        }
    }

    /// A Refresh was answered.
    pub fn refreshed(&self, outcome: &Result<Grant, AuthError>) {
        if let Some(metrics) = &self.0 {
            metrics.0.refreshes[refresh_series(outcome)].inc();
            if matches!(outcome, Err(AuthError::RefreshTokenReused)) {
                metrics.0.refresh_reuse.inc();
            }
        }
    }

    /// A hashing thread ran argon2id for `took`.
    pub fn password_hashed(&self, took: Duration) {
        if let Some(metrics) = &self.0 {
            metrics.0.password_hash.observe(took.as_secs_f64());
        }
    }

    /// The notification listener is connected again.
    pub fn listener_reconnected(&self) {
        if let Some(metrics) = &self.0 {
            metrics.0.listener_reconnects.inc();
        }
    }

    /// A purge pass deleted `rows` of each table, in the order of
    /// [`PurgedRows`].
    pub fn purged(&self, rows: PurgedRows) {
        if let Some(metrics) = &self.0 {
            for (counter, count) in metrics.0.purged.iter().zip(rows.0) {
                counter.inc_by(count);
            }
        }
    }
}

/// Rows a purge pass deleted: revocations, deleted users, failed Logins,
/// signing keys and sessions.
#[derive(Debug, Clone, Copy)]
pub struct PurgedRows(pub [u64; 5]);

fn validation_series(outcome: &Result<Validity, AuthError>) -> usize {
    match outcome {
        Ok(Validity::Valid(_)) => 0,
        Ok(Validity::Invalid(InvalidToken::Malformed)) => 1,
        Ok(Validity::Invalid(InvalidToken::BadSignature)) => 2,
        Ok(Validity::Invalid(InvalidToken::Expired)) => 3,
        Ok(Validity::Invalid(InvalidToken::NotYetValid)) => 4,
        Ok(Validity::Invalid(InvalidToken::Revoked)) => 5,
        Err(_) => 6,
    }
}

fn login_series(outcome: &Result<Grant, AuthError>) -> usize {
    match outcome {
        Ok(_) => 0,
        Err(AuthError::InvalidCredentials) => 1,
        Err(AuthError::Throttled(_)) => 2,
        Err(AuthError::Overloaded) => 3,
        Err(AuthError::Unavailable(_)) => 4,
        Err(_) => 5,
    }
}

fn refresh_series(outcome: &Result<Grant, AuthError>) -> usize {
    match outcome {
        Ok(_) => 0,
        Err(AuthError::InvalidRefreshToken) => 1,
        Err(AuthError::RefreshTokenReused) => 2,
        Err(AuthError::Unavailable(_)) => 3,
        Err(_) => 4,
    }
}

/// What the gauges read at each scrape.
#[derive(Debug, Clone)]
pub struct LiveState {
    /// The in-memory revocation state.
    pub revocations: Arc<RevocationState>,
    /// The password hasher, for its queue.
    pub passwords: Passwords,
    /// The key set.
    pub keys: Arc<SigningKeys>,
}

/// The gauges of the live state, set from it as they are collected.
struct LiveGauges {
    live: LiveState,
    revocations: IntGaugeVec,
    age: Gauge,
    queue: IntGauge,
    keys: IntGaugeVec,
}

const KEY_STATES: [KeyState; 5] = [
    KeyState::Pending,
    KeyState::Active,
    KeyState::Retired,
    KeyState::Revoked,
    KeyState::Removed,
];

impl LiveGauges {
    fn new(live: LiveState) -> Result<Self, MetricsError> {
        Ok(Self {
            live,
            revocations: IntGaugeVec::new(
                Opts::new(
                    "authd_revocations",
                    "Revocations held in memory, by kind: logged-out tokens, ended sessions, restricted users.",
                ),
                &["kind"],
            )?,
            age: Gauge::new(
                "authd_revocation_state_age_seconds",
                "Seconds since the in-memory revocation state last matched the database; \
                 past 3, ValidateToken answers UNAVAILABLE.",
            )?,
            queue: IntGauge::new(
                "authd_password_hash_queue",
                "Password checks and hashes waiting for a hashing thread.",
            )?,
            keys: IntGaugeVec::new(
                Opts::new(
                    "authd_signing_keys",
                    "Signing keys in the database, by state.",
                ),
                &["state"],
            )?,
        })
    }
}

impl Collector for LiveGauges {
    fn desc(&self) -> Vec<&Desc> {
        [
            self.revocations.desc(),
            self.age.desc(),
            self.queue.desc(),
            self.keys.desc(),
        ]
        .concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let held = self.live.revocations.held();
        for (kind, count) in [
            ("token", held.tokens),
            ("session", held.sessions),
            ("user", held.users),
        ] {
            self.revocations
                .with_label_values(&[kind])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        self.age.set(self.live.revocations.age().as_secs_f64());
        self.queue
            .set(i64::try_from(self.live.passwords.waiting()).unwrap_or(i64::MAX));
        let states = self.live.keys.states();
        for state in KEY_STATES {
            let count = states.iter().filter(|&&s| s == state).count();
            self.keys
                .with_label_values(&[state.as_str()])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        [
            self.revocations.collect(),
            self.age.collect(),
            self.queue.collect(),
            self.keys.collect(),
        ]
        .concat()
    }
}

/// One method served, as the gRPC server metrics label it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcMethod {
    /// `grpc_service`: the package and service (`auth.v1.AuthService`).
    pub service: String,
    /// `grpc_method`: `ValidateToken`.
    pub method: String,
    /// `grpc_type`: `unary`, `client_stream`, `server_stream` or
    /// `bidi_stream`.
    pub kind: &'static str,
}

impl GrpcMethod {
    /// Every method of the services in encoded `FileDescriptorSet`s.
    ///
    /// # Errors
    /// When a set does not decode, a bug.
    pub fn all_in(sets: &[&[u8]]) -> Result<Vec<Self>, prost::DecodeError> {
        use prost::Message as _;
        let mut methods = Vec::new();
        for set in sets {
            let set = prost_types::FileDescriptorSet::decode(*set)?;
            for file in &set.file {
                for service in &file.service {
                    for method in &service.method {
                        let kind = match (method.client_streaming(), method.server_streaming()) {
                            (false, false) => "unary",
                            (true, false) => "client_stream",
                            (false, true) => "server_stream",
                            (true, true) => "bidi_stream",
                        };
                        methods.push(Self {
                            service: format!("{}.{}", file.package(), service.name()),
                            method: method.name().to_owned(),
                            kind,
                        });
                    }
                }
            }
        }
        methods.sort_by(|a, b| (&a.service, &a.method).cmp(&(&b.service, &b.method)));
        methods.dedup();
        Ok(methods)
    }
}

/// go-grpc-prometheus' server metrics, a set of handles per method.
pub struct GrpcMetrics {
    /// By request path, `/auth.v1.AuthService/ValidateToken`.
    methods: HashMap<Box<str>, Arc<MethodMetrics>>,
}

struct MethodMetrics {
    started: IntCounter,
    handled: [IntCounter; 17],
    seconds: Histogram,
}

impl std::fmt::Debug for GrpcMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcMetrics")
            .field("methods", &self.methods.len())
            .finish()
    }
}

impl GrpcMetrics {
    fn new(registry: &Registry, methods: &[GrpcMethod]) -> Result<Self, MetricsError> {
        const LABELS: [&str; 3] = ["grpc_type", "grpc_service", "grpc_method"];
        let started = IntCounterVec::new(
            Opts::new(
                "grpc_server_started_total",
                "Total number of RPCs started on the server.",
            ),
            &LABELS,
        )?;
        let handled = IntCounterVec::new(
            Opts::new(
                "grpc_server_handled_total",
                "Total number of RPCs completed on the server, regardless of success or failure.",
            ),
            &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
        )?;
        let seconds = prometheus::HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            )
            .buckets(HANDLING_BUCKETS.to_vec()),
            &LABELS,
        )?;
        registry.register(Box::new(started.clone()))?;
        registry.register(Box::new(handled.clone()))?;
        registry.register(Box::new(seconds.clone()))?;
        let mut by_path = HashMap::with_capacity(methods.len());
        for m in methods {
            let labels = [m.kind, m.service.as_str(), m.method.as_str()];
            let counts: Vec<IntCounter> = GRPC_CODES
                .iter()
                .map(|code| {
                    handled.get_metric_with_label_values(&[labels[0], labels[1], labels[2], code])
                })
                .collect::<Result<_, _>>()?;
            let handled = counts
                .try_into()
                .map_err(|_| prometheus::Error::Msg("grpc codes miscounted".to_owned()))?;
            by_path.insert(
                format!("/{}/{}", m.service, m.method).into_boxed_str(),
                Arc::new(MethodMetrics {
                    started: started.get_metric_with_label_values(&labels)?,
                    handled,
                    seconds: seconds.get_metric_with_label_values(&labels)?,
                }),
            );
        }
        Ok(Self { methods: by_path })
    }

    /// Counts a call to `path` as started; `None` for a path that is no
    /// method served (it is not counted, so that made-up paths cannot
    /// grow the label sets).
    pub fn begin(&self, path: &str) -> Option<GrpcCall> {
        let method = self.methods.get(path)?;
        method.started.inc();
        Some(GrpcCall {
            began: Instant::now(),
            method: Some(method.clone()),
        })
    }
}

/// One call in progress: counted as handled, with its status code and
/// time, when [`GrpcCall::finish`]ed; as `Canceled` when dropped unfinished.
pub struct GrpcCall {
    began: Instant,
    method: Option<Arc<MethodMetrics>>,
}

impl GrpcCall {
    /// The call ended with status `code` (a gRPC code number; out of range
    /// counts as `Unknown`).
    pub fn finish(mut self, code: usize) {
        self.record(code);
    }

    fn record(&mut self, code: usize) {
        if let Some(method) = self.method.take() {
            let code = if code < GRPC_CODES.len() {
                code
            } else {
                UNKNOWN
            };
            method.handled[code].inc();
            method.seconds.observe(self.began.elapsed().as_secs_f64());
        }
    }
}

impl Drop for GrpcCall {
    fn drop(&mut self) {
        self.record(CANCELED);
    }
}

impl std::fmt::Debug for GrpcCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcCall").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new(&[GrpcMethod {
            service: "auth.v1.AuthService".into(),
            method: "Login".into(),
            kind: "unary",
        }])
        .unwrap()
    }

    fn handled(metrics: &Metrics, code: &str) -> String {
        let text = String::from_utf8(metrics.render().unwrap()).unwrap();
        let wanted = format!("grpc_code=\"{code}\",");
        text.lines()
            .find(|line| line.starts_with("grpc_server_handled_total") && line.contains(&wanted))
            .and_then(|line| line.rsplit_once(' '))
            .map(|(_, value)| value.to_owned())
            .unwrap()
    }

    #[test]
    fn a_call_is_counted_with_its_code_or_as_canceled_when_dropped() {
        let metrics = metrics();
        let grpc = metrics.grpc();
        grpc.begin("/auth.v1.AuthService/Login").unwrap().finish(16);
        drop(grpc.begin("/auth.v1.AuthService/Login").unwrap());
        grpc.begin("/auth.v1.AuthService/Login").unwrap().finish(99);
        assert_eq!(handled(&metrics, "Unauthenticated"), "1");
        assert_eq!(handled(&metrics, "Canceled"), "1");
        assert_eq!(handled(&metrics, "Unknown"), "1");
        assert_eq!(handled(&metrics, "OK"), "0");
        assert!(grpc.begin("/auth.v1.AuthService/Made.Up").is_none());
    }

    #[test]
    fn the_code_names_are_go_grpc_prometheus_ones_in_code_order() {
        assert_eq!(GRPC_CODES.len(), 17);
        assert_eq!(GRPC_CODES[CANCELED], "Canceled");
        assert_eq!(GRPC_CODES[UNKNOWN], "Unknown");
        assert_eq!(
            GRPC_CODES[tonic::Code::Unauthenticated as usize],
            "Unauthenticated"
        );
        assert_eq!(
            GRPC_CODES[tonic::Code::ResourceExhausted as usize],
            "ResourceExhausted"
        );
    }

    #[test]
    fn validation_reasons_are_the_protos() {
        for (index, reason) in [
            InvalidToken::Malformed,
            InvalidToken::BadSignature,
            InvalidToken::Expired,
            InvalidToken::NotYetValid,
            InvalidToken::Revoked,
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(
                VALIDATIONS[validation_series(&Ok(Validity::Invalid(reason)))],
                ("invalid", crate::grpc::reason_name(reason))
            );
            assert_eq!(validation_series(&Ok(Validity::Invalid(reason))), index + 1);
        }
        assert_eq!(
            VALIDATIONS[validation_series(&Err(AuthError::RevocationsStale))].1,
            crate::grpc::Reason::RevocationStateStale.as_str()
        );
    }
}
