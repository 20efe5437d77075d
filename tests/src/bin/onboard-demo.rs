//! `onboard-demo`: the main job in one command. See `onboard_tests::demo`.
//!
//! It carries both programs: started as `onboard-demo ums-stub ...` or `onboard-demo
//! onboard-agent ...` it is that program, so one `cargo run` builds all the demo needs.

use std::process::ExitCode;

use clap::Parser;
use onboard_tests::demo::{self, DemoOptions};
use onboard_tests::programs::{self, Programs};

/// Shows first-authentication onboarding end to end on this machine: starts ums-stub on loopback
/// in a temporary data directory (SQLite), creates one-time, device-bound and mass keys, exports
/// them to a folder standing in for a USB stick, starts several onboard-agent processes watching a
/// mount root, plugs the stick in, and shows each device enrolling, then the key list and the
/// device list. Cleans up after itself, also on Ctrl-C.
///
/// Exit codes: 0 every device enrolled; 1 something failed or not every device enrolled (the
/// output says which); 2 the command line is wrong.
#[derive(Debug, Parser)]
#[command(name = "onboard-demo", version, max_term_width = 100)]
struct Cli {
    /// How many devices (1 to 50).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=50))]
    devices: u16,
    /// Keep the temporary folder (data directory, stick, agents' state) and print where it is.
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    if let Some(code) = programs::run_carried() {
        return code;
    }
    let cli = Cli::parse();
    let options = match Programs::carried() {
        Ok(programs) => DemoOptions {
            devices: usize::from(cli.devices),
            keep: cli.keep,
            programs,
        },
        Err(error) => {
            eprintln!("onboard-demo: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    match demo::run(&options) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("onboard-demo: {error:#}");
            ExitCode::FAILURE
        }
    }
}
