//! authd-bench: drives a real authd (the release binary, started here) with
//! each scenario in turn and prints a table: requests/s, latency
//! percentiles, each scenario's ratio to the health check of the same run,
//! and the server's peak memory. Every answer is checked; one wrong answer
//! (a revoked token reported valid, say) fails the run.
//!
//! `cargo build --release && cargo run --release -p authd-bench -- --help`

mod drive;
mod hpack;
mod http;
mod lean;
mod local;
mod server;
mod watch;

use std::{
    collections::HashSet,
    fmt::Write as _,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use authd::{
    auth::{AccessTokens, HashCost, HashingPriority, PasswordCheck, Passwords},
    domain::{Password, SessionId, UserId},
    grpc::pb::{
        LoginRequest, LogoutRequest, RefreshRequest, TokenInvalidReason, ValidateTokenRequest,
        auth_service_client::AuthServiceClient,
    },
};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use drive::{Call, Measured, Outcome, closed_loop, open_loop};
use lean::{Calls, Lanes, framed};
use prost::Message as _;
use secrecy::ExposeSecret as _;
use server::{Server, Target};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

const PASSWORD: &str = "benchmark password";

/// How many turns health and validate-hot take each.
const ROUNDS: u32 = 5;

/// How many idle watchers the server holds in "validate-hot beside 1000
/// watchers".
const WATCHERS: usize = 1_000;

#[derive(Parser, Debug)]
#[command(name = "authd-bench", about = "Load-test authd and check every answer")]
struct Args {
    /// The storage backends to run on.
    #[arg(long, value_enum, default_value = "both")]
    backend: BackendChoice,
    /// The PostgreSQL server the run creates (and drops) its database on.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres: String,
    /// A PgBouncer in transaction mode in front of that server, for
    /// `--backend postgres-pgbouncer` (scripts/test starts one).
    #[arg(long, env = "AUTHD_PGBOUNCER_URL")]
    pgbouncer: Option<String>,
    /// The authd binary under test.
    #[arg(long, default_value = "target/release/authd")]
    authd: PathBuf,
    /// How long each scenario runs.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// HTTP/2 connections to the server.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Calls in flight on each connection.
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// Distinct live tokens of validate-hot.
    #[arg(long, default_value_t = 10_000)]
    hot_tokens: usize,
    /// Also measure with a million revocations: start-up time and memory
    /// with a million live ones, and purging a million expired ones under
    /// validate-hot (adds a few minutes).
    #[arg(long)]
    million: bool,
    /// The servers' `--hashing-priority`: low or idle.
    #[arg(long, default_value_t = HashingPriority::default())]
    hashing_priority: HashingPriority,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BackendChoice {
    Sqlite,
    Postgres,
    /// PostgreSQL through PgBouncer in transaction mode.
    PostgresPgbouncer,
    /// SQLite and PostgreSQL.
    Both,
    /// SQLite, PostgreSQL, and PostgreSQL through PgBouncer.
    All,
}

/// One line of the table.
struct Row {
    scenario: &'static str,
    measured: Measured,
    note: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.authd.exists() {
        bail!(
            "{} not found: build it first (cargo build --release)",
            args.authd.display()
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "authd-bench: {} connections x {} in flight, {:?} per scenario, {cores} cores; \
         servers at --hashing-priority {}",
        args.connections,
        args.in_flight,
        args.duration,
        args.hashing_priority.as_str()
    );
    let machine = machine_rates(cores).await?;
    println!("{machine}");

    let backends: &[&str] = match args.backend {
        BackendChoice::Sqlite => &["sqlite"],
        BackendChoice::Postgres => &["postgres"],
        BackendChoice::PostgresPgbouncer => &["postgres-pgbouncer"],
        BackendChoice::Both => &["sqlite", "postgres"],
        BackendChoice::All => &["sqlite", "postgres", "postgres-pgbouncer"],
    };
    let mut failed = false;
    for backend in backends {
        let dir =
            std::env::temp_dir().join(format!("authd-bench-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let mut storage_flags = Vec::new();
        let (database_url, direct_url, pg_name) = if *backend == "sqlite" {
            let url = format!("sqlite://{}", dir.join("authd.db").display());
            (url.clone(), url, None)
        } else {
            let name = format!("authd_bench_{}", uuid::Uuid::new_v4().simple());
            let direct = with_database(&args.postgres, &name)?;
            if *backend == "postgres-pgbouncer" {
                let pooler = args.pgbouncer.as_deref().context(
                    "--backend postgres-pgbouncer needs --pgbouncer (or AUTHD_PGBOUNCER_URL)",
                )?;
                storage_flags = vec![
                    "--database-pooler".to_owned(),
                    "transaction".to_owned(),
                    "--database-direct-url".to_owned(),
                    direct.clone(),
                ];
                (with_database(pooler, &name)?, direct, Some(name))
            } else {
                (direct.clone(), direct, Some(name))
            }
        };
        let target = Target {
            authd: args.authd.clone(),
            database_url,
            direct_url,
            storage_flags,
            data_dir: dir.clone(),
            hashing_priority: args.hashing_priority,
        };
        let result = run_backend(&args, &target, backend, cores).await;
        let _ = std::fs::remove_dir_all(&dir);
        if let Some(name) = pg_name {
            drop_database(&args.postgres, &name).await;
        }
        match result {
            Ok(table) => println!("{table}"),
            Err(err) => {
                failed = true;
                println!("\n## {backend}: FAILED\n{err:#}");
            }
        }
    }
    if failed {
        bail!("the benchmark found wrong answers or could not run");
    }
    Ok(())
}

/// What this machine does on one core, without authd around it.
async fn machine_rates(cores: usize) -> anyhow::Result<String> {
    use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};

    let pair = Ed25519KeyPair::generate()?;
    let message = [7u8; 300];
    let signature = pair.sign(&message);
    let public = UnparsedPublicKey::new(&ED25519, pair.public_key().as_ref().to_vec());
    let start = Instant::now();
    let mut verified = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        for _ in 0..100 {
            public
                .verify(&message, signature.as_ref())
                .map_err(|_| anyhow::anyhow!("Ed25519 verification failed"))?;
        }
        verified += 100;
    }
    let ed25519 = verified as f64 / start.elapsed().as_secs_f64();

    let argon2 = Argon2Rates::measure(cores).await?;
    Ok(format!(
        "machine: Ed25519 verify {ed25519:.0}/s on one core; argon2id verify {:.1} ms \
         (so Login capacity ~ {cores} cores / {:.1} ms = {:.0}/s); {cores} at once: {:.0}/s ({:.2} of that)",
        millis(argon2.one),
        millis(argon2.one),
        argon2.capacity(),
        argon2.all_cores,
        argon2.all_cores / argon2.capacity(),
    ))
}

/// The CPU the server's hashing threads use during a load: whether Logins
/// fell short of the capacity because the threads got less CPU, or because
/// each check cost more of it than one measured alone.
struct HashingUse<'a> {
    server: &'a Server,
    cpu_before: Duration,
    started: Instant,
}

impl<'a> HashingUse<'a> {
    fn start(server: &'a Server) -> anyhow::Result<Self> {
        Ok(Self {
            server,
            cpu_before: server.hashing_cpu()?,
            started: Instant::now(),
        })
    }

    /// The cores the hashing threads kept busy since `start`, and the
    /// server's own CPU per check for the Logins `login` served (every
    /// served Login ran one check; a shed one ran none).
    fn finish(&self, login: &Measured) -> anyhow::Result<(f64, Option<Duration>)> {
        let cpu = self.server.hashing_cpu()?.saturating_sub(self.cpu_before);
        let busy = cpu.as_secs_f64() / self.started.elapsed().as_secs_f64();
        let checks = u32::try_from(login.served.len()).unwrap_or(u32::MAX);
        Ok((busy, (checks > 0).then(|| cpu / checks)))
    }

    /// [`Self::finish`] as a note, beside `one`, a check measured alone.
    fn note(&self, login: &Measured, one: Duration) -> anyhow::Result<String> {
        let (busy, per_check) = self.finish(login)?;
        let per_check = per_check.map_or_else(
            || "no check served".to_owned(),
            |cpu| format!("{:.1} ms of CPU a check", millis(cpu)),
        );
        Ok(format!(
            "hashing threads busy {busy:.2} cores, {per_check} (alone {:.1} ms)",
            millis(one)
        ))
    }
}

/// One of the benchmark's targets, as this run measured it.
struct Goal {
    target: &'static str,
    measured: String,
    met: bool,
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// How fast this machine checks passwords at authd's cost, measured with
/// authd's own hashing threads.
struct Argon2Rates {
    cores: usize,
    /// One verification alone.
    one: Duration,
    /// Verifications per second with one per core at once: what the cores
    /// can do together when nothing else runs (they share caches and
    /// memory bandwidth, so it falls short of `cores / one`), from the
    /// time one check takes while the others run.
    all_cores: f64,
}

impl Argon2Rates {
    /// Checks one at a time and checks on every core at once take turns,
    /// five rounds, so that whatever else the machine does weighs on both
    /// alike. Each is the median of its checks' times.
    async fn measure(cores: usize) -> anyhow::Result<Self> {
        let password = Password::parse(PASSWORD)?;
        let alone = Passwords::new(HashCost::default(), 1, HashingPriority::default())?;
        let together = Passwords::new(HashCost::default(), cores, HashingPriority::default())?;
        let hash = alone.hash(&password).await?;
        // The first checks fill the threads' memory; not timed.
        check_all(&alone, 1, 1, &password, &hash).await?;
        check_all(&together, cores, cores, &password, &hash).await?;

        let (mut one, mut at_once) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            one.extend(check_all(&alone, 5, 1, &password, &hash).await?);
            at_once.extend(check_all(&together, 4 * cores, cores, &password, &hash).await?);
        }
        let median = |mut times: Vec<Duration>| {
            times.sort();
            times[times.len() / 2]
        };
        Ok(Self {
            cores,
            one: median(one),
            all_cores: cores as f64 / median(at_once).as_secs_f64(),
        })
    }

    /// The Login capacity the targets count from: `cores / one`.
    fn capacity(&self) -> f64 {
        self.cores as f64 / self.one.as_secs_f64()
    }
}

/// `count` checks of the right password, `in_flight` at a time (with one
/// hashing thread each, every check starts when sent); each must match.
/// The time each took.
async fn check_all(
    passwords: &Passwords,
    count: usize,
    in_flight: usize,
    password: &Password,
    hash: &str,
) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(count);
    let mut checks = tokio::task::JoinSet::new();
    for n in 0..count + in_flight {
        if n >= in_flight {
            let Some(check) = checks.join_next().await else {
                break;
            };
            let (check, took) = check?;
            match check? {
                PasswordCheck::Matches { .. } => times.push(took),
                PasswordCheck::Fails => bail!("the benchmark's password did not verify"),
            }
        }
        if n < count {
            let (passwords, password, hash) =
                (passwords.clone(), password.clone(), hash.to_owned());
            checks.spawn(async move {
                let start = Instant::now();
                let check = match passwords.queue_place(start) {
                    Ok(place) => passwords.verify(place, &password, Some(&hash)).await,
                    Err(overloaded) => Err(overloaded.into()),
                };
                (check, start.elapsed())
            });
        }
    }
    Ok(times)
}

async fn run_backend(
    args: &Args,
    target: &Target,
    backend: &str,
    cores: usize,
) -> anyhow::Result<String> {
    target
        .cli(&["user", "add", "bench", "--password-stdin"], PASSWORD)
        .await?;
    target
        .cli(
            &[
                "user",
                "add",
                watch::WATCHER,
                "--role",
                "authd:watch",
                "--password-stdin",
            ],
            PASSWORD,
        )
        .await?;
    // Three published keys, as during a rotation: a retired one, the active
    // one (which signs every token the bench mints), a pending one.
    target
        .cli(&["keys", "rotate", "--key-publish-lead", "0s"], "")
        .await?;
    target
        .cli(&["keys", "rotate", "--key-publish-lead", "30d"], "")
        .await?;
    let server = Server::start(target, &[]).await?;
    let mut channels = Vec::new();
    for _ in 0..args.connections {
        channels.push(server.channel().await?);
    }
    let channels = Arc::new(channels);
    let lanes = Lanes::new(server.addr, args.connections);
    let workers = args.connections * args.in_flight;
    let duration = args.duration;

    let login = AuthServiceClient::new(channels[0].clone())
        .login(LoginRequest {
            username: "bench".into(),
            password: PASSWORD.into(),
        })
        .await?
        .into_inner();
    let user = UserId::from(uuid::Uuid::parse_str(&login.user_id)?);
    let minter = Arc::new(target.minter().await?);
    let mut rows = Vec::new();

    // validate-hot: 10,000 live tokens, 1% of them logged out.
    let hot = Arc::new(mint(&minter, user, args.hot_tokens)?);
    let mut revoked = HashSet::new();
    let mut client = AuthServiceClient::new(channels[0].clone());
    for index in (0..hot.len()).step_by(100) {
        client
            .logout(LogoutRequest {
                access_token: hot[index].clone(),
                ..Default::default()
            })
            .await?;
        revoked.insert(index);
    }
    let revoked = Arc::new(revoked);

    // health (the framework's ceiling on this machine, in this run) and
    // validate-hot take turns, so that what else the machine does while
    // they run weighs on both alike.
    let hot_requests = Arc::new(validate_requests(&hot)?);
    let (health, validate_hot) = health_and_hot(
        &lanes,
        args.in_flight,
        duration,
        ROUNDS,
        HotCalls::shared(&hot_requests, &revoked, workers),
    )
    .await?;
    rows.push(Row {
        scenario: "health",
        measured: health,
        note: format!("taking turns with validate-hot, {ROUNDS} rounds"),
    });
    let hot_rate = validate_hot.rate();
    rows.push(Row {
        scenario: "validate-hot",
        measured: validate_hot,
        note: format!("{} tokens, {} revoked", hot.len(), revoked.len()),
    });
    // What the metrics cost: validate-hot's ratio to health on this
    // server and on one with --metrics off, the two taking turns, round
    // by round, so that both ratios see the same machine.
    let metrics_ratio = {
        let bare = Server::start(target, &["--metrics", "off"]).await?;
        let bare_lanes = Lanes::new(bare.addr, args.connections);
        let (mut on, mut off) = (
            (Measured::new(), Measured::new()),
            (Measured::new(), Measured::new()),
        );
        let turn = 2 * duration / ROUNDS;
        for _ in 0..ROUNDS {
            for (lanes, into) in [(&lanes, &mut on), (&bare_lanes, &mut off)] {
                let (health, hot) = health_and_hot(
                    lanes,
                    args.in_flight,
                    turn,
                    1,
                    HotCalls::shared(&hot_requests, &revoked, workers),
                )
                .await?;
                into.0.absorb(&health);
                into.1.absorb(&hot);
            }
        }
        bare.stop().await?;
        let ratio = |(health, hot): &(Measured, Measured)| hot.rate() / health.rate();
        let (on_ratio, off_ratio) = (ratio(&on), ratio(&off));
        let cost = on_ratio / off_ratio;
        rows.push(Row {
            scenario: "health, metrics off",
            note: format!("--metrics off, taking turns with validate-hot and with the server above, {ROUNDS} rounds"),
            measured: off.0,
        });
        rows.push(Row {
            scenario: "validate-hot, metrics off",
            note: format!(
                "metrics on: health {:.0}/s, validate-hot {:.0}/s; ratio to health on {on_ratio:.3}, \
                 off {off_ratio:.3}; on / off {cost:.3}",
                on.0.rate(),
                on.1.rate()
            ),
            measured: off.1,
        });
        cost
    };
    let half = lanes
        .open_loop(
            hot_rate / 2.0,
            duration,
            HotCalls::shared(&hot_requests, &revoked, 1),
        )
        .await;
    rows.push(Row {
        scenario: "validate-hot at half load",
        measured: half,
        note: format!("open loop, {:.0}/s offered", hot_rate / 2.0),
    });

    // ext-authz: Envoy's Check with the hot tokens, taking turns with
    // health as validate-hot does; then at half its rate, for the latency
    // a proxy sees inside its timeout.
    let check_requests = Arc::new(check_requests(&hot)?);
    let (health_beside, ext_authz) = lanes
        .alternating(
            args.in_flight,
            duration,
            ROUNDS,
            Arc::new(HealthCalls::new()?),
            CheckCalls::shared(&check_requests, &revoked, workers, &login.user_id),
        )
        .await;
    let check_rate = ext_authz.rate();
    let ext_authz_ratio = check_rate / health_beside.rate();
    rows.push(Row {
        scenario: "ext-authz",
        measured: ext_authz,
        note: format!(
            "Check as Envoy sends it, the validate-hot tokens; taking turns with health \
             ({:.0}/s in its turns): {ext_authz_ratio:.2} x",
            health_beside.rate()
        ),
    });
    let half = lanes
        .open_loop(
            check_rate / 2.0,
            duration,
            CheckCalls::shared(&check_requests, &revoked, 1, &login.user_id),
        )
        .await;
    rows.push(Row {
        scenario: "ext-authz at half load",
        measured: half,
        note: format!("open loop, {:.0}/s offered", check_rate / 2.0),
    });
    // forward-auth: what nginx, Traefik and Caddy send, over HTTP/1.1.
    let forward_auth = http::forward_auth_load(
        server.http,
        workers,
        duration,
        &hot,
        &revoked,
        &login.user_id,
    )
    .await?;
    rows.push(Row {
        scenario: "forward-auth",
        measured: forward_auth,
        note: format!(
            "HTTP/1.1 GET /auth/verify, {workers} keep-alive connections, the validate-hot tokens"
        ),
    });

    // jwks: HTTP GETs of the key set, as JWT libraries make them.
    let (jwks, kids) = http::jwks_load(server.http, workers, duration).await?;
    http::expect_keys(&kids, 3)?;
    rows.push(Row {
        scenario: "jwks",
        measured: jwks,
        note: format!(
            "HTTP/1.1 GET {}, {workers} keep-alive connections, {} keys",
            "/.well-known/jwks.json",
            kids.len()
        ),
    });

    // validate-cold: every token new to the server.
    let cold_count = ((hot_rate.max(1_000.0) * duration.as_secs_f64()) as usize).min(400_000);
    let cold = Arc::new(ColdCalls {
        requests: validate_requests(&mint(&minter, user, cold_count)?)?,
        next: AtomicUsize::new(0),
    });
    let validate_cold = lanes.closed_loop(args.in_flight, duration, cold).await;
    rows.push(Row {
        scenario: "validate-cold",
        measured: validate_cold,
        note: format!("{cold_count} single-use tokens"),
    });

    // login at twice the capacity, alone and beside validate-hot.
    let argon2 = Argon2Rates::measure(cores).await?;
    let capacity = argon2.capacity();
    let hashing = HashingUse::start(&server)?;
    let login = open_loop(2.0 * capacity, duration, login_call(&channels)).await;
    // The capacity the target counts from: the cores over what a check
    // cost the server itself in this scenario.
    let (_, per_check) = hashing.finish(&login)?;
    let run_capacity = per_check.map_or(0.0, |cpu| cores as f64 / cpu.as_secs_f64());
    let login_ratio = if run_capacity > 0.0 {
        login.rate() / run_capacity
    } else {
        0.0
    };
    rows.push(Row {
        scenario: "login (2x capacity)",
        note: format!(
            "offered {:.0}/s (2 x {cores} cores / {:.1} ms, a check timed alone); \
             capacity at the server's CPU per check {run_capacity:.0}/s, served/capacity \
             {login_ratio:.2}; {cores} checks at once, measured alone: {:.0}/s; shed {}; {}",
            2.0 * capacity,
            millis(argon2.one),
            argon2.all_cores,
            login.shed.len(),
            hashing.note(&login, argon2.one)?,
        ),
        measured: login,
    });
    let hashing = HashingUse::start(&server)?;
    let (mixed_validate, mixed_login) = tokio::join!(
        lanes.closed_loop(
            args.in_flight,
            duration,
            HotCalls::shared(&hot_requests, &revoked, workers),
        ),
        open_loop(2.0 * capacity, duration, login_call(&channels)),
    );
    rows.push(Row {
        scenario: "mixed: validate-hot",
        measured: mixed_validate,
        note: "beside a login flood at 2x capacity".into(),
    });
    rows.push(Row {
        scenario: "mixed: login",
        note: format!(
            "shed {}; {}",
            mixed_login.shed.len(),
            hashing.note(&mixed_login, argon2.one)?
        ),
        measured: mixed_login,
    });
    // The same isolation at the load of "validate-hot at half load": the
    // latency a service sees during a login flood when authd is not
    // saturated (a saturated closed loop's latency includes its own queue:
    // calls in flight over what CPU the flood leaves).
    let hashing = HashingUse::start(&server)?;
    let (half_validate, half_login) = tokio::join!(
        lanes.open_loop(
            hot_rate / 2.0,
            duration,
            HotCalls::shared(&hot_requests, &revoked, 1),
        ),
        open_loop(2.0 * capacity, duration, login_call(&channels)),
    );
    rows.push(Row {
        scenario: "mixed at half load: validate-hot",
        measured: half_validate,
        note: format!(
            "open loop, {:.0}/s offered, beside a login flood at 2x capacity",
            hot_rate / 2.0
        ),
    });
    rows.push(Row {
        scenario: "mixed at half load: login",
        note: format!(
            "shed {}; {}",
            half_login.shed.len(),
            hashing.note(&half_login, argon2.one)?
        ),
        measured: half_login,
    });

    // logout: revocations per second, then the lag until another instance
    // answers REVOKED.
    // Each token of a session of its own, as Logins issue them: a Logout
    // ends the session too.
    let sessions = target
        .sessions(user, (2_000.0 * duration.as_secs_f64()) as usize)
        .await?;
    let to_revoke = Arc::new(mint_in(&minter, user, sessions.iter().map(|(id, _)| *id))?);
    let next = Arc::new(AtomicUsize::new(0));
    let logout = closed_loop(workers, duration, logout_call(&channels, to_revoke, next)).await;
    rows.push(Row {
        scenario: "logout",
        note: String::new(),
        measured: logout,
    });
    // refresh: rotations per second, each of a session of its own.
    let to_refresh = Arc::new(
        target
            .sessions(user, (2_000.0 * duration.as_secs_f64()) as usize)
            .await?
            .into_iter()
            .map(|(_, token)| token)
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let refresh = closed_loop(workers, duration, refresh_call(&channels, to_refresh, next)).await;
    rows.push(Row {
        scenario: "refresh",
        note: "distinct sessions, each refreshed once; the new token is checked".into(),
        measured: refresh,
    });
    let second = Server::start(target, &[]).await?;
    let lag = logout_lag(&server, &second, &mint(&minter, user, 200)?).await?;
    rows.push(Row {
        scenario: "logout seen by a 2nd instance",
        note: "lag from Logout OK on one instance to REVOKED on the other".into(),
        measured: lag,
    });
    // WatchRevocations: a Logout on one instance heard by a watcher of the
    // other; then a thousand watchers held open on the first while
    // validate-hot runs beside health again.
    let watcher = watch::watcher_token(&server, PASSWORD).await?;
    let heard =
        watch::logout_to_watcher(&server, &second, &watcher, &mint(&minter, user, 200)?).await?;
    rows.push(Row {
        scenario: "logout heard by a watcher of a 2nd instance",
        note: "lag from Logout OK on one instance to the event on a WatchRevocations stream of the other".into(),
        measured: heard,
    });
    // In-process: a LocalValidator following the first instance, and one
    // following the second refusing Logouts made on the first.
    let live = mint(&minter, user, 1_024)?;
    let kid = jsonwebtoken::decode_header(&live[0])?.kid;
    let public_key = minter
        .published_keys()
        .into_iter()
        .find(|key| Some(&key.kid) == kid.as_ref())
        .context("the minter does not publish the key it signs with")?
        .x;
    let local = local::measure(
        &server,
        &second,
        PASSWORD,
        &live,
        &public_key,
        &mint(&minter, user, 200)?,
        duration,
    )
    .await?;
    let alone = {
        let rate = |name: &str| {
            rows.iter()
                .find(|r| r.scenario == name)
                .map_or(0.0, |r| r.measured.rate())
        };
        rate("validate-hot") / rate("health")
    };
    let (rss_before, _) = server.rss_kib();
    let mut watchers = watch::idle_watchers(&server, &watcher, WATCHERS).await?;
    let (rss_with, _) = server.rss_kib();
    let (health_beside, hot_beside) = health_and_hot(
        &lanes,
        args.in_flight,
        duration,
        ROUNDS,
        HotCalls::shared(&hot_requests, &revoked, workers),
    )
    .await?;
    let watchers_ended = watchers.try_join_next().is_some();
    watchers.abort_all();
    if watchers_ended {
        bail!("a watcher's stream ended while validate-hot ran");
    }
    let beside = hot_beside.rate() / health_beside.rate();
    let watchers_mib = rss_with.saturating_sub(rss_before) as f64 / 1024.0;
    rows.push(Row {
        scenario: "validate-hot beside 1000 watchers",
        note: format!(
            "{WATCHERS} WatchRevocations streams open: RSS {:.1} -> {:.1} MiB; ratio to health \
             {beside:.3} (taking turns, health {:.0}/s), {alone:.3} without them",
            rss_before as f64 / 1024.0,
            rss_with as f64 / 1024.0,
            health_beside.rate()
        ),
        measured: hot_beside,
    });
    let watchers_ratio = beside / alone;
    // Through the pooler without the direct URL, the catch-up alone.
    if target
        .storage_flags
        .iter()
        .any(|f| f == "--database-direct-url")
    {
        let pooled_only = Target {
            storage_flags: vec!["--database-pooler".to_owned(), "transaction".to_owned()],
            ..target.clone()
        };
        let third = Server::start(&pooled_only, &[]).await?;
        let lag = logout_lag(&server, &third, &mint(&minter, user, 50)?).await?;
        third.stop().await?;
        rows.push(Row {
            scenario: "logout seen by a 2nd instance, catch-up alone",
            note: "the other instance without --database-direct-url: no LISTEN".into(),
            measured: lag,
        });
    }

    let (_, peak) = server.rss_kib();
    second.stop().await?;
    server.stop().await?;
    let mut out = table(backend, &rows, peak);
    out.push('\n');
    out.push_str(&local.text);
    out.push_str(&goals(
        &rows,
        [
            login_ratio,
            ext_authz_ratio,
            metrics_ratio,
            watchers_mib,
            watchers_ratio,
            local.cached_rate,
            local.cold_ratio,
        ],
    ));
    // A wrong answer fails the run; so does a health or ValidateToken
    // scenario with no answer at all within its window (a stalled
    // connection would otherwise read as a rate of 0).
    let wrong = rows.iter().any(|r| !r.measured.wrong.is_empty());
    let silent: Vec<&str> = rows
        .iter()
        .filter(|r| {
            ["health", "validate", "ext-authz", "forward-auth"]
                .iter()
                .any(|name| r.scenario.contains(name))
        })
        .filter(|r| r.measured.rate() == 0.0)
        .map(|r| r.scenario)
        .collect();
    if wrong || !silent.is_empty() {
        bail!("{out}\nwrong answers, or no answers within the window from: {silent:?}");
    }
    if args.million {
        out.push_str(&million(args, target, backend, user, &minter).await?);
    }
    Ok(out)
}

const MILLION: u64 = 1_000_000;

/// A million live revocations: how long a server takes to start and how
/// much memory it holds; then a million expired ones purged by `authd
/// purge` while validate-hot runs.
async fn million(
    args: &Args,
    target: &Target,
    backend: &str,
    user: UserId,
    minter: &AccessTokens,
) -> anyhow::Result<String> {
    let workers = args.connections * args.in_flight;
    let hour = time::Duration::hours(1);
    let took = insert_revocations(
        target,
        backend,
        user,
        time::OffsetDateTime::now_utc() + hour,
    )
    .await?;
    let mut out = format!(
        "\n### {backend}: a million revocations\n\n- inserted {MILLION} live revocations in {took:.1?} (SQL, server stopped)\n"
    );

    let starting = Instant::now();
    let server = Server::start(target, &[]).await?;
    let startup = starting.elapsed();
    let (rss, _) = server.rss_kib();
    let _ = writeln!(
        out,
        "- start-up to SERVING with them: {startup:.2?}; RSS then {:.1} MiB",
        rss as f64 / 1024.0
    );
    let lanes = Lanes::new(server.addr, args.connections);
    let hot = Arc::new(validate_requests(&mint(minter, user, args.hot_tokens)?)?);
    let revoked = Arc::new(HashSet::new());
    let quiet = lanes
        .closed_loop(
            args.in_flight,
            args.duration,
            HotCalls::shared(&hot, &revoked, workers),
        )
        .await;
    let (rss, _) = server.rss_kib();
    let _ = writeln!(
        out,
        "- validate-hot holding them: {:.0}/s, p99 {:.2} ms; RSS {:.1} MiB",
        quiet.rate(),
        quiet.served.value_at_quantile(0.99) as f64 / 1000.0,
        rss as f64 / 1024.0
    );

    let took = insert_revocations(
        target,
        backend,
        user,
        time::OffsetDateTime::now_utc() - hour,
    )
    .await?;
    let _ = writeln!(
        out,
        "- inserted {MILLION} expired revocations in {took:.1?} (server running)"
    );
    let purging = Instant::now();
    let (during, purged) = tokio::join!(
        lanes.closed_loop(
            args.in_flight,
            args.duration,
            HotCalls::shared(&hot, &revoked, workers),
        ),
        async {
            let printed = target.cli(&["purge"], "").await;
            (printed, purging.elapsed())
        }
    );
    let (printed, purge_took) = purged;
    let rows: u64 = printed?
        .lines()
        .find_map(|line| line.strip_prefix("revocations: "))
        .context("authd purge printed no count of revocations")?
        .parse()
        .context("authd purge printed no count of revocations")?;
    let _ = writeln!(
        out,
        "- `authd purge` removed {rows} rows in {purge_took:.2?}: {:.0} rows/s",
        rows as f64 / purge_took.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "- validate-hot during the purge: {:.0}/s, p99 {:.2} ms (without: p99 {:.2} ms)",
        during.rate(),
        during.served.value_at_quantile(0.99) as f64 / 1000.0,
        quiet.served.value_at_quantile(0.99) as f64 / 1000.0
    );
    let wrong: Vec<&String> = quiet.wrong.iter().chain(&during.wrong).take(3).collect();
    server.stop().await?;
    if !wrong.is_empty() {
        bail!("{out}\nwrong answers with a million revocations, for example: {wrong:?}");
    }
    Ok(out)
}

/// Writes a million revocations of `user`, expiring at `expires_at`,
/// straight into the database.
async fn insert_revocations(
    target: &Target,
    backend: &str,
    user: UserId,
    expires_at: time::OffsetDateTime,
) -> anyhow::Result<Duration> {
    use sqlx::Connection as _;

    let started = Instant::now();
    if backend.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(&target.direct_url).await?;
        sqlx::query(
            "insert into revoked_tokens (jti, user_id, expires_at) \
             select gen_random_uuid(), $1, $2 from generate_series(1, $3)",
        )
        .bind(user.as_uuid())
        .bind(expires_at)
        .bind(MILLION as i64)
        .execute(&mut conn)
        .await?;
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&target.direct_url).await?;
        sqlx::query(
            "with recursive n(i) as (select 1 union all select i + 1 from n where i < $3) \
             insert into revoked_tokens (jti, user_id, expires_at, revoked_at) \
             select randomblob(16), $1, $2, unixepoch() from n",
        )
        .bind(user.as_uuid())
        .bind(expires_at.unix_timestamp())
        .bind(MILLION as i64)
        .execute(&mut conn)
        .await?;
    }
    Ok(started.elapsed())
}

