//! `onboard-agent`: the whole program is [`onboard_agent::cli::main_with`], which parses the
//! command line, sets up logging, runs the command and prints the whole cause chain on failure.

use std::process::ExitCode;

fn main() -> ExitCode {
    onboard_agent::cli::main_with(std::env::args_os())
}
