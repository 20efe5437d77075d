//! `ums-stub`: parses the command line, sets up logging and runs; prints the whole cause chain on
//! failure.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = ums_stub::cli::Cli::parse();
    // Logs go to standard error (the journal, under systemd); RUST_LOG adjusts the level.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match ums_stub::cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ums-stub: {error:#}");
            ExitCode::FAILURE
        }
    }
}