fn mint(minter: &AccessTokens, user: UserId, count: usize) -> anyhow::Result<Vec<String>> {
    mint_in(minter, user, (0..count).map(|_| SessionId::generate()))
}

/// A token of `user` in each of `sessions`.
fn mint_in(
    minter: &AccessTokens,
    user: UserId,
    sessions: impl Iterator<Item = SessionId>,
) -> anyhow::Result<Vec<String>> {
    let now = jsonwebtoken::get_current_timestamp();
    sessions
        .map(|session| {
            Ok(minter
                .issue(user, session, "bench", &[], now)?
                .token
                .expose_secret()
                .to_owned())
        })
        .collect()
}

/// The part of a ValidateTokenResponse the benchmark checks. Decoding only
/// these two fields (prost skips the claims on the wire) keeps the load
/// generator's own cost per call down; the wire format is the service's.
#[derive(Clone, PartialEq, prost::Message)]
struct ValidateAnswer {
    #[prost(bool, tag = "1")]
    valid: bool,
    #[prost(int32, tag = "2")]
    reason: i32,
}

impl ValidateAnswer {
    fn reason(&self) -> TokenInvalidReason {
        TokenInvalidReason::try_from(self.reason).unwrap_or(TokenInvalidReason::Unspecified)
    }
}

