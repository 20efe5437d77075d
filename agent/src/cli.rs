//! The command line: argument definitions and what each command prints.
//!
//! Exit codes: 0 success (for `scan`: usable keys found; for `status`: enrolled); 1 the command
//! failed, or `scan` found nothing usable (the message says why); 2 the command line is wrong
//! (clap's usage errors); `enroll`, `status` and `check` add the codes in [`EnrollExit`],
//! [`STATUS_EXIT_CODES`] and [`CheckExit`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
use onboard_protocol::UnitId;
use tracing_subscriber::filter::Targets;

use crate::config::{Overrides, Settings};
use crate::daemon::{self, Environment, Observer};
use crate::identity::{self, DEFAULT_SYSFS_ROOT, Persist};
use crate::inspect;
use crate::lifecycle::Phase;
use crate::pin::Pin;
use crate::state::{self, AgentState};

mod enroll;

pub use enroll::EnrollExit;
use enroll::{command_line_pin, enroll};

const EXIT_CODES: &str = "\
Exit codes:
  0  success (scan: this device has keys it would use)
  1  the command failed, or scan found nothing usable; the message says why
  2  the command line is wrong";

const ENROLL_EXIT_CODES: &str = "\
Exit codes:
  0  enrolled (or already enrolled)
  1  the command failed on this device (state directory, device key); the message says why
  2  the command line is wrong
  3  no key to present: no key file, none for this unit, or every key refused (used, unknown,
     inactive, bound to another device)
  4  pin refused: the server is not the pinned UMS ID (the key was not sent), or the stick names
     another UMS ID than the one this device holds
  5  unit_id_conflict: the server holds this unit ID with another key pair; an administrator
     must delete the device record
  6  no server could be reached (or each answered 5xx or 429) on every try
  7  the server rejected the request (bad_request, or an answer that is not EST)";

/// Exit codes of `check`.
pub const CHECK_EXIT_CODES: &str = "\
Exit codes:
  0  at least one key would be accepted, by at least one of the key file's servers
  1  the command failed (the path cannot be read, no unit ID); the message says why
  2  the command line is wrong
  3  no key would be accepted: each server refused every key, refused the pin, or could not be
     reached (the table says which)
  4  no valid key file: the file is not one (the message names the line and the problem), or
     the folder holds none";

