//! The command line: argument definitions and what each command prints.
//!
//! Exit codes: 0 success (for `scan`: usable keys found); 1 the command failed, or `scan` found
//! nothing usable (the message says why); 2 the command line is wrong (clap's usage errors).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use onboard_protocol::UnitId;

use crate::config::{Overrides, Settings};
use crate::daemon::{self, Observer};
use crate::identity::{self, DEFAULT_SYSFS_ROOT, Persist};
use crate::inspect;

const EXIT_CODES: &str = "\
Exit codes:
  0  success (scan: this device has keys it would use)
  1  the command failed, or scan found nothing usable; the message says why
  2  the command line is wrong";

const SCAN_EXIT_CODES: &str = "\
Exit codes:
  0  usable keys found: this device would present at least one
  1  nothing usable (no key file, every key bound to another unit, or no unit ID), with the
     reasons; or the path cannot be read
  2  the command line is wrong";

/// The onboarding agent: finds this device's unit ID and the first-authentication key files on USB
/// sticks.
///
/// State (the persisted unit ID) lives in the state directory. Settings come from an optional TOML
/// file; the command line wins over it.
#[derive(Debug, Parser)]
#[command(name = "onboard-agent", version, max_term_width = 100, after_help = EXIT_CODES)]
pub struct Cli {
    /// A TOML config file [default: /etc/onboard-agent/agent.toml, when it exists].
    #[arg(long, global = true, env = "ONBOARD_AGENT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The state directory [default: state_dir from the config file, else /var/lib/onboard-agent].
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Use this unit ID (a MAC, or a UD Pocket's 18-character serial) instead of the configured,
    /// persisted or detected one.
    #[arg(long, global = true, value_name = "ID")]
    pub unit_id: Option<UnitId>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Watch for USB sticks and report the key files on them (the daemon).
    ///
    /// Looks under the mount roots at start-up, then waits without polling for mount-table
    /// changes and file events, and looks again. For now it only logs each key file found (path,
    /// format, number of keys, short UMS ID fingerprint; never a key) and each file skipped;
    /// enrolling with the keys is a later step. Stops cleanly on SIGINT or SIGTERM. Log detail:
    /// RUST_LOG (default info).
    Run(RunArgs),
    /// Print this device's unit ID: configured, else persisted, else detected from the network
    /// interfaces and persisted.
    ///
    /// Detection follows IGEL OS 12: physical NICs only; bus PCI > SDIO > USB > other; wired over
    /// wireless; then the first interface name in lexical order.
    UnitId(UnitIdArgs),
    /// Show what a key file (or every key file in a folder, read as a stick) holds, keys masked,
    /// and which keys this device would present, in order.
    #[command(after_help = SCAN_EXIT_CODES)]
    Scan(ScanArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// A folder sticks get mounted under (repeatable) [default: mount_roots from the config
    /// file, else /media, /run/media and /mnt].
    #[arg(long = "mount-root", value_name = "DIR")]
    mount_roots: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct UnitIdArgs {
    /// Print JSON: unit_id, source (configured, persisted or detected), interface.
    #[arg(long)]
    json: bool,
    /// Where sysfs is mounted.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_SYSFS_ROOT)]
    sysfs_root: PathBuf,
}

#[derive(Debug, Args)]
struct ScanArgs {
    /// A key file, or a folder read as a stick (its top and one level of folders).
    path: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Where sysfs is mounted (to detect the unit ID when none is configured or persisted; scan
    /// never persists it).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_SYSFS_ROOT)]
    sysfs_root: PathBuf,
}

/// Logs to standard error, at the level RUST_LOG says (default: info, and warn for the notify
/// crate, whose info lines are about its own bookkeeping); colours only on a terminal.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,notify=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Runs the command; the exit code for what it found, or an error for `main` to print.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mount_roots = match &cli.command {
        Command::Run(args) => args.mount_roots.clone(),
        _ => Vec::new(),
    };
    let settings = Settings::load(Overrides {
        config_file: cli.config,
        state_dir: cli.state_dir,
        unit_id: cli.unit_id,
        mount_roots,
    })?;
    match cli.command {
        Command::Run(_) => run_daemon(&settings),
        Command::UnitId(args) => unit_id(&settings, &args),
        Command::Scan(args) => scan(&settings, &args),
    }
}

fn run_daemon(settings: &Settings) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let shutdown = daemon::stop_signals()?;
        daemon::run(settings, shutdown, Observer::new()).await
    });
    // A look still stuck on a dying stick must not hold the process up.
    runtime.shutdown_timeout(Duration::from_secs(2));
    result?;
    Ok(ExitCode::SUCCESS)
}

fn unit_id(settings: &Settings, args: &UnitIdArgs) -> anyhow::Result<ExitCode> {
    let resolved = identity::resolve(
        settings.unit_id.as_ref(),
        &settings.state_dir,
        &args.sysfs_root,
        Persist::Yes,
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&resolved)?);
    } else {
        match &resolved.interface {
            Some(name) => println!(
                "{} ({}, interface {name})",
                resolved.unit_id, resolved.source
            ),
            None => println!("{} ({})", resolved.unit_id, resolved.source),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn scan(settings: &Settings, args: &ScanArgs) -> anyhow::Result<ExitCode> {
    let unit = identity::resolve(
        settings.unit_id.as_ref(),
        &settings.state_dir,
        &args.sysfs_root,
        Persist::No,
    );
    let inspection = inspect::inspect(&args.path, unit.as_ref(), &settings.key_file_limits())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&inspection)?);
    } else {
        print!("{}", inspection.to_text());
    }
    Ok(if inspection.usable_keys > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