/// Each token as a framed ValidateTokenRequest, encoded once, before
/// the load: the generator's cost per call is taken from the server's.
fn validate_requests(tokens: &[String]) -> anyhow::Result<Vec<Bytes>> {
    tokens
        .iter()
        .map(|token| {
            framed(
                &ValidateTokenRequest {
                    access_token: token.clone(),
                }
                .encode_to_vec(),
            )
        })
        .collect()
}

fn decode_validate(message: &[u8]) -> Result<ValidateAnswer, String> {
    ValidateAnswer::decode(message).map_err(|e| format!("ValidateToken: {e}"))
}

/// grpc.health.v1 Check of the whole server, expecting SERVING.
struct HealthCalls {
    request: Bytes,
}

impl HealthCalls {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            request: framed(&tonic_health::pb::HealthCheckRequest::default().encode_to_vec())?,
        })
    }
}

impl Calls for HealthCalls {
    fn path(&self) -> &'static str {
        "/grpc.health.v1.Health/Check"
    }

    fn request(&self, _: usize, _: u64) -> Option<(Bytes, usize)> {
        Some((self.request.clone(), 0))
    }

    fn check(&self, _: usize, message: &[u8]) -> Result<Outcome, String> {
        let status = tonic_health::pb::HealthCheckResponse::decode(message)
            .map_err(|e| format!("health: {e}"))?
            .status();
        if status == ServingStatus::Serving {
            Ok(Outcome::Served)
        } else {
            Err(format!("health: {status:?}"))
        }
    }
}

