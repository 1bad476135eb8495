//! The `authd` binary: parses the command line, starts logging, runs the
//! subcommand ([`authd::commands`]).

use std::process::ExitCode;

use authd::{commands, config::Cli, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse_one_line() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    telemetry::init(cli.log_format());
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("authd: {err:#}");
            ExitCode::FAILURE
        }
    }
}
