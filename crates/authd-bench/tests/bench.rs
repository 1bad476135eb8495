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
    let run = Command::new(env!("CARGO_BIN_EXE_authd-bench"))
        .arg("--authd")
        .arg(authd_binary())
        .args(["--backend", "postgres"])
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
    for scenario in [
        "| health |",
        "| validate-hot |",
        "| validate-hot at half load |",
        "| validate-cold |",
        "| login (2x capacity) |",
        "| mixed: validate-hot |",
        "| mixed at half load: validate-hot |",
        "| logout |",
        "| logout seen by a 2nd instance |",
    ] {
        assert!(
            printed.contains(scenario),
            "no {scenario} row in:\n{printed}"
        );
    }
}
