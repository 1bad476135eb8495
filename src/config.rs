//! The command line: subcommands and flags, each flag with its environment
//! variable. Parsed values are turned into the settings the rest uses.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::{Args, Parser, Subcommand};
use secrecy::{ExposeSecret as _, SecretString};

use crate::{
    auth::{
        HashingPriority, KeyFiles, PasswordPolicy, SessionSettings, ThrottleMode, ThrottleSettings,
        TokenSettings,
    },
    domain::Role,
    grpc::{TrustedProxies, WatchSettings},
    http::HttpSettings,
    jobs::{key_rotation::RotationSettings, purge::PurgeSettings},
    startup::{ServeSettings, default_publish_lead},
    store::{DatabasePooler, DatabaseSettings, DatabaseUrl},
    telemetry::LogFormat,
    tls::TlsSettings,
};

/// authd: a gRPC authentication service. Login issues signed JWT access
/// tokens, Logout revokes them, ValidateToken checks them.
#[derive(Debug, Parser)]
#[command(
    name = "authd",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The flags of `serve`, for `authd` without a subcommand.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the gRPC API (the default).
    Serve(Box<ServeArgs>),
    /// Apply pending database migrations and exit.
    Migrate(StorageArgs),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Run one purge pass (expired revocations, deleted users, old failed
    /// Logins, keys past their tokens' lifetime), print what it deleted,
    /// and exit.
    Purge(PurgeArgs),
    /// Manage the signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// The key subcommands; each takes the storage flags after its name.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List the signing keys: id, state, and when each was made, starts
    /// and stops signing.
    List(KeysListArgs),
    /// Schedule a new signing key: published at once, signing after
    /// --key-publish-lead, when the active key retires.
    Rotate(KeysRotateArgs),
    /// Revoke a signing key: unpublished at once, and every token it signed
    /// stops validating on every instance.
    Revoke(KeysRevokeArgs),
}

/// `authd keys list`.
#[derive(Debug, Args)]
pub struct KeysListArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub storage: StorageArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub lifetimes: LifetimeArgs,
}

/// `authd keys rotate`.
#[derive(Debug, Args)]
pub struct KeysRotateArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub key_set: KeySetArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub publishing: PublishingArgs,
}

/// `authd keys revoke`.
#[derive(Debug, Args)]
pub struct KeysRevokeArgs {
    /// The id of the key (its `kid`, as `authd keys list` prints it).
    /// A base64url thumbprint may begin with `-`: it is still the id.
    #[arg(allow_hyphen_values = true)]
    pub kid: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub key_set: KeySetArgs,
}

/// Where the key set of `rotate` and `revoke` lives, and how long its
/// retired keys are kept.
#[derive(Debug, Args)]
pub struct KeySetArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub storage: StorageArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub key_files: KeyFileArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub lifetimes: LifetimeArgs,
}

/// The files of the signing keys' material.
#[derive(Debug, Args)]
pub struct KeyFileArgs {
    /// The key-encryption key that seals the signing keys kept in the
    /// database (32 bytes, base64); generated with mode 0600 on first start
    /// when missing. Instances sharing a database must share it. Default:
    /// <data-dir>/key-encryption-key.
    #[arg(long, env = "AUTHD_KEY_ENCRYPTION_KEY_FILE")]
    pub key_encryption_key_file: Option<PathBuf>,
    /// An Ed25519 private key (PKCS#8 PEM) that signed tokens before the
    /// keys were kept in the database: when the database holds no key yet,
    /// it becomes the active one, with its `kid`, so those tokens stay
    /// valid. Not read once the database holds keys. Default:
    /// <data-dir>/signing-key.pem.
    #[arg(long, env = "AUTHD_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
}

impl KeyFileArgs {
    /// The files, with the defaults in `data_dir`.
    pub fn files(&self, data_dir: &Path) -> KeyFiles {
        KeyFiles {
            encryption_key_file: self
                .key_encryption_key_file
                .clone()
                .unwrap_or_else(|| data_dir.join(ServeSettings::KEY_ENCRYPTION_KEY_FILE)),
            signing_key_file: self
                .signing_key_file
                .clone()
                .unwrap_or_else(|| data_dir.join(ServeSettings::SIGNING_KEY_FILE)),
        }
    }
}

/// How keys are published: how long clients cache the set, and how long a
/// new key is published before it signs.
#[derive(Debug, Args)]
pub struct PublishingArgs {
    /// How long clients may cache the JWKS: its `Cache-Control: max-age`.
    #[arg(long, env = "AUTHD_JWKS_MAX_AGE", value_parser = positive_duration,
          default_value_t = HttpSettings::DEFAULT_JWKS_MAX_AGE.into())]
    pub jwks_max_age: humantime::Duration,
    /// How long a new signing key is published before it signs, so that
    /// clients caching the JWKS know it by then. Default: twice
    /// --jwks-max-age.
    #[arg(long, env = "AUTHD_KEY_PUBLISH_LEAD", value_parser = duration)]
    pub key_publish_lead: Option<humantime::Duration>,
}

