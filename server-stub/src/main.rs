//! `ums-stub`: the whole program is [`ums_stub::cli::main_with`], which parses the command line,
//! sets up logging, runs and prints the whole cause chain on failure.

use std::process::ExitCode;

fn main() -> ExitCode {
    ums_stub::cli::main_with(std::env::args_os())
}
