//! The authd processes under test: started from the built binary, watched
//! through /proc, stopped with SIGTERM.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context as _, bail};
use authd::auth::HashingPriority;
use tokio::process::{Child, Command};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Where one benchmark run keeps its data.
#[derive(Clone)]
pub(crate) struct Target {
    /// The authd binary.
    pub authd: PathBuf,
    /// `--database-url` for every process of the run.
    pub database_url: String,
    /// The database itself, past any pooler: for the bench's own SQL.
    pub direct_url: String,
    /// More storage flags for every process (`--database-pooler`, …).
    pub storage_flags: Vec<String>,
    /// `--data-dir` (the key-encryption key; the SQLite file lives here
    /// too).
    pub data_dir: PathBuf,
    /// `--hashing-priority` of every server started.
    pub hashing_priority: HashingPriority,
}

impl Target {
    /// Tokens signed with the active key of the target's database, as the
    /// servers of the run issue them.
    pub(crate) async fn minter(&self) -> anyhow::Result<authd::auth::AccessTokens> {
        use authd::auth::{AccessTokens, TokenSettings};
        let tokens = TokenSettings::default();
        let (_, keys) = self.key_set().await?;
        Ok(AccessTokens::new(keys.ring(), tokens))
    }

    /// `count` new sessions of `user`, stored as a Login stores them: the
    /// id and the refresh token of each.
    pub(crate) async fn sessions(
        &self,
        user: authd::domain::UserId,
        count: usize,
    ) -> anyhow::Result<Vec<(authd::domain::SessionId, String)>> {
        use authd::{
            domain::SessionId,
            store::{SessionRecord, Storage as _},
        };
        use secrecy::ExposeSecret as _;
        let (store, keys) = self.key_set().await?;
        let key = keys.refresh_token_key();
        let now = time::OffsetDateTime::now_utc();
        let mut tokens = Vec::with_capacity(count);
        let mut writes = tokio::task::JoinSet::new();
        for _ in 0..count {
            let session = SessionRecord {
                id: SessionId::generate(),
                user_id: user,
                created_at: now,
                last_refreshed_at: now,
                expires_at: now + Duration::from_secs(3600),
                max_expires_at: now + Duration::from_secs(3600),
                revoked_at: None,
                client_address: None,
                user_agent: Some("authd-bench".to_owned()),
                generation: 1,
                access_expires_at: now,
            };
            tokens.push((
                session.id,
                key.mint(session.id, 1).expose_secret().to_owned(),
            ));
            let store = store.clone();
            writes.spawn(async move { store.create_session(&session).await });
            // A few writes at a time: the pool has 16 connections.
            if writes.len() >= 12
                && let Some(done) = writes.join_next().await
            {
                done??;
            }
        }
        while let Some(done) = writes.join_next().await {
            done??;
        }
        Ok(tokens)
    }

    /// The store and the key set of the target's database.
    async fn key_set(&self) -> anyhow::Result<(authd::store::Store, authd::auth::SigningKeys)> {
        use authd::{
            auth::{KeyFiles, SigningKeys, TokenSettings},
            startup::ServeSettings,
            store::{DatabaseSettings, Store},
        };
        let url = self.direct_url.parse().map_err(anyhow::Error::msg)?;
        let store = Store::connect(&DatabaseSettings::new(url)).await?;
        let files = KeyFiles {
            encryption_key_file: self.data_dir.join(ServeSettings::KEY_ENCRYPTION_KEY_FILE),
            signing_key_file: self.data_dir.join(ServeSettings::SIGNING_KEY_FILE),
        };
        let tokens = TokenSettings::default();
        let keys = SigningKeys::open(store.clone(), &files, tokens.ttl + tokens.leeway).await?;
        Ok((store, keys))
    }