impl PublishingArgs {
    /// The lead these flags set.
    pub fn publish_lead(&self) -> Duration {
        self.key_publish_lead
            .map_or_else(|| default_publish_lead(*self.jwks_max_age), |lead| *lead)
    }
}

/// A value, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrOff<T>(pub Option<T>);

impl<T: std::str::FromStr> std::str::FromStr for OrOff<T>
where
    T::Err: std::fmt::Display,
{
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        if raw.eq_ignore_ascii_case("off") {
            return Ok(Self(None));
        }
        raw.parse()
            .map(|value| Self(Some(value)))
            .map_err(|err| format!("{err} (or `off`)"))
    }
}

impl<T: std::fmt::Display> std::fmt::Display for OrOff<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(value) => value.fmt(f),
            None => f.write_str("off"),
        }
    }
}

/// Where local state lives unless `--data-dir` says otherwise.
const DEFAULT_DATA_DIR: &str = "./authd-data";

/// Where the data lives.
#[derive(Debug, Args)]
pub struct StorageArgs {
    /// The database: postgres://USER@HOST:PORT/DB (created when missing and
    /// the server allows it) or sqlite://PATH. Default: the SQLite file
    /// <data-dir>/authd.db, created on first use.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = parse_database_url)]
    pub database_url: Option<DatabaseUrl>,
    /// Directory for local state: the key-encryption key, and the SQLite
    /// database when no --database-url is given.
    #[arg(long, env = "AUTHD_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// What sits between authd and PostgreSQL: `none`, or `transaction`
    /// for a pooler in transaction mode (PgBouncer's `pool_mode =
    /// transaction`), through which authd then keeps no session state.
    #[arg(long, env = "AUTHD_DATABASE_POOLER", default_value_t = DatabasePooler::None)]
    pub database_pooler: DatabasePooler,
    /// PostgreSQL itself, past the pooler (postgres://…): migrations and the
    /// LISTEN for revocations go there. Without it, behind a transaction
    /// pooler, other instances' revocations arrive by the catch-up alone
    /// (about a second).
    #[arg(long, env = "AUTHD_DATABASE_DIRECT_URL", hide_env_values = true,
          value_parser = parse_direct_url)]
    pub database_direct_url: Option<SecretString>,
}

