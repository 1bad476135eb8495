//! What each subcommand does: a few lines each, over [`startup`] and the
//! use cases in [`auth`].
//!
//! [`startup`]: crate::startup
//! [`auth`]: crate::auth

use std::{
    io::{IsTerminal as _, Read as _},
    time::Duration,
};

use anyhow::{Context as _, bail};
use time::format_description::well_known::Rfc3339;

use crate::{
    auth::{Accounts, HashCost, HashingPriority, Passwords, Rotation, SigningKeys, deployment},
    config::{
        Cli, Command, KeySetArgs, KeysCommand, LifetimeArgs, PurgeArgs, ServeArgs, StorageArgs,
        UserCommand,
    },
    domain::{Password, Role, UserRef, Username},
    jobs::purge::{PurgePass, purge_once},
    startup::Application,
    store::{Storage as _, Store, UserRecord},
};

/// Runs the command line's subcommand.
///
/// # Errors
/// Whatever stopped the subcommand, for `main` to print in one line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli
        .command
        .unwrap_or_else(|| Command::Serve(Box::new(cli.serve)))
    {
        Command::Serve(args) => serve(&args).await,
        Command::Migrate(args) => {
            open_store(&args).await?;
            println!("the database schema is up to date");
            Ok(())
        }
        Command::User(command) => user(command).await,
        Command::Purge(args) => purge(&args).await,
        Command::Keys(command) => keys(command).await,
    }
}

async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::List(args) => {
            let store = open_store(&args.storage).await?;
            let keys =
                SigningKeys::list(&store, key_retention(&store, &args.lifetimes).await?).await?;
            if keys.is_empty() {
                println!("no signing keys yet: the first is made when authd first starts");
                return Ok(());
            }
            let at = |instant: Option<time::OffsetDateTime>| {
                instant.map_or_else(
                    || "-".to_owned(),
                    |at| at.format(&Rfc3339).unwrap_or_default(),
                )
            };
            println!(
                "{:<43} {:<8} {:<20} {:<20} {:<20}",
                "KID", "STATE", "CREATED", "ACTIVATES", "RETIRES"
            );
            for key in keys {
                println!(
                    "{:<43} {:<8} {:<20} {:<20} {:<20}",
                    key.kid,
                    key.state.as_str(),
                    at(Some(key.created_at)),
                    at(Some(key.activates_at)),
                    at(key.retires_at.or(key.revoked_at)),
                );
            }
        }
        KeysCommand::Rotate(args) => {
            let keys = open_key_set(&args.key_set).await?;
            match keys.rotate(args.publishing.publish_lead()).await? {
                Rotation::Scheduled { kid, activates_at } => {
                    println!(
                        "new signing key {kid}: published now, signing from {}",
                        activates_at.format(&Rfc3339).unwrap_or_default()
                    );
                }
                Rotation::AlreadyPending { kid, activates_at } => bail!(
                    "the signing key {kid} is pending already and signs from {}; \
                     rotate again once it does (or revoke it)",
                    activates_at.format(&Rfc3339).unwrap_or_default()
                ),
                Rotation::NotDue => unreachable!("a rotation on request is always due"),
            }
        }
        KeysCommand::Revoke(args) => {
            let keys = open_key_set(&args.key_set).await?;
            match keys.revoke(&args.kid).await? {
                Some(promoted) => println!(
                    "revoked {}; {promoted} signs from now on; every token {} signed is invalid",
                    args.kid, args.kid
                ),
                None => println!("revoked {}; every token it signed is invalid", args.kid),
            }
        }
    }
    Ok(())
}

async fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let app = Application::build(args.settings()).await?;
    if app.store().count_users().await? == 0 {
        tracing::warn!(
            "there are no users yet; add one with: {}",
            args.storage.add_user_command()
        );
    }
    app.run_until_stopped(shutdown_signal()).await
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};

    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            tracing::error!(error = %err, "cannot listen for SIGTERM; stop with SIGINT");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

async fn open_key_set(args: &KeySetArgs) -> anyhow::Result<SigningKeys> {
    let store = open_store(&args.storage).await?;
    let files = args.key_files.files(&args.storage.data_dir);
    let retention = key_retention(&store, &args.lifetimes).await?;
    SigningKeys::open(store, &files, retention).await
}

/// How long a retired key still verifies, as the serving instances count
/// it: the longest token lifetime any of them has started with (or these
/// flags', if longer), plus the leeway.
async fn key_retention(store: &Store, lifetimes: &LifetimeArgs) -> anyhow::Result<Duration> {
    Ok(deployment::key_retention(
        store.deployment().await?.as_ref(),
        *lifetimes.access_token_ttl,
        *lifetimes.leeway,
    ))
}

async fn open_store(args: &StorageArgs) -> anyhow::Result<Store> {
    let store = Store::connect(&args.database()).await?;
    store
        .migrate()
        .await
        .context("cannot migrate the database")?;
    Ok(store)
}

