//! `onboard-agent`: parses the command line, sets up logging and runs the command; prints the whole
//! cause chain on failure.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = onboard_agent::cli::Cli::parse();
    onboard_agent::cli::init_logging();
    match onboard_agent::cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("onboard-agent: {error:#}");
            ExitCode::FAILURE
        }
    }
}