/// Flags of `authd serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "AUTHD_LISTEN", default_value_t = ServeSettings::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub storage: StorageArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub key_files: KeyFileArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub publishing: PublishingArgs,
    /// How long a signing key signs before the next one is scheduled, by
    /// whichever instance checks first; `off`: only `authd keys rotate`
    /// rotates.
    #[arg(long, env = "AUTHD_KEY_ROTATION_INTERVAL", default_value = "90d",
          value_parser = interval_or_off)]
    pub key_rotation_interval: OrOff<humantime::Duration>,
    /// Address of the HTTP listener (JWKS, server metadata, forward-auth,
    /// /healthz, /readyz, /metrics); HTTPS with --tls-cert. `off` to
    /// disable.
    #[arg(long, env = "AUTHD_HTTP_LISTEN",
          default_value_t = OrOff(HttpSettings::default().listen))]
    pub http_listen: OrOff<SocketAddr>,
    /// The URL clients reach the HTTP listener at, the base of the
    /// metadata's `jwks_uri` (behind a proxy, say). Default: http:// (or
    /// https://) and the listener's address.
    #[arg(long, env = "AUTHD_PUBLIC_URL", value_parser = public_url)]
    pub public_url: Option<String>,
    /// The `iss` claim written into and required of tokens.
    #[arg(long, env = "AUTHD_ISSUER", default_value_t = TokenSettings::default().issuer,
          value_parser = non_empty)]
    pub issuer: String,
    /// The `aud` claim written into and required of tokens.
    #[arg(long, env = "AUTHD_AUDIENCE", default_value_t = TokenSettings::default().audience,
          value_parser = non_empty)]
    pub audience: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub lifetimes: LifetimeArgs,
    /// A session ends when its refresh token goes unused this long.
    #[arg(long, env = "AUTHD_REFRESH_TOKEN_TTL", value_parser = positive_duration,
          default_value_t = SessionSettings::default().refresh_ttl.into())]
    pub refresh_token_ttl: humantime::Duration,
    /// A session ends this long after its Login, however often refreshed.
    #[arg(long, env = "AUTHD_SESSION_MAX_AGE", value_parser = positive_duration,
          default_value_t = SessionSettings::default().max_age.into())]
    pub session_max_age: humantime::Duration,
    /// How long the refresh token replaced last is still taken, answered
    /// with the same new one (two tabs, a retried call); after it, its use
    /// ends the session as a theft. `0s`: never.
    #[arg(long, env = "AUTHD_REFRESH_REUSE_GRACE", value_parser = reuse_grace,
          default_value_t = SessionSettings::default().reuse_grace.into())]
    pub refresh_reuse_grace: humantime::Duration,
    /// Time between purges of expired revocations.
    #[arg(long, env = "AUTHD_PURGE_INTERVAL", value_parser = positive_duration,
          default_value_t = PurgeSettings::DEFAULT_INTERVAL.into())]
    pub purge_interval: humantime::Duration,
    /// Rows deleted per purge statement.
    #[arg(long, env = "AUTHD_PURGE_BATCH_SIZE", default_value_t = PurgeSettings::DEFAULT_BATCH_SIZE,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub purge_batch_size: u32,
    /// How long authd keeps serving after SIGTERM, with health (gRPC and
    /// /readyz) NOT_SERVING, before it closes its listeners: load balancers
    /// stop sending in that time, and no call is refused.
    #[arg(long, env = "AUTHD_SHUTDOWN_DELAY", value_parser = duration,
          default_value_t = ServeSettings::DEFAULT_SHUTDOWN_DELAY.into())]
    pub shutdown_delay: humantime::Duration,
    /// How long shutdown waits for calls in flight before dropping them.
    #[arg(long, env = "AUTHD_SHUTDOWN_GRACE_PERIOD", value_parser = duration,
          default_value_t = ServeSettings::DEFAULT_SHUTDOWN_GRACE_PERIOD.into())]
    pub shutdown_grace_period: humantime::Duration,
    /// How long one call may run before it is cancelled (CANCELLED).
    #[arg(long, env = "AUTHD_REQUEST_TIMEOUT", value_parser = positive_duration,
          default_value_t = ServeSettings::DEFAULT_REQUEST_TIMEOUT.into())]
    pub request_timeout: humantime::Duration,
    /// Memory for verified tokens, which then skip the signature check on
    /// their next ValidateToken (revocation is checked on every call); 0
    /// turns the cache off.
    #[arg(long, env = "AUTHD_TOKEN_CACHE_MIB",
          default_value_t = ServeSettings::DEFAULT_TOKEN_CACHE_BYTES >> 20)]
    pub token_cache_mib: u64,
    /// Throttling of failed Logins: `username` counts failures per username
    /// (one user's typos or attacker never refuse another user), `on` per
    /// username and per client address (see --trusted-proxies), `off` not
    /// at all.
    #[arg(long, env = "AUTHD_LOGIN_THROTTLE", default_value_t = ThrottleSettings::default().mode)]
    pub login_throttle: ThrottleMode,
    /// Proxies (addresses or CIDR networks, comma-separated) whose
    /// `x-forwarded-for` names the client: a Login through one is counted
    /// and its session recorded under the rightmost forwarded address that
    /// is not itself a trusted proxy. Empty: the peer's address, always.
    #[arg(
        long,
        env = "AUTHD_TRUSTED_PROXIES",
        default_value = "",
        hide_default_value = true
    )]
    pub trusted_proxies: TrustedProxies,
    /// Failed Logins allowed per username (and per address) before the
    /// back-off starts; each further failure doubles it.
    #[arg(long, env = "AUTHD_LOGIN_THROTTLE_FAILURES",
          default_value_t = ThrottleSettings::default().free_failures,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub login_throttle_failures: u32,
    /// The role an access token must carry to call AdminService.
    #[arg(long, env = "AUTHD_ADMIN_ROLE", default_value = ServeSettings::DEFAULT_ADMIN_ROLE)]
    pub admin_role: Role,
    /// The role an access token must carry to call WatchRevocations (a
    /// verified client certificate is enough under mutual TLS).
    #[arg(long, env = "AUTHD_WATCH_ROLE", default_value = WatchSettings::DEFAULT_ROLE)]
    pub watch_role: Role,
    /// Time between WatchRevocations' heartbeats, at most: a watcher may
    /// ask for them more often, down to once a second.
    #[arg(long, env = "AUTHD_WATCH_HEARTBEAT", value_parser = positive_duration,
          default_value_t = WatchSettings::DEFAULT_HEARTBEAT.into())]
    pub watch_heartbeat: humantime::Duration,
    /// The fewest characters a password set through AdminService may have.
    #[arg(long, env = "AUTHD_MIN_PASSWORD_LENGTH",
          default_value_t = PasswordPolicy::default().min_chars)]
    pub min_password_length: usize,
    /// AuthService and ext_authz Check calls in flight at most, over all
    /// connections; more are refused at once with RESOURCE_EXHAUSTED (a 503
    /// refusal for Check; health checks are not counted).
    #[arg(long, env = "AUTHD_MAX_CALLS_IN_FLIGHT",
          default_value_t = ServeSettings::DEFAULT_MAX_CALLS_IN_FLIGHT as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_calls_in_flight: u32,
    /// Serve TLS with this certificate chain (PEM, leaf first); needs
    /// --tls-key.
    #[arg(long, env = "AUTHD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM); must not be readable by others.
    #[arg(long, env = "AUTHD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(long, env = "AUTHD_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// How often the certificate and key files are checked for a change,
    /// to be read again (as on SIGHUP); `off`: on SIGHUP only.
    #[arg(long, env = "AUTHD_TLS_WATCH_INTERVAL", value_parser = interval_or_off,
          default_value_t = OrOff(Some(TlsSettings::DEFAULT_WATCH_INTERVAL.into())))]
    pub tls_watch_interval: OrOff<humantime::Duration>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub max_backoff: MaxBackoffArgs,
    /// How password hashing shares the CPU with the calls it serves: `low`
    /// (nice 10: Logins keep a share of a CPU that ValidateToken
    /// saturates) or `idle` (SCHED_IDLE: hashing only uses CPU nothing
    /// else of the service wants, so ValidateToken never waits behind it,
    /// and Logins all but stop while ValidateToken saturates the CPU).
    #[arg(long, env = "AUTHD_HASHING_PRIORITY", default_value_t = HashingPriority::default())]
    pub hashing_priority: HashingPriority,
    /// Prometheus metrics at /metrics on the HTTP listener, and the
    /// counting behind them: `on` or `off`.
    #[arg(long, env = "AUTHD_METRICS", default_value = "on", value_parser = on_or_off,
          action = clap::ArgAction::Set)]
    pub metrics: bool,
    /// How log lines are written: `text`, or `json` (one object per line).
    #[arg(long, env = "AUTHD_LOG_FORMAT", default_value_t = LogFormat::default())]
    pub log_format: LogFormat,
}

