//! The load generator, briefly, against the real server on PostgreSQL
//! (the server `DATABASE_URL` names, which authd-bench reads itself):
//! every scenario runs and every answer it counts is checked (one wrong
//! answer, or a scenario with no answer at all, fails the run and so this
//! test). Rates and latencies are the benchmark's business, not this
//! test's.

use std::{path::PathBuf, process::Command};

/// The authd binary of this build, built by cargo into the same target
/// directory and profile as this test (a no-op when it is current).
fn authd_binary() -> PathBuf {
    // This test runs from target/<profile dir>/deps/.
    let exe = std::env::current_exe().expect("the test knows its path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from target/<profile>/deps")
        .to_owned();
    let profile = match dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let built = Command::new(env!("CARGO"))
        .args([
            "build", "--quiet", "--locked", "-p", "authd", "--bin", "authd",
        ])
        .args(["--profile", profile])
        .status()
        .expect("cargo runs");
    assert!(built.success(), "cargo build -p authd failed");
    dir.join("authd")
}

#[test]
fn the_load_generator_runs_every_scenario_and_finds_every_answer_right() {
    let printed = run_briefly("postgres");
    for scenario in SCENARIOS {
        assert!(
            printed.contains(scenario),
            "no {scenario} row in:\n{printed}"
        );
    }
}

/// The same through the test PgBouncer in transaction mode, with the lag
/// of an instance that has no direct URL for LISTEN.
#[test]
fn the_load_generator_runs_through_pgbouncer() {
    if std::env::var("AUTHD_PGBOUNCER_URL").is_err() {
        let why = std::env::var("AUTHD_PGBOUNCER_SKIP")
            .expect("AUTHD_PGBOUNCER_URL or AUTHD_PGBOUNCER_SKIP (scripts/test sets one)");
        eprintln!("SKIPPED: no PgBouncer to test through: {why}");
        return;
    }
    let printed = run_briefly("postgres-pgbouncer");
    for scenario in SCENARIOS
        .iter()
        .chain(&["| logout seen by a 2nd instance, catch-up alone |"])
    {
        assert!(
            printed.contains(scenario),
            "no {scenario} row in:\n{printed}"
        );
    }
}

/// Runs every scenario for a moment on `backend`; returns what it printed.
fn run_briefly(backend: &str) -> String {
    let run = Command::new(env!("CARGO_BIN_EXE_authd-bench"))
        .arg("--authd")
        .arg(authd_binary())
        .args(["--backend", backend])
        .args(["--duration", "300ms", "--hot-tokens", "300"])
        .args(["--connections", "2", "--in-flight", "4"])
        .output()
        .expect("authd-bench runs");
    let printed = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    printed.into_owned()
}

/// The rows every run prints.
const SCENARIOS: &[&str] = &[
    "| health |",
    "| validate-hot |",
    "| validate-hot at half load |",
    "| ext-authz |",
    "| ext-authz at half load |",
    "| forward-auth |",
    "| jwks |",
    "| validate-cold |",
    "| login (2x capacity) |",
    "| mixed: validate-hot |",
    "| mixed at half load: validate-hot |",
    "| logout |",
    "| refresh |",
    "| logout seen by a 2nd instance |",
];