/// health and validate-hot (`hot`) taking turns on `lanes`, `rounds` turns
/// each and `duration` in all for each.
async fn health_and_hot(
    lanes: &Lanes,
    in_flight: usize,
    duration: Duration,
    rounds: u32,
    hot: Arc<dyn Calls>,
) -> anyhow::Result<(Measured, Measured)> {
    Ok(lanes
        .alternating(
            in_flight,
            duration,
            rounds,
            Arc::new(HealthCalls::new()?),
            hot,
        )
        .await)
}

/// ValidateToken over a pool of tokens, each worker striding through it;
/// the revoked ones must be reported REVOKED, the others valid.
struct HotCalls {
    requests: Arc<Vec<Bytes>>,
    revoked: Arc<HashSet<usize>>,
    workers: usize,
}

impl HotCalls {
    fn shared(
        requests: &Arc<Vec<Bytes>>,
        revoked: &Arc<HashSet<usize>>,
        workers: usize,
    ) -> Arc<dyn Calls> {
        Arc::new(Self {
            requests: requests.clone(),
            revoked: revoked.clone(),
            workers,
        })
    }
}

impl Calls for HotCalls {
    fn path(&self) -> &'static str {
        VALIDATE_TOKEN
    }

    fn request(&self, worker: usize, iteration: u64) -> Option<(Bytes, usize)> {
        let index = stride(worker, iteration, self.workers, self.requests.len());
        Some((self.requests[index].clone(), index))
    }

    fn check(&self, index: usize, message: &[u8]) -> Result<Outcome, String> {
        let answer = decode_validate(message)?;
        match (self.revoked.contains(&index), answer.valid, answer.reason()) {
            (false, true, _) => Ok(Outcome::Served),
            (true, false, TokenInvalidReason::Revoked) => Ok(Outcome::Served),
            (true, true, _) => Err(format!("token {index} is revoked but was reported valid")),
            (_, _, reason) => Err(format!("token {index}: unexpected answer {reason:?}")),
        }
    }
}