/// How long tokens live: what `serve` issues, and what the purge must keep
/// deleted users for.
#[derive(Debug, Args)]
pub struct LifetimeArgs {
    /// Lifetime of access tokens (humantime: 90s, 15m, 1h).
    #[arg(long, env = "AUTHD_ACCESS_TOKEN_TTL", value_parser = positive_duration,
          default_value_t = TokenSettings::default().ttl.into())]
    pub access_token_ttl: humantime::Duration,
    /// Clock skew forgiven when checking `exp` and `iat`.
    #[arg(long, env = "AUTHD_LEEWAY", value_parser = leeway,
          default_value_t = TokenSettings::default().leeway.into())]
    pub leeway: humantime::Duration,
}

/// The longest back-off: what `serve` throttles with, and how long the purge
/// keeps failed Logins.
#[derive(Debug, Args)]
pub struct MaxBackoffArgs {
    /// The longest back-off after failed Logins.
    #[arg(long, env = "AUTHD_LOGIN_THROTTLE_MAX_BACKOFF", value_parser = positive_duration,
          default_value_t = ThrottleSettings::default().max_backoff.into())]
    pub login_throttle_max_backoff: humantime::Duration,
}

impl LifetimeArgs {
    /// The token settings with these lifetimes and the given claims.
    fn tokens(&self, issuer: &str, audience: &str) -> TokenSettings {
        TokenSettings {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl: *self.access_token_ttl,
            leeway: *self.leeway,
        }
    }
}

/// The user subcommands; each takes the storage flags after its name.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user. Prompts for the password twice on a terminal.
    Add(AddUserArgs),
    /// Set a user's password; revokes every token issued before.
    Passwd(PasswdArgs),
    /// Disable a user: no more logins, and its tokens are revoked.
    Disable(NamedUserArgs),
    /// Enable a disabled user; tokens revoked by the disabling stay revoked.
    Enable(NamedUserArgs),
    /// Delete a user; its tokens are revoked.
    Delete(NamedUserArgs),
    /// List a user's live sessions, newest first.
    Sessions(NamedUserArgs),
    /// End every session of a user and revoke every token issued to it.
    Logout(NamedUserArgs),
    /// List the users.
    List(ListUsersArgs),
}

impl UserCommand {
    /// The password policy given to `add` or `passwd`; the default for the
    /// others, which set no password.
    pub fn password_policy(&self) -> PasswordPolicy {
        match self {
            Self::Add(args) => args.password.policy(),
            Self::Passwd(args) => args.password.policy(),
            _ => PasswordPolicy::default(),
        }
    }