async fn purge(args: &PurgeArgs) -> anyhow::Result<()> {
    let store = open_store(&args.storage).await?;
    match purge_once(&store, &args.settings()).await? {
        PurgePass::Done(report) => {
            println!("revocations: {}", report.revocations);
            println!("deleted users: {}", report.deleted_users);
            println!("failed logins: {}", report.failed_logins);
            println!("signing keys: {}", report.signing_keys);
            println!("sessions: {}", report.sessions);
            Ok(())
        }
        PurgePass::Busy => bail!("another authd instance is purging right now; try again later"),
    }
}

async fn user(command: UserCommand) -> anyhow::Result<()> {
    let store = open_store(command.storage()).await?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let passwords = Passwords::new(HashCost::default(), cores, HashingPriority::default())?;
    let accounts = Accounts::new(store, passwords, command.password_policy());
    match command {
        UserCommand::Add(args) => {
            let username = Username::parse(args.name)?;
            let password = read_password(args.password.password_stdin).await?;
            let user = accounts.add(&username, &password, &args.roles).await?;
            println!("added user {username} with id {}", user.id);
        }
        UserCommand::Passwd(args) => {
            let username = Username::parse(args.name)?;
            let user = UserRef::Name(username.clone());
            let password = read_password(args.password.password_stdin).await?;
            accounts.change_password(&user, &password).await?;
            println!("changed the password of {username}; its earlier tokens are revoked");
        }
        UserCommand::Disable(args) => {
            let username = Username::parse(args.name)?;
            let user = UserRef::Name(username.clone());
            accounts.disable(&user).await?;
            println!("disabled {username}; its tokens are revoked");
        }
        UserCommand::Enable(args) => {
            let username = Username::parse(args.name)?;
            let user = UserRef::Name(username.clone());
            accounts.enable(&user).await?;
            println!("enabled {username}");
        }
        UserCommand::Delete(args) => {
            let username = Username::parse(args.name)?;
            let user = UserRef::Name(username.clone());
            accounts.delete(&user).await?;
            println!("deleted {username}; its tokens are revoked");
        }
        UserCommand::Sessions(args) => {
            let username = Username::parse(args.name)?;
            let user = UserRef::Name(username.clone());
            let sessions = accounts.sessions(&user).await?;
            if sessions.is_empty() {
                println!("{username} has no live sessions");
                return Ok(());
            }
            let at = |instant: time::OffsetDateTime| {
                instant
                    .replace_nanosecond(0)
                    .unwrap_or(instant)
                    .format(&Rfc3339)
                    .unwrap_or_default()
            };
            println!(
                "{:<36} {:<20} {:<20} {:<20} {:<39} USER AGENT",
                "SESSION", "CREATED", "REFRESHED", "EXPIRES", "ADDRESS"
            );
            for session in sessions {
                println!(
                    "{:<36} {:<20} {:<20} {:<20} {:<39} {}",
                    session.id.to_string(),
                    at(session.created_at),
                    at(session.last_refreshed_at),
                    at(session.expires_at),
                    session.client_address.as_deref().unwrap_or("-"),
                    session.user_agent.as_deref().unwrap_or("-"),
                );
            }
        }
        UserCommand::Logout(args) => {
            let username = Username::parse(args.name)?;
            let user = UserRef::Name(username.clone());
            accounts.logout_everywhere(&user).await?;
            println!("ended every session of {username}; its tokens are revoked");
        }
        UserCommand::List(_) => {
            println!(
                "{:<24} {:<36} {:<8} {:<25} ROLES",
                "USERNAME", "ID", "STATE", "CREATED"
            );
            let mut after = None;
            loop {
                let page = accounts.list(after.as_deref(), 1000).await?;
                for user in &page.users {
                    print_user(user);
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
    }
    Ok(())
}

fn print_user(user: &UserRecord) {
    let state = if user.disabled_at.is_some() {
        "disabled"
    } else {
        "enabled"
    };
    let created = user.created_at.format(&Rfc3339).unwrap_or_default();
    println!(
        "{:<24} {:<36} {:<8} {:<25} {}",
        user.username.as_str(),
        user.id.to_string(),
        state,
        created,
        user.roles
            .iter()
            .map(Role::as_str)
            .collect::<Vec<_>>()
            .join(",")
    );
}

/// The new password: from standard input with `--password-stdin` (one
/// trailing newline removed), else typed twice at the terminal unechoed.
async fn read_password(from_stdin: bool) -> anyhow::Result<Password> {
    tokio::task::spawn_blocking(move || {
        let raw = if from_stdin {
            let mut raw = String::new();
            std::io::stdin()
                .read_to_string(&mut raw)
                .context("cannot read the password from standard input")?;
            let trimmed = raw.strip_suffix('\n').unwrap_or(&raw);
            let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
            trimmed.to_owned()
        } else if std::io::stdin().is_terminal() {
            let first = rpassword::prompt_password("Password: ")?;
            let second = rpassword::prompt_password("Password (again): ")?;
            if first != second {
                bail!("the passwords do not match");
            }
            first
        } else {
            bail!(
                "standard input is not a terminal: pass --password-stdin and pipe the password in"
            );
        };
        Ok(Password::parse(raw)?)
    })
    .await?
}