/// Exit codes of `status`.
pub const STATUS_EXIT_CODES: &str = "\
Exit codes:
  0  enrolled
  1  the state cannot be read; the message says why
  2  the command line is wrong
  3  not enrolled (yet)";

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
    /// Watch for USB sticks and enroll with the key file found (the daemon).
    ///
    /// Looks under the mount roots at start-up, then waits without polling for mount-table
    /// changes and file events, and looks again. With a key file found it opens TLS to its
    /// servers pinned to the UMS ID, presents its keys in order and stores the device
    /// certificate; faults back off and retry. Once enrolled it renews the certificate when
    /// within 30 days of expiry (at start-up and daily) and reports the device's inventory,
    /// over mutual TLS. Stops cleanly on SIGINT or SIGTERM. Log detail: RUST_LOG (default info).
    Run(RunArgs),
    /// Enroll once and exit: with a key file (or a folder read as a stick), the sticks under the
    /// mount roots, or a server and key on the command line as rmagent-register takes them.
    ///
    /// With -s HOST -a KEY, --fingerprint FP or --token PART3 names the UMS ID to pin (the
    /// device's own pin, if it has one, must agree).
    #[command(after_help = ENROLL_EXIT_CODES)]
    Enroll(EnrollArgs),
    /// Show where the agent is: phase, unit ID, server, UMS ID, certificate expiry, last error.
    #[command(after_help = STATUS_EXIT_CODES)]
    Status(StatusArgs),
    /// Forget the enrollment (state file, device key, certificates and a learned pin) so the
    /// device enrolls again. The unit ID stays. Stop the service first.
    Reset(ResetArgs),
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
    /// Check a stick before the rollout: ask each server of its key file, pinned to the file's
    /// UMS ID, whether each key would be accepted for this unit ID (or --unit-id), using none up.
    ///
    /// Prints a table per server and key (keys by number, masked): accepted, or the code
    /// enrollment would answer (key_used, key_unknown, key_inactive, key_bound_to_other_device,
    /// unit_id_conflict, rate_limited). A server whose chain is not anchored in the file's UMS ID
    /// is reported as such and gets no key. Unknown keys count against the server's guess limit,
    /// as in an enrollment. Nothing is written on this device.
    #[command(after_help = CHECK_EXIT_CODES)]
    Check(CheckArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// A folder sticks get mounted under (repeatable) [default: mount_roots from the config
    /// file, else /media, /run/media and /mnt].
    #[arg(long = "mount-root", value_name = "DIR")]
    mount_roots: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct EnrollArgs {
    /// A key file, or a folder read as a stick [default: the sticks under the mount roots].
    #[arg(conflicts_with_all = ["server", "key", "key_stdin"])]
    path: Option<PathBuf>,
    /// The server's host name or address (with -a or --key-stdin).
    #[arg(short = 's', long, value_name = "HOST", requires = "pin_given")]
    server: Option<String>,
    /// The server's port.
    #[arg(short = 'p', long, value_name = "PORT", default_value_t = onboard_protocol::routes::DEFAULT_PORT)]
    port: u16,
    /// The first-authentication key (visible to other users in the process list; prefer
    /// --key-stdin).
    #[arg(
        short = 'a',
        long,
        value_name = "KEY",
        requires = "server",
        conflicts_with = "key_stdin"
    )]
    key: Option<String>,
    /// Read the key from standard input (one line).
    #[arg(long, requires = "server")]
    key_stdin: bool,
    /// The UMS ID fingerprint to pin (64 hex digits, any separators).
    #[arg(long, value_name = "FP", group = "pin_given", conflicts_with = "token")]
    fingerprint: Option<String>,
    /// The communication token to pin: part 3 of the fingerprint, 16 hex digits.
    #[arg(long, value_name = "PART3", group = "pin_given")]
    token: Option<String>,
    /// A folder sticks get mounted under, when no PATH is given (repeatable).
    #[arg(long = "mount-root", value_name = "DIR")]
    mount_roots: Vec<PathBuf>,
    /// How many passes over the keys and servers before giving up on faults.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    tries: u32,
    /// Where sysfs is mounted.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_SYSFS_ROOT)]
    sysfs_root: PathBuf,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// Print JSON: phase, unit_id, server, ums_id_fingerprint, certificate_not_after,
    /// last_error, and more.
    #[arg(long, conflicts_with = "prometheus")]
    json: bool,
    /// Print the state as Prometheus text (phase, failure and last refusal codes, certificate
    /// expiry), for a node exporter's textfile collector; the daemon can write it itself
    /// (metrics_textfile in the config).
    #[arg(long)]
    prometheus: bool,
}

#[derive(Debug, Args)]
struct ResetArgs {
    /// Really remove the enrollment.
    #[arg(long)]
    yes: bool,
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

#[derive(Debug, Args)]
struct CheckArgs {
    /// A key file, or a folder read as a stick (its top and one level of folders).
    path: PathBuf,
    /// Print JSON: unit_id, key_files (path, fingerprint, keys masked, servers with status and
    /// per-key results), keys_accepted.
    #[arg(long)]
    json: bool,
    /// Where sysfs is mounted (to detect the unit ID when none is configured or persisted; check
    /// never persists it).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_SYSFS_ROOT)]
    sysfs_root: PathBuf,
}

/// The command line's definition, for what is generated from it outside the program: the manual
/// pages and shell completions of the packages (`cargo xtask package`). `onboard-agent` itself never
/// calls it.
pub fn command() -> clap::Command {
    Cli::command()
}

/// The whole program for the arguments `args` (the first is the program's name): parses them,
/// sets up logging, runs, and prints the whole cause chain on failure. `main` is this;
/// `onboard-demo` carries it too.
pub fn main_with(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let cli = Cli::parse_from(args);
    init_logging();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("onboard-agent: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to standard error, at the levels RUST_LOG gives as `level` and `target=level` items
/// separated by commas (default: `info,notify=warn`: the notify crate's info lines are about its
/// own bookkeeping); colours only on a terminal. A RUST_LOG that does not read that way is named
/// on standard error and the default used.
pub fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let given = std::env::var("RUST_LOG").unwrap_or_default();
    let filter = log_filter(&given)
        .parse::<Targets>()
        .unwrap_or_else(|error| {
            eprintln!(
                "onboard-agent: RUST_LOG={given:?} is not a log filter ({error}); using {DEFAULT_LOG}"
            );
            DEFAULT_LOG.parse().expect("the default log filter reads")
        });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .with(filter)
        .init();
}

/// The log filter when RUST_LOG says nothing.
const DEFAULT_LOG: &str = "info,notify=warn";

/// The filter RUST_LOG's text `given` asks for: its items without the empty ones (a trailing
/// comma; `Targets` would read an empty item as every target at trace), or [`DEFAULT_LOG`] when
/// none is left.
fn log_filter(given: &str) -> String {
    let items: Vec<&str> = given
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect();
    if items.is_empty() {
        DEFAULT_LOG.to_owned()
    } else {
        items.join(",")
    }
}

/// Runs the command; the exit code for what it found, or an error for `main` to print.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mount_roots = match &cli.command {
        Command::Run(args) => args.mount_roots.clone(),
        Command::Enroll(args) => args.mount_roots.clone(),
        _ => Vec::new(),
    };
    let pin = match &cli.command {
        Command::Enroll(args) => command_line_pin(args)?,
        _ => None,
    };
    let settings = Settings::load(Overrides {
        config_file: cli.config,
        state_dir: cli.state_dir,
        unit_id: cli.unit_id,
        mount_roots,
        // `enroll --fingerprint/--token` pins like the config file's `pin`, stick or not.
        pin: pin.clone(),
    })?;
    match cli.command {
        Command::Run(_) => run_daemon(&settings),
        Command::Enroll(args) => enroll(&settings, args, pin),
        Command::Status(args) => status(&settings, &args),
        Command::Reset(args) => reset(&settings, &args),
        Command::UnitId(args) => unit_id(&settings, &args),
        Command::Scan(args) => scan(&settings, &args),
        Command::Check(args) => check(&settings, &args),
    }
}