    /// The storage flags given to whichever subcommand this is.
    pub fn storage(&self) -> &StorageArgs {
        match self {
            Self::Add(args) => &args.storage,
            Self::Passwd(args) => &args.storage,
            Self::Disable(args)
            | Self::Enable(args)
            | Self::Delete(args)
            | Self::Sessions(args)
            | Self::Logout(args) => &args.storage,
            Self::List(args) => &args.storage,
        }
    }
}

/// How a new password is given and what it must be like.
#[derive(Debug, Args)]
pub struct NewPasswordArgs {
    /// Read the password from standard input instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
    /// The fewest characters a new password may have.
    #[arg(long, env = "AUTHD_MIN_PASSWORD_LENGTH",
          default_value_t = PasswordPolicy::default().min_chars)]
    pub min_password_length: usize,
}

impl NewPasswordArgs {
    /// The policy these flags set.
    pub fn policy(&self) -> PasswordPolicy {
        PasswordPolicy {
            min_chars: self.min_password_length,
        }
    }
}

/// `authd user add`.
#[derive(Debug, Args)]
pub struct AddUserArgs {
    /// The user's name (case-insensitive, unique).
    pub name: String,
    /// A role to put in the user's tokens; repeat for several.
    #[arg(long = "role", value_name = "ROLE")]
    pub roles: Vec<Role>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub password: NewPasswordArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub storage: StorageArgs,
}

/// `authd user passwd`.
#[derive(Debug, Args)]
pub struct PasswdArgs {
    /// The user's name.
    pub name: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub password: NewPasswordArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub storage: StorageArgs,
}

/// `authd user disable|enable|delete`.
#[derive(Debug, Args)]
pub struct NamedUserArgs {
    /// The user's name.
    pub name: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub storage: StorageArgs,
}

/// `authd user list`.
#[derive(Debug, Args)]
pub struct ListUsersArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub storage: StorageArgs,
}

/// `authd purge`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub storage: StorageArgs,
    /// Rows deleted per statement.
    #[arg(long, env = "AUTHD_PURGE_BATCH_SIZE", default_value_t = PurgeSettings::DEFAULT_BATCH_SIZE,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub purge_batch_size: u32,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub lifetimes: LifetimeArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub max_backoff: MaxBackoffArgs,
}

impl PurgeArgs {
    /// The purge settings these flags describe, as `serve` with the same
    /// flags would purge.
    pub fn settings(&self) -> PurgeSettings {
        let tokens = TokenSettings {
            ttl: *self.lifetimes.access_token_ttl,
            leeway: *self.lifetimes.leeway,
            ..TokenSettings::default()
        };
        let throttle = ThrottleSettings {
            max_backoff: *self.max_backoff.login_throttle_max_backoff,
            ..ThrottleSettings::default()
        };
        PurgeSettings {
            batch_size: self.purge_batch_size,
            ..PurgeSettings::new(&tokens, &throttle)
        }
    }
}

impl Cli {
    /// How the server logs; the other subcommands log as text.
    pub fn log_format(&self) -> LogFormat {
        match &self.command {
            None => self.serve.log_format,
            Some(Command::Serve(args)) => args.log_format,
            Some(_) => LogFormat::Text,
        }
    }

    /// Parses the process's arguments. Help and version print as usual; any
    /// other error prints as one line, and the exit code is returned.
    ///
    /// # Errors
    /// The exit code to leave with when there is nothing to run.
    pub fn try_parse_one_line() -> Result<Self, ExitCode> {
        use clap::error::ErrorKind;

        match Self::try_parse() {
            Ok(cli) => Ok(cli),
            Err(err)
                if matches!(
                    err.kind(),
                    ErrorKind::DisplayHelp
                        | ErrorKind::DisplayVersion
                        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                ) =>
            {
                let _ = err.print();
                Err(if err.use_stderr() {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                })
            }
            Err(err) => {
                // clap's first paragraph is the reason; the rest is usage.
                let text = err.to_string();
                let reason: Vec<&str> = text
                    .lines()
                    .take_while(|line| !line.trim().is_empty())
                    .map(str::trim)
                    .collect();
                eprintln!("authd: {}", reason.join(" ").trim_start_matches("error: "));
                Err(ExitCode::from(2))
            }
        }
    }
}