/// ValidateToken, each token of the pool once; every one must be valid.
struct ColdCalls {
    requests: Vec<Bytes>,
    next: AtomicUsize,
}

impl Calls for ColdCalls {
    fn path(&self) -> &'static str {
        VALIDATE_TOKEN
    }

    fn request(&self, _: usize, _: u64) -> Option<(Bytes, usize)> {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        Some((self.requests.get(index)?.clone(), index))
    }

    fn check(&self, index: usize, message: &[u8]) -> Result<Outcome, String> {
        let answer = decode_validate(message)?;
        if answer.valid {
            Ok(Outcome::Served)
        } else {
            Err(format!(
                "fresh token {index} reported {:?}",
                answer.reason()
            ))
        }
    }
}

const VALIDATE_TOKEN: &str = "/auth.v1.AuthService/ValidateToken";

/// The pool index of call `iteration` of `worker` among `workers`: each
/// worker strides through the pool, no two on the same token at once.
fn stride(worker: usize, iteration: u64, workers: usize, len: usize) -> usize {
    let iteration = iteration as usize;
    (worker + iteration * workers.max(1) + iteration) % len
}

/// Envoy's Check over a pool of tokens, each worker striding through it as
/// in [`HotCalls`]: the revoked ones must be denied with REVOKED, the
/// others allowed with the user's id in `x-authd-user-id`.
struct CheckCalls {
    requests: Arc<Vec<Bytes>>,
    revoked: Arc<HashSet<usize>>,
    workers: usize,
    user_id: String,
}