/// What `status --json` prints.
#[derive(Debug, serde::Serialize)]
struct StatusReport {
    phase: &'static str,
    unit_id: Option<String>,
    server: Option<String>,
    ums_id_fingerprint: Option<String>,
    certificate_not_after: Option<String>,
    last_error: Option<String>,
    enrolled_at: Option<String>,
    key_type: Option<String>,
    certificate_serial: Option<String>,
    servers: Vec<String>,
    refused_keys: usize,
    reason: Option<String>,
    backoff_attempt: Option<u32>,
    inventory_reported_at: Option<String>,
    renewed_at: Option<String>,
}

fn status(settings: &Settings, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let state = AgentState::load(&settings.state_dir)?;
    let unit_id = state
        .unit_id
        .clone()
        .or_else(|| settings.unit_id.clone())
        .or_else(|| {
            identity::read_persisted(&settings.state_dir)
                .ok()
                .flatten()
                .map(|resolved| resolved.unit_id)
        });
    let pin = settings.pin.clone().or_else(|| state.pin.clone());
    let report = StatusReport {
        phase: state.phase.name(),
        unit_id: unit_id.map(|unit| unit.to_string()),
        server: state.server.clone(),
        ums_id_fingerprint: pin.as_ref().map(|pin| match pin {
            Pin::Fingerprint(fingerprint) => fingerprint.to_string(),
            Pin::Token(token) => token.clone(),
        }),
        certificate_not_after: state.certificate_not_after.clone(),
        last_error: state.last_error.clone(),
        enrolled_at: state.enrolled_at.clone(),
        key_type: state.key_type.map(|kind| kind.to_string()),
        certificate_serial: state.certificate_serial.clone(),
        servers: state.servers.clone(),
        refused_keys: state.refused_keys.len(),
        reason: match &state.phase {
            Phase::Failed { reason } => Some(reason.to_string()),
            Phase::Orphaned { detail } => Some(format!(
                "the server no longer honours this device's certificate ({detail}); plug in a \
                 stick with a fresh key and it enrolls again, keeping its key pair (if the server \
                 answers unit_id_conflict, an administrator must first run `ums-stub devices \
                 delete UNIT_ID`)"
            )),
            _ => None,
        },
        backoff_attempt: match state.phase {
            Phase::BackingOff { attempt, .. } => Some(attempt),
            _ => None,
        },
        inventory_reported_at: state.inventory_reported_at.clone(),
        renewed_at: state.renewed_at.clone(),
    };
    if args.prometheus {
        print!("{}", crate::monitoring::exposition(&state, None));
    } else if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_owned());
        println!("Phase:           {}", report.phase);
        if let Some(reason) = &report.reason {
            println!("Reason:          {reason}");
        }
        println!("Unit ID:         {}", dash(&report.unit_id));
        println!("Server:          {}", dash(&report.server));
        println!(
            "UMS ID:          {}",
            pin.as_ref()
                .map(Pin::short)
                .unwrap_or_else(|| "-".to_owned())
        );
        println!("Enrolled at:     {}", dash(&report.enrolled_at));
        println!("Key type:        {}", dash(&report.key_type));
        println!(
            "Certificate:     {} until {}",
            dash(&report.certificate_serial),
            dash(&report.certificate_not_after)
        );
        println!("Refused keys:    {}", report.refused_keys);
        println!("Last error:      {}", dash(&report.last_error));
    }
    Ok(if state.phase.is_enrolled() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

fn reset(settings: &Settings, args: &ResetArgs) -> anyhow::Result<ExitCode> {
    if !args.yes {
        anyhow::bail!(
            "reset removes the device key, the certificates and the state in {}; run it again \
             with --yes (stop the service first)",
            settings.state_dir.display()
        );
    }
    if !settings.state_dir.exists() {
        println!("nothing to reset in {}", settings.state_dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let _lock = state::lock(&settings.state_dir)?;
    let unit_id = state::AgentState::load(&settings.state_dir)
        .ok()
        .and_then(|state| state.unit_id);
    let removed = state::remove_enrollment(&settings.state_dir)?;
    if removed.is_empty() {
        println!("nothing to reset in {}", settings.state_dir.display());
    } else {
        println!(
            "removed {} from {}; the device enrolls again with the next key file",
            removed.join(", "),
            settings.state_dir.display()
        );
        if removed.contains(&state::DEVICE_KEY_FILE) {
            // A server that enrolled this key pair answers unit_id_conflict to a new one until
            // the record is gone.
            let unit = unit_id.map_or_else(|| "UNIT_ID".to_owned(), |unit| unit.to_string());
            println!(
                "if a server enrolled this device, it still holds it with the old key pair: before \
                 the device can enroll again, an administrator must run `ums-stub devices delete \
                 {unit}` on that server"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One thread is enough for the agent: it waits far more than it works.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run_daemon(settings: &Settings) -> anyhow::Result<ExitCode> {
    let runtime = runtime()?;
    let result = runtime.block_on(async {
        let shutdown = daemon::stop_signals()?;
        daemon::run_in(settings, Environment::default(), shutdown, Observer::new()).await
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

/// What `check` ended with, as its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckExit {
    /// At least one key would be accepted by at least one server.
    Accepted = 0,
    /// No key would be accepted.
    NoneAccepted = 3,
    /// No valid key file.
    NoKeyFile = 4,
}

fn check(settings: &Settings, args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let meta = std::fs::symlink_metadata(&args.path)
        .with_context(|| format!("cannot look at {}", args.path.display()))?;
    let limits = settings.key_file_limits();
    let discovery = if meta.is_dir() {
        crate::discovery::discover(&args.path, &limits)
    } else {
        let mut discovery = crate::discovery::Discovery::default();
        match crate::discovery::read_key_file(&args.path, None, &limits) {
            Ok(found) => discovery.key_files.push(found),
            Err(problem) => discovery.problems.push(problem),
        }
        discovery
    };
    for problem in discovery.problems.iter().filter(|problem| problem.notable) {
        eprintln!("onboard-agent: skipped {problem}");
    }
    if discovery.key_files.is_empty() {
        eprintln!(
            "onboard-agent: no valid key file at {}",
            args.path.display()
        );
        return Ok(ExitCode::from(CheckExit::NoKeyFile as u8));
    }
    let unit_id = identity::resolve(
        settings.unit_id.as_ref(),
        &settings.state_dir,
        &args.sysfs_root,
        Persist::No,
    )
    .context("cannot tell which unit ID to check the keys for; give one with --unit-id")?
    .unit_id;
    let runtime = runtime()?;
    let report = runtime.block_on(async {
        let mut files = Vec::new();
        for found in &discovery.key_files {
            let mut file = crate::check::FileCheck::new(found);
            let pin = Pin::Fingerprint(found.key_file.ums_id);
            for server in &found.key_file.servers {
                file.servers.push(
                    crate::check::check_server(
                        server,
                        &pin,
                        &unit_id,
                        &found.key_file.keys,
                        crate::clock::system(),
                        &crate::check::CHECK_TIMEOUTS,
                    )
                    .await,
                );
            }
            files.push(file);
        }
        crate::check::CheckReport::new(unit_id.clone(), files)
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(ExitCode::from(if report.keys_accepted > 0 {
        CheckExit::Accepted
    } else {
        CheckExit::NoneAccepted
    } as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_drops_empty_items_and_falls_back_to_the_default() {
        let table = [
            ("", DEFAULT_LOG),
            (" , ", DEFAULT_LOG),
            ("info,", "info"),
            ("a=warn,,info", "a=warn,info"),
            (" debug , notify=warn ", "debug,notify=warn"),
        ];
        for (given, filter) in table {
            assert_eq!(log_filter(given), filter, "{given:?}");
            filter.parse::<Targets>().expect("every filter made reads");
        }
    }
}