impl StorageArgs {
    /// The command that adds a user to this same database, as the operator
    /// would type it (a password in a PostgreSQL URL shown as `PASSWORD`).
    pub fn add_user_command(&self) -> String {
        let program = std::env::args()
            .next()
            .unwrap_or_else(|| "authd".to_owned());
        let mut command = format!("{program} user add NAME");
        if self.data_dir != Path::new(DEFAULT_DATA_DIR) {
            command.push_str(&format!(" --data-dir {}", self.data_dir.display()));
        }
        match &self.database_url {
            None => {}
            Some(DatabaseUrl::Sqlite(path)) => {
                command.push_str(&format!(" --database-url sqlite://{}", path.display()));
            }
            Some(DatabaseUrl::Postgres(url)) => {
                command.push_str(" --database-url ");
                command.push_str(&without_password(url.expose_secret()));
            }
        }
        command
    }

    /// The database settings.
    pub fn database(&self) -> DatabaseSettings {
        DatabaseSettings {
            pooler: self.database_pooler,
            direct_url: self.database_direct_url.clone(),
            ..DatabaseSettings::new(
                self.database_url
                    .clone()
                    .unwrap_or_else(|| DatabaseUrl::Sqlite(self.data_dir.join("authd.db"))),
            )
        }
    }
}

impl ServeArgs {
    /// The settings of the server these flags describe.
    pub fn settings(&self) -> ServeSettings {
        let defaults = ServeSettings::new(self.storage.database(), &self.storage.data_dir);
        let tokens = self.lifetimes.tokens(&self.issuer, &self.audience);
        let login_throttle = ThrottleSettings {
            mode: self.login_throttle,
            free_failures: self.login_throttle_failures,
            max_backoff: *self.max_backoff.login_throttle_max_backoff,
            ..defaults.login_throttle
        };
        ServeSettings {
            listen: self.listen,
            hashing_priority: self.hashing_priority,
            purge: PurgeSettings {
                interval: *self.purge_interval,
                batch_size: self.purge_batch_size,
                ..PurgeSettings::new(&tokens, &login_throttle)
            },
            tokens,
            login_throttle,
            trusted_proxies: self.trusted_proxies.clone(),
            admin_role: self.admin_role.clone(),
            password_policy: PasswordPolicy {
                min_chars: self.min_password_length,
            },
            max_calls_in_flight: self.max_calls_in_flight as usize,
            tls: self
                .tls_cert
                .clone()
                .zip(self.tls_key.clone())
                .map(|(cert, key)| TlsSettings {
                    cert,
                    key,
                    client_ca: self.tls_client_ca.clone(),
                    watch_interval: self.tls_watch_interval.0.map(Into::into),
                }),
            metrics: self.metrics,
            watch: WatchSettings {
                role: self.watch_role.clone(),
                heartbeat: *self.watch_heartbeat,
                ..defaults.watch.clone()
            },
            shutdown_delay: *self.shutdown_delay,
            shutdown_grace_period: *self.shutdown_grace_period,
            request_timeout: *self.request_timeout,
            token_cache_bytes: self.token_cache_mib.saturating_mul(1 << 20),
            keys: self.key_files.files(&self.storage.data_dir),
            key_rotation: RotationSettings {
                interval: self.key_rotation_interval.0.map(Into::into),
                publish_lead: self.publishing.publish_lead(),
                ..defaults.key_rotation
            },
            http: HttpSettings {
                listen: self.http_listen.0,
                public_url: self.public_url.clone(),
                jwks_max_age: *self.publishing.jwks_max_age,
            },
            sessions: SessionSettings {
                refresh_ttl: *self.refresh_token_ttl,
                max_age: *self.session_max_age,
                reuse_grace: *self.refresh_reuse_grace,
            },
            ..defaults
        }
    }
}

/// `postgres://user:secret@host/db` as `postgres://user:PASSWORD@host/db`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:PASSWORD{}", &rest[at..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

fn parse_database_url(raw: &str) -> Result<DatabaseUrl, String> {
    raw.parse()
}

fn parse_direct_url(raw: &str) -> Result<SecretString, String> {
    match raw.parse()? {
        DatabaseUrl::Postgres(url) => Ok(url),
        DatabaseUrl::Sqlite(_) => Err("must be a postgres:// URL".to_owned()),
    }
}

fn duration(raw: &str) -> Result<humantime::Duration, String> {
    raw.parse::<humantime::Duration>()
        .map_err(|err| format!("{err} (examples: 500ms, 90s, 15m, 1h)"))
}

/// A leeway: five minutes at most, so that every instance on a database
/// keeps revocations for at least as long as any other forgives.
fn leeway(raw: &str) -> Result<humantime::Duration, String> {
    match duration(raw)? {
        d if *d > TokenSettings::MAX_LEEWAY => Err(format!(
            "must be at most {}",
            humantime::format_duration(TokenSettings::MAX_LEEWAY)
        )),
        d => Ok(d),
    }
}

fn positive_duration(raw: &str) -> Result<humantime::Duration, String> {
    match duration(raw)? {
        d if *d < Duration::from_secs(1) => Err("must be at least 1s".to_owned()),
        d => Ok(d),
    }
}