impl CheckCalls {
    fn shared(
        requests: &Arc<Vec<Bytes>>,
        revoked: &Arc<HashSet<usize>>,
        workers: usize,
        user_id: &str,
    ) -> Arc<dyn Calls> {
        Arc::new(Self {
            requests: requests.clone(),
            revoked: revoked.clone(),
            workers,
            user_id: user_id.to_owned(),
        })
    }
}

impl Calls for CheckCalls {
    fn path(&self) -> &'static str {
        "/envoy.service.auth.v3.Authorization/Check"
    }

    fn request(&self, worker: usize, iteration: u64) -> Option<(Bytes, usize)> {
        let index = stride(worker, iteration, self.workers, self.requests.len());
        Some((self.requests[index].clone(), index))
    }

    fn check(&self, index: usize, message: &[u8]) -> Result<Outcome, String> {
        let answer = CheckAnswer::decode(message).map_err(|e| format!("Check: {e}"))?;
        let code = answer.status.map_or(-1, |status| status.code);
        let vouched = answer.ok.as_ref().and_then(|ok| {
            ok.headers
                .iter()
                .filter_map(|option| option.header.as_ref())
                .find(|header| header.key == "x-authd-user-id")
                .map(|header| header.value.as_str())
        });
        let denied = answer.denied.map(|denied| denied.body).unwrap_or_default();
        match (self.revoked.contains(&index), code) {
            (false, 0) if vouched == Some(self.user_id.as_str()) => Ok(Outcome::Served),
            (true, 16) if denied.contains("\"REVOKED\"") => Ok(Outcome::Served),
            (true, 0) => Err(format!("Check: revoked token {index} allowed")),
            (_, code) => Err(format!("Check: token {index}: code {code}, {denied}")),
        }
    }
}

