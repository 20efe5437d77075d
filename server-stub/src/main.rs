//! `ums-stub`: parses the command line and runs it; prints the whole cause chain on failure.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = ums_stub::cli::Cli::parse();
    match ums_stub::cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ums-stub: {error:#}");
            ExitCode::FAILURE
        }
    }
}