    /// Runs an authd subcommand against this target's data.
    pub(crate) async fn cli(&self, args: &[&str], stdin: &str) -> anyhow::Result<String> {
        use tokio::io::AsyncWriteExt as _;

        let mut child = Command::new(&self.authd)
            .args(args)
            .args(["--database-url", &self.database_url])
            .args(&self.storage_flags)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", self.authd.display()))?;
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin.as_bytes()).await?;
        }
        let output = child.wait_with_output().await?;
        if !output.status.success() {
            bail!(
                "authd {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// One running authd server.
pub(crate) struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// The HTTP listener (JWKS, probes).
    pub http: SocketAddr,
}

impl Server {
    /// Starts `authd serve` on free ports and waits until it is SERVING.
    /// It logs as it would by default (`RUST_LOG` unset), to a file in the
    /// data directory.
    pub(crate) async fn start(target: &Target, extra: &[&str]) -> anyhow::Result<Self> {
        let free_port = || -> anyhow::Result<u16> {
            Ok(std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port())
        };
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let http: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let log = target.data_dir.join(format!("authd-{port}.log"));
        let child = Command::new(&target.authd)
            .arg("serve")
            .args(["--listen", &addr.to_string()])
            .args(["--http-listen", &http.to_string()])
            .args(["--database-url", &target.database_url])
            .args(&target.storage_flags)
            .arg("--data-dir")
            .arg(&target.data_dir)
            .args(["--hashing-priority", target.hashing_priority.as_str()])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", target.authd.display()))?;
        let server = Self { child, addr, http };
        if let Err(err) = server.wait_until_serving().await {
            let printed = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = printed.lines().collect();
            let tail = &lines[lines.len().saturating_sub(20)..];
            bail!("{err:#}; its log ends:\n{}", tail.join("\n"));
        }
        Ok(server)
    }

    async fn wait_until_serving(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(channel) = self.channel().await {
                let status = HealthClient::new(channel)
                    .check(HealthCheckRequest::default())
                    .await
                    .map(|r| r.into_inner().status());
                if status.is_ok_and(|s| s == ServingStatus::Serving) {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("authd at {} never became SERVING", self.addr);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A new HTTP/2 connection to the server.
    pub(crate) async fn channel(&self) -> anyhow::Result<Channel> {
        Ok(Channel::from_shared(format!("http://{}", self.addr))?
            .connect()
            .await?)
    }

    /// The process's resident set size now and at its peak, in KiB.
    pub(crate) fn rss_kib(&self) -> (u64, u64) {
        let Some(pid) = self.child.id() else {
            return (0, 0);
        };
        read_rss(&PathBuf::from(format!("/proc/{pid}/status")))
    }

    /// CPU time the server's password-hashing threads (`authd-argon2-N`)
    /// have used so far, from `/proc`.
    pub(crate) fn hashing_cpu(&self) -> anyhow::Result<Duration> {
        let pid = self.child.id().context("the server has exited")?;
        let mut ticks = 0;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let task = task?.path();
            // Other threads may end while this reads; hashing threads do not.
            let Ok(name) = std::fs::read_to_string(task.join("comm")) else {
                continue;
            };
            if name.starts_with("authd-argon2") {
                ticks += cpu_ticks(&std::fs::read_to_string(task.join("stat"))?)?;
            }
        }
        let per_second = rustix::param::clock_ticks_per_second();
        Ok(Duration::from_secs_f64(ticks as f64 / per_second as f64))
    }

    /// Stops the server with SIGTERM, as an operator would.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await?;
        }
        tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??;
        Ok(())
    }
}

/// User and system time, in clock ticks, of a `/proc/…/stat` line: its
/// fields 14 and 15 (proc(5)), counted from the command name's closing
/// parenthesis, which is field 2's end (the name may hold spaces and
/// parentheses of its own).
fn cpu_ticks(stat: &str) -> anyhow::Result<u64> {
    let (_, after_name) = stat.rsplit_once(')').context("no command name")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |number: usize| -> anyhow::Result<u64> {
        let raw = fields.get(number - 3).context("a short stat line")?;
        Ok(raw.parse()?)
    };
    Ok(field(14)? + field(15)?)
}

fn read_rss(status: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(status).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_user_and_system_time() {
        let line = "42 (authd-argon2-0) R 1 42 42 0 -1 4194560 100 0 0 0 250 17 0 0 30 10 3 0";
        assert_eq!(cpu_ticks(line).unwrap(), 267);
        // A name with a parenthesis and a space of its own.
        let line = "42 (a) b) S 1 42 42 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 1 0";
        assert_eq!(cpu_ticks(line).unwrap(), 11);
        assert!(cpu_ticks("42 (short) S 1 2").is_err());
    }
}