/// The parts of a CheckResponse the benchmark checks, as with
/// [`ValidateAnswer`]: the status, the denial's body, the headers set.
#[derive(Clone, PartialEq, prost::Message)]
struct CheckAnswer {
    #[prost(message, optional, tag = "1")]
    status: Option<CheckStatus>,
    #[prost(message, optional, tag = "2")]
    denied: Option<CheckDenied>,
    #[prost(message, optional, tag = "3")]
    ok: Option<CheckOk>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CheckStatus {
    #[prost(int32, tag = "1")]
    code: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CheckDenied {
    #[prost(string, tag = "3")]
    body: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CheckOk {
    #[prost(message, repeated, tag = "2")]
    headers: Vec<CheckHeaderOption>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CheckHeaderOption {
    #[prost(message, optional, tag = "1")]
    header: Option<CheckHeader>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CheckHeader {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

/// Each token in a framed CheckRequest with the attributes Envoy sends for
/// an ordinary GET (peer addresses, method, path, a handful of headers),
/// encoded once, before the load.
fn check_requests(tokens: &[String]) -> anyhow::Result<Vec<Bytes>> {
    use envoy_types::pb::envoy::{
        config::core::v3::{Address, SocketAddress, address, socket_address},
        service::auth::v3::{AttributeContext, CheckRequest, attribute_context},
    };
    let peer = |ip: &str, port| attribute_context::Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.to_owned(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }),
        ..Default::default()
    };
    tokens
        .iter()
        .enumerate()
        .map(|(n, token)| {
            let headers = [
                (":authority", "api.example.com".to_owned()),
                (":method", "GET".to_owned()),
                (":path", "/v1/items?page=2".to_owned()),
                (":scheme", "https".to_owned()),
                ("accept", "application/json".to_owned()),
                ("user-agent", "bench/1.0".to_owned()),
                ("x-forwarded-proto", "https".to_owned()),
                ("x-request-id", uuid::Uuid::new_v4().to_string()),
                ("authorization", format!("Bearer {token}")),
            ];
            let request = CheckRequest {
                attributes: Some(AttributeContext {
                    source: Some(peer("10.0.0.7", 40_000 + (n % 20_000) as u32)),
                    destination: Some(peer("10.0.0.2", 8443)),
                    request: Some(attribute_context::Request {
                        http: Some(attribute_context::HttpRequest {
                            id: n.to_string(),
                            method: "GET".into(),
                            path: "/v1/items?page=2".into(),
                            host: "api.example.com".into(),
                            scheme: "https".into(),
                            protocol: "HTTP/2".into(),
                            headers: headers
                                .into_iter()
                                .map(|(key, value)| (key.to_owned(), value))
                                .collect(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            };
            framed(&request.encode_to_vec())
        })
        .collect()
}

fn login_call(channels: &Arc<Vec<Channel>>) -> Call {
    let channels = channels.clone();
    Arc::new(move |_, iteration| {
        let mut client =
            AuthServiceClient::new(channels[iteration as usize % channels.len()].clone());
        Box::pin(async move {
            match client
                .login(LoginRequest {
                    username: "bench".into(),
                    password: PASSWORD.into(),
                })
                .await
            {
                Ok(answer) if !answer.get_ref().access_token.is_empty() => Ok(Outcome::Served),
                Ok(_) => Err("Login: OK without a token".into()),
                Err(status) if status.code() == tonic::Code::ResourceExhausted => Ok(Outcome::Shed),
                Err(status) => Err(format!("Login: {status}")),
            }
        })
    })
}

fn logout_call(
    channels: &Arc<Vec<Channel>>,
    tokens: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
) -> Call {
    let channels = channels.clone();
    Arc::new(move |worker, _| {
        let mut client = AuthServiceClient::new(channels[worker % channels.len()].clone());
        let token = tokens.get(next.fetch_add(1, Ordering::Relaxed)).cloned();
        Box::pin(async move {
            let Some(token) = token else {
                return Ok(Outcome::Exhausted);
            };
            client
                .logout(LogoutRequest {
                    access_token: token,
                    ..Default::default()
                })
                .await
                .map_err(|s| format!("Logout: {s}"))?;
            Ok(Outcome::Served)
        })
    })
}

fn refresh_call(
    channels: &Arc<Vec<Channel>>,
    tokens: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
) -> Call {
    let channels = channels.clone();
    Arc::new(move |worker, _| {
        let mut client = AuthServiceClient::new(channels[worker % channels.len()].clone());
        let token = tokens.get(next.fetch_add(1, Ordering::Relaxed)).cloned();
        Box::pin(async move {
            let Some(token) = token else {
                return Ok(Outcome::Exhausted);
            };
            let answer = client
                .refresh(RefreshRequest {
                    refresh_token: token.clone(),
                })
                .await
                .map_err(|s| format!("Refresh: {s}"))?
                .into_inner();
            // A rotation: a new refresh token, and an access token of the
            // same session.
            if answer.refresh_token.is_empty()
                || answer.refresh_token == token
                || answer.access_token.is_empty()
                || answer.session_id.is_empty()
            {
                return Err("Refresh: OK without a new refresh token and access token".into());
            }
            Ok(Outcome::Served)
        })
    })
}

/// For each token: Logout on `first`, then ValidateToken on `second` until
/// it says REVOKED; the histogram holds the time between.
async fn logout_lag(
    first: &Server,
    second: &Server,
    tokens: &[String],
) -> anyhow::Result<Measured> {
    let mut on_first = AuthServiceClient::new(first.channel().await?);
    let mut on_second = AuthServiceClient::new(second.channel().await?);
    let mut measured = Measured::new();
    let start = Instant::now();
    for token in tokens {
        let request = || ValidateTokenRequest {
            access_token: token.clone(),
        };
        if !on_second
            .validate_token(request())
            .await?
            .into_inner()
            .valid
        {
            bail!("a fresh token is not valid on the second instance");
        }
        on_first
            .logout(LogoutRequest {
                access_token: token.clone(),
                ..Default::default()
            })
            .await?;
        let revoked_at = Instant::now();
        loop {
            let answer = on_second.validate_token(request()).await?.into_inner();
            if answer.reason() == TokenInvalidReason::Revoked {
                break;
            }
            if !answer.valid {
                bail!("unexpected answer {:?}", answer.reason());
            }
            if revoked_at.elapsed() > Duration::from_secs(30) {
                bail!("the second instance never saw the revocation");
            }
        }
        measured.record_lag(revoked_at.elapsed());
    }
    measured.window = start.elapsed();
    Ok(measured)
}

fn table(backend: &str, rows: &[Row], peak_rss_kib: u64) -> String {
    let health = rows
        .iter()
        .find(|r| r.scenario == "health")
        .map_or(1.0, |r| r.measured.rate());
    let mut out = format!(
        "\n## {backend}\n\n| scenario | served/s | p50 ms | p99 ms | p99.9 ms | vs health | notes |\n|---|---:|---:|---:|---:|---:|---|\n"
    );
    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    for row in rows {
        let m = &row.measured;
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            row.scenario,
            m.rate(),
            ms(&m.served, 0.5),
            ms(&m.served, 0.99),
            ms(&m.served, 0.999),
            m.rate() / health,
            row.note
        );
    }
    let _ = writeln!(
        out,
        "\nserver peak RSS: {:.1} MiB",
        peak_rss_kib as f64 / 1024.0
    );
    let wrong: Vec<&String> = rows.iter().flat_map(|r| &r.measured.wrong).collect();
    if !wrong.is_empty() {
        let _ = writeln!(out, "\nWRONG ANSWERS:");
        for w in wrong {
            let _ = writeln!(out, "- {w}");
        }
    }
    out
}

/// The targets, met or missed in this run.
/// The targets, given what was measured apart from the rows: login's
/// served over capacity, ext-authz's ratio to health, validate-hot's ratio
/// to health with metrics on over the same with metrics off, the memory of
/// a thousand watchers (MiB), and validate-hot's ratio beside them over
/// the same without.
fn goals(
    rows: &[Row],
    [
        login_ratio,
        ext_authz_ratio,
        metrics_ratio,
        watchers_mib,
        watchers_ratio,
        local_cached,
        local_cold,
    ]: [f64; 7],
) -> String {
    let find = |name: &str| {
        rows.iter()
            .find(|r| r.scenario == name)
            .map(|r| &r.measured)
    };
    let p99 = |name: &str| {
        find(name).map_or(f64::NAN, |m| {
            m.served.value_at_quantile(0.99) as f64 / 1000.0
        })
    };
    let rate = |name: &str| find(name).map_or(0.0, Measured::rate);
    let hot = rate("validate-hot") / rate("health");
    let jwks = rate("jwks");
    let alone = p99("validate-hot at half load");
    let flood = p99("mixed at half load: validate-hot");
    let lag = p99("logout seen by a 2nd instance");
    let heard = p99("logout heard by a watcher of a 2nd instance");
    let refresh = rate("refresh") / rate("logout");
    let check_half = p99("ext-authz at half load");
    let goals = [
        Goal {
            target: "validate-hot (three published keys) >= 0.85 x health",
            measured: format!("{hot:.2}"),
            met: hot >= 0.85,
        },
        Goal {
            target: "metrics cost: validate-hot / health with metrics on >= 0.97 x the same off",
            measured: format!("{metrics_ratio:.3}"),
            met: metrics_ratio >= 0.97,
        },
        Goal {
            target: "ext-authz Check >= 0.8 x health (taking turns)",
            measured: format!("{ext_authz_ratio:.2}"),
            met: ext_authz_ratio >= 0.8,
        },
        Goal {
            target: "ext-authz p99 <= 1 ms at half load",
            measured: format!("{check_half:.2} ms"),
            met: check_half <= 1.0,
        },
        Goal {
            target: "forward-auth answered (HTTP GETs per second, every answer checked)",
            measured: format!("{:.0}/s", rate("forward-auth")),
            met: rate("forward-auth") > 0.0,
        },
        Goal {
            target: "jwks answered (HTTP GETs per second, every body checked)",
            measured: format!("{jwks:.0}/s"),
            met: jwks > 0.0,
        },
        Goal {
            target: "validate-hot p99 <= 2 ms at half load",
            measured: format!("{alone:.2} ms"),
            met: alone <= 2.0,
        },
        Goal {
            target: "validate-hot p99 beside the login flood <= 1.5 x alone (half load)",
            measured: format!("{flood:.2} / {alone:.2} ms = {:.2}", flood / alone),
            met: flood <= 1.5 * alone,
        },
        Goal {
            target: "login served >= 0.85 x cores / the server's CPU per check",
            measured: format!("{login_ratio:.2}"),
            met: login_ratio >= 0.85,
        },
        Goal {
            target: "refresh >= 0.5 x logout (requests per second)",
            measured: format!(
                "{:.0}/s / {:.0}/s = {refresh:.2}",
                rate("refresh"),
                rate("logout")
            ),
            met: refresh >= 0.5,
        },
        Goal {
            target: "Logout seen by another instance within 50 ms p99",
            measured: format!("{lag:.2} ms"),
            met: lag <= 50.0,
        },
        Goal {
            target: "Logout heard by a watcher of another instance within 50 ms p99",
            measured: format!("{heard:.2} ms"),
            met: heard <= 50.0,
        },
        Goal {
            target: "1000 watchers < 100 MB of server RSS",
            measured: format!("{watchers_mib:.1} MiB"),
            met: watchers_mib * 1.048_576 < 100.0,
        },
        Goal {
            target: "validate-hot / health beside 1000 watchers >= 0.95 x without",
            measured: format!("{watchers_ratio:.3}"),
            met: watchers_ratio >= 0.95,
        },
        Goal {
            target: "LocalValidator, a cached token, one task >= 1,000,000/s",
            measured: format!("{local_cached:.0}/s"),
            met: local_cached >= 1_000_000.0,
        },
        Goal {
            target: "LocalValidator, uncached >= 0.8 x raw Ed25519 verification",
            measured: format!("{local_cold:.2}"),
            met: local_cold >= 0.8,
        },
    ];
    let mut out = "\n| target | this run | met |\n|---|---|---|\n".to_owned();
    for goal in goals {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            goal.target,
            goal.measured,
            if goal.met { "met" } else { "missed" }
        );
    }
    out
}

/// `server` (a postgres:// URL) with its database replaced by `name`.
fn with_database(server: &str, name: &str) -> anyhow::Result<String> {
    let mut url = server.to_owned();
    let cut = url
        .rfind('/')
        .context("the PostgreSQL URL names no database")?;
    url.truncate(cut + 1);
    url.push_str(name);
    Ok(url)
}

async fn drop_database(server: &str, name: &str) {
    use sqlx::Connection as _;
    if let Ok(mut conn) = sqlx::PgConnection::connect(server).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "drop database if exists \"{name}\" with (force)"
        )))
        .execute(&mut conn)
        .await;
    }
}