/// A reuse grace: a minute at most, longer would let a stolen refresh
/// token be used beside the real one unnoticed.
fn reuse_grace(raw: &str) -> Result<humantime::Duration, String> {
    let grace = duration(raw)?;
    if *grace > Duration::from_secs(60) {
        return Err("must be at most 1m: a longer grace hides a stolen refresh token".to_owned());
    }
    Ok(grace)
}

/// An interval of at least a second, or `off`.
fn on_or_off(raw: &str) -> Result<bool, String> {
    match raw {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("must be on or off".to_owned()),
    }
}

fn interval_or_off(raw: &str) -> Result<OrOff<humantime::Duration>, String> {
    let parsed: OrOff<humantime::Duration> = raw.parse()?;
    match parsed.0 {
        Some(d) if *d < Duration::from_secs(1) => Err("must be at least 1s (or `off`)".to_owned()),
        _ => Ok(parsed),
    }
}

fn public_url(raw: &str) -> Result<String, String> {
    let ok = (raw.starts_with("http://") || raw.starts_with("https://"))
        && raw.len() > "https://".len()
        && !raw.contains(char::is_whitespace);
    if ok {
        Ok(raw.trim_end_matches('/').to_owned())
    } else {
        Err("must be an http:// or https:// URL".to_owned())
    }
}

fn non_empty(raw: &str) -> Result<String, String> {
    if raw.trim().is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(raw.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_subcommand_means_serve_with_defaults() {
        let cli = Cli::try_parse_from(["authd", "--database-url", "postgres://x@h/db"]).unwrap();
        assert!(cli.command.is_none());
        let settings = cli.serve.settings();
        assert_eq!(settings.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(settings.tokens.ttl, Duration::from_secs(15 * 60));
        assert_eq!(settings.tokens.leeway, Duration::from_secs(5));
        assert_eq!(settings.purge.interval, Duration::from_secs(300));
        assert_eq!(settings.purge.batch_size, 10_000);
        assert_eq!(settings.hashing_priority, HashingPriority::Low);
        assert_eq!(
            settings.keys.signing_key_file,
            PathBuf::from("./authd-data/signing-key.pem")
        );
        assert_eq!(
            settings.keys.encryption_key_file,
            PathBuf::from("./authd-data/key-encryption-key")
        );
        assert_eq!(settings.http.listen.unwrap().to_string(), "127.0.0.1:8080");
        assert_eq!(settings.http.jwks_max_age, Duration::from_secs(300));
        assert_eq!(settings.key_rotation.publish_lead, Duration::from_secs(600));
        assert_eq!(
            settings.key_rotation.interval,
            Some(Duration::from_secs(90 * 86_400))
        );
    }

    #[test]
    fn purge_keeps_what_serve_with_the_same_flags_would() {
        let flags = [
            "--database-url",
            "postgres://x@h/db",
            "--access-token-ttl",
            "1h",
            "--leeway",
            "30s",
            "--login-throttle-max-backoff",
            "2h",
            "--purge-batch-size",
            "500",
        ];
        let serve = Cli::try_parse_from(["authd"].iter().chain(&flags)).unwrap();
        let purge = Cli::try_parse_from(["authd", "purge"].iter().chain(&flags)).unwrap();
        let Some(Command::Purge(purge)) = purge.command else {
            panic!("not purge");
        };
        let (by_serve, by_purge) = (serve.serve.settings().purge, purge.settings());
        assert_eq!(by_purge.batch_size, 500);
        assert_eq!(by_purge.batch_size, by_serve.batch_size);
        // The lifetime plus the most leeway any instance may forgive.
        assert_eq!(by_purge.deleted_user_retention, Duration::from_secs(3900));
        assert_eq!(
            by_purge.deleted_user_retention,
            by_serve.deleted_user_retention
        );
        assert_eq!(by_purge.failed_login_memory, Duration::from_secs(4 * 3600));
        assert_eq!(by_purge.failed_login_memory, by_serve.failed_login_memory);
    }

    #[test]
    fn a_kid_that_begins_with_a_hyphen_is_a_kid() {
        let kid = "-DRWnOSXCUAvQnhY7AKPxaqR8larOFxmAOLOmBsOI28";
        let cli =
            Cli::try_parse_from(["authd", "keys", "revoke", kid, "--data-dir", "/d"]).unwrap();
        let Some(Command::Keys(KeysCommand::Revoke(args))) = cli.command else {
            panic!("not keys revoke");
        };
        assert_eq!(args.kid, kid);
    }

    #[test]
    fn metrics_are_on_unless_turned_off() {
        let metrics = |args: &[&str]| {
            Cli::try_parse_from(["authd"].iter().chain(args))
                .map(|cli| cli.serve.settings().metrics)
                .map_err(|err| err.to_string())
        };
        assert_eq!(metrics(&[]), Ok(true));
        assert_eq!(metrics(&["--metrics", "off"]), Ok(false));
        assert_eq!(metrics(&["--metrics", "on"]), Ok(true));
        assert!(
            metrics(&["--metrics", "no"])
                .unwrap_err()
                .contains("must be on or off")
        );
    }

    #[test]
    fn a_leeway_over_five_minutes_is_refused() {
        let parse = |leeway: &str| Cli::try_parse_from(["authd", "--leeway", leeway]);
        assert!(parse("5m").is_ok());
        let refused = parse("301s").unwrap_err().to_string();
        assert!(refused.contains("at most 5m"), "{refused}");
    }

    #[test]
    fn the_flags_defaults_are_the_settings_defaults() {
        let cli = Cli::try_parse_from(["authd", "--database-url", "postgres://x@h/db"]).unwrap();
        let from_flags = cli.serve.settings();
        let defaults = ServeSettings::new(
            from_flags.database.clone(),
            std::path::Path::new(DEFAULT_DATA_DIR),
        );
        assert_eq!(format!("{from_flags:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn without_a_url_the_database_is_sqlite_in_the_data_dir() {
        let storage = StorageArgs {
            database_url: None,
            data_dir: PathBuf::from("/srv/authd"),
            database_pooler: DatabasePooler::None,
            database_direct_url: None,
        };
        match storage.database().url {
            DatabaseUrl::Sqlite(path) => assert_eq!(path, PathBuf::from("/srv/authd/authd.db")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_add_user_hint_names_the_same_database_without_its_password() {
        let storage = |url: Option<&str>, dir: &str| StorageArgs {
            database_url: url.map(|u| u.parse().unwrap()),
            data_dir: PathBuf::from(dir),
            database_pooler: DatabasePooler::None,
            database_direct_url: None,
        };
        let hint = storage(None, DEFAULT_DATA_DIR).add_user_command();
        assert!(hint.ends_with(" user add NAME"), "{hint}");
        let hint = storage(None, "/srv/authd").add_user_command();
        assert!(
            hint.ends_with(" user add NAME --data-dir /srv/authd"),
            "{hint}"
        );
        let hint = storage(Some("sqlite:///srv/a.db"), DEFAULT_DATA_DIR).add_user_command();
        assert!(
            hint.ends_with(" --database-url sqlite:///srv/a.db"),
            "{hint}"
        );
        let hint = storage(
            Some("postgres://authd:s3cret@db:5432/authd"),
            DEFAULT_DATA_DIR,
        )
        .add_user_command();
        assert!(
            hint.ends_with(" --database-url postgres://authd:PASSWORD@db:5432/authd"),
            "{hint}"
        );
        assert!(!hint.contains("s3cret"));
        let hint = storage(Some("postgres://authd@db/authd"), DEFAULT_DATA_DIR).add_user_command();
        assert!(
            hint.ends_with(" --database-url postgres://authd@db/authd"),
            "{hint}"
        );
    }

    #[test]
    fn bad_values_are_refused() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["authd", "serve", "--database-url", "postgres://x@h/db"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args)
        };
        assert!(parse(&["--leeway", "soon"]).is_err());
        assert!(parse(&["--access-token-ttl", "0s"]).is_err());
        assert!(parse(&["--purge-batch-size", "0"]).is_err());
        assert!(parse(&["--issuer", ""]).is_err());
        assert!(parse(&["--hashing-priority", "realtime"]).is_err());
        assert!(parse(&["--http-listen", "8080"]).is_err());
        assert!(parse(&["--public-url", "auth.example"]).is_err());
        assert!(parse(&["--key-rotation-interval", "0s"]).is_err());
        let off = parse(&[
            "--http-listen",
            "off",
            "--key-rotation-interval",
            "off",
            "--jwks-max-age",
            "1m",
        ])
        .unwrap();
        match off.command {
            Some(Command::Serve(args)) => {
                let settings = args.settings();
                assert_eq!(settings.http.listen, None);
                assert_eq!(settings.key_rotation.interval, None);
                assert_eq!(settings.key_rotation.publish_lead, Duration::from_secs(120));
            }
            other => panic!("not serve: {other:?}"),
        }
        let idle = parse(&["--hashing-priority", "idle"]).unwrap();
        match idle.command {
            Some(Command::Serve(args)) => {
                assert_eq!(args.settings().hashing_priority, HashingPriority::Idle);
            }
            other => panic!("not serve: {other:?}"),
        }
        assert!(
            Cli::try_parse_from(["authd", "migrate", "--database-url", "mysql://h/db"]).is_err()
        );
    }
}
