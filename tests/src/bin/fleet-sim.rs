//! `fleet-sim`: a simulated fleet of devices enrolling from one key file, with a progress bar and
//! a summary. See `onboard_tests::fleet`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use onboard_agent::enroll::KeySource;
use onboard_agent::lifecycle::BackoffPolicy;
use onboard_protocol::{KeyFile, KeyKind, Limits, Server};
use onboard_tests::fleet::{self, FleetConfig, Summary};
use ums_stub::rig::{FaultKind, FaultPlan, RouteClass, RouteFault};

const EXIT_CODES: &str = "\
Exit codes:
  0  every device enrolled or was refused for good, no one-time or device-bound key was used
     twice and (own server) none was burnt; with --rotation-drill-after, the devices not
     enrolled refused the new chain
  1  a key was used twice or burnt, a device gave up after faults, a connected device lost its
     session (--connect; with sessions closed by the fault plan: did not come back), or the
     simulator could not run
  2  the command line is wrong";

/// Simulates a fleet of devices enrolling from one key file: each device runs the agent's own
/// enrollment code with its own unit ID and state directory. Prints a progress bar, then the
/// devices enrolled and refused (by reason), retries, throughput, p50/p99, the bare TLS handshake
/// rate of the same server measured in the same run and the ratio to it, and a check that no key
/// was used twice.
///
/// Without --key-file it starts a server of its own (in-process, on loopback, in a temporary
/// data directory) with --keys keys of --key-type.
#[derive(Debug, Parser)]
#[command(name = "fleet-sim", version, max_term_width = 100, after_help = EXIT_CODES)]
struct Cli {
    /// How many devices.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// How many enroll at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// A key file exported by a running server (`ums-stub keys export`); its servers and UMS ID
    /// are used unless --server names another.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// The server to enroll with, HOST:PORT (with --key-file).
    #[arg(long, value_name = "HOST:PORT", requires = "key_file")]
    server: Option<String>,
    /// Keys the simulator's own server creates [default: one per device].
    #[arg(long, conflicts_with = "key_file")]
    keys: Option<usize>,
    /// The type of those keys: one-time or mass.
    #[arg(long, default_value = "one-time", conflicts_with = "key_file")]
    key_type: String,
    /// Where the devices' state directories are made [default: a temporary folder in /dev/shm
    /// when it exists, else in the system's temporary folder; removed after]. Each device fsyncs
    /// its state as a real one does; a thousand devices sharing one disk would measure that disk.
    #[arg(long, value_name = "DIR")]
    state_root: Option<PathBuf>,
    /// The unit ID of the first device, as 12 hex digits; the others follow it.
    #[arg(long, default_value = "02E0C5000000")]
    first_unit: String,
    /// The most passes over the keys one device makes on faults before it gives up.
    #[arg(long, default_value_t = 20)]
    max_passes: u32,
    /// A device's first wait after a fault, in milliseconds (doubling at each fault in a row).
    #[arg(long, value_name = "MS", default_value_t = 200)]
    backoff_base_ms: u64,
    /// A device's longest wait after faults, in milliseconds, also for a `Retry-After` asking
    /// for more.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    backoff_max_ms: u64,
    /// Bare TLS handshakes to measure the ceiling with (0: skip) [default: min(devices, 2000)].
    #[arg(long)]
    handshakes: Option<usize>,
    /// Turn the server's guess limits and per-source connection caps off (its own server only). By
    /// default it has those an administrator gets: a fleet sharing a stick makes no guesses, and
    /// stays within the caps at a concurrency of 64 or less.
    #[arg(long, conflicts_with = "key_file")]
    no_limits: bool,
    /// Then keep every enrolled device connected (the device connector, over its own
    /// certificate) until Ctrl-C or --hold, and report sessions opened and lost.
    #[arg(long)]
    connect: bool,
    /// With --connect: hold the sessions this many seconds, then close them [default: until
    /// Ctrl-C].
    #[arg(long, value_name = "SECONDS", requires = "connect")]
    hold: Option<u64>,
    /// With --connect: each device pings this often, in seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 120,
        requires = "connect"
    )]
    ping_seconds: u64,
    /// Run the simulator's own server in test-rig mode with the fault plan in FILE (JSON, as
    /// `ums_stub::rig::FaultPlan` reads it: per route class, probabilities and faults; and
    /// `close_sessions_every_seconds`). The flags below add to it.
    #[arg(long, value_name = "FILE", conflicts_with = "key_file")]
    faults: Option<PathBuf>,
    /// The seed of the fault plan's draws (overrides the plan's): the same seed gives the same
    /// faults in the same order.
    #[arg(long, value_name = "N", conflicts_with = "key_file")]
    seed: Option<u64>,
    /// The share of enrollment answers lost after the server committed them (0 to 1).
    #[arg(long, value_name = "P", conflicts_with = "key_file")]
    lost_answers: Option<f64>,
    /// The share of enrollments refused 503 `unavailable` with `Retry-After: 1` (0 to 1).
    #[arg(long, value_name = "P", conflicts_with = "key_file")]
    unavailable: Option<f64>,
    /// Close every connector session this often, in seconds (with --connect: the devices must
    /// all come back).
    #[arg(long, value_name = "SECONDS", conflicts_with = "key_file")]
    close_sessions_every: Option<u64>,
    /// Replace the UMS ID the server presents once this many devices are enrolled (a rotation
    /// drill): the others must refuse its chain and burn no key.
    #[arg(long, value_name = "DEVICES", conflicts_with = "key_file")]
    rotation_drill_after: Option<u64>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

impl Cli {
    /// The fault plan the options ask for, if any.
    fn fault_plan(&self) -> anyhow::Result<Option<FaultPlan>> {
        let mut plan = match &self.faults {
            Some(path) => {
                let text = std::fs::read(path)
                    .with_context(|| format!("--faults: cannot read {}", path.display()))?;
                serde_json::from_slice::<FaultPlan>(&text)
                    .with_context(|| format!("--faults: {} is not a fault plan", path.display()))?
            }
            None => FaultPlan::default(),
        };
        let enrollment = plan.routes.entry(RouteClass::Enrollment).or_default();
        if let Some(probability) = self.lost_answers {
            enrollment.push(RouteFault {
                probability,
                fault: FaultKind::DropAfterCommit,
            });
        }
        if let Some(probability) = self.unavailable {
            enrollment.push(RouteFault {
                probability,
                fault: FaultKind::Refuse {
                    status: 503,
                    code: None,
                    retry_after_seconds: Some(1),
                },
            });
        }
        if enrollment.is_empty() {
            plan.routes.remove(&RouteClass::Enrollment);
        }
        if self.close_sessions_every.is_some() {
            plan.close_sessions_every_seconds = self.close_sessions_every;
        }
        if let Some(seed) = self.seed {
            plan.seed = seed;
        }
        plan.validate().context("the fault plan")?;
        let rig = self.faults.is_some() || !plan.is_off() || self.rotation_drill_after.is_some();
        Ok(rig.then_some(plan))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fleet-sim: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(simulate(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("fleet-sim: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn simulate(cli: Cli) -> anyhow::Result<ExitCode> {
    let first_unit = u64::from_str_radix(&cli.first_unit, 16)
        .ok()
        .filter(|_| cli.first_unit.len() == 12)
        .context("--first-unit: expected 12 hex digits")?;
    let temp = fleet::state_folder("fleet-sim-").context("cannot make a temporary folder")?;
    let state_root = cli
        .state_root
        .clone()
        .unwrap_or_else(|| temp.path().join("devices"));
    let plan = cli.fault_plan()?;
    let mut own_server = None;
    let source = match &cli.key_file {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let file = KeyFile::parse(&bytes, &Limits::default())
                .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
            let mut source = KeySource::from_key_file(path.display().to_string(), &file);
            if let Some(server) = &cli.server {
                let (host, port) = server
                    .rsplit_once(':')
                    .context("--server: expected HOST:PORT")?;
                let port = port.parse().context("--server: the port is not a number")?;
                source.servers = vec![Server::new(host.trim_matches(['[', ']']), port)?];
            }
            source
        }
        None => {
            let kind: KeyKind = cli
                .key_type
                .parse()
                .map_err(|_| anyhow::anyhow!("--key-type: expected one-time or mass"))?;
            let limits = if cli.no_limits {
                fleet::ServerLimits::Off
            } else {
                fleet::ServerLimits::Defaults
            };
            let (running, source) = fleet::own_server_with_faults(
                temp.path(),
                kind,
                cli.keys.unwrap_or(cli.devices),
                limits,
                plan.clone(),
            )
            .await?;
            eprintln!(
                "fleet-sim: started a server on {} (UMS ID {}) with {} {kind} key(s), guess limits {}",
                running.addr(),
                running.ums_id_fingerprint().short(),
                source.keys().len(),
                if cli.no_limits {
                    "off"
                } else {
                    "at their defaults"
                }
            );
            if let Some(plan) = &plan {
                eprintln!(
                    "fleet-sim: test-rig mode, fault plan {}",
                    serde_json::to_string(plan)?
                );
            }
            own_server = Some(running);
            source
        }
    };
    let first = source
        .servers
        .first()
        .context("the key file names no server")?;
    let addr = tokio::net::lookup_host((first.host(), first.port()))
        .await
        .with_context(|| format!("cannot resolve {first}"))?
        .next()
        .with_context(|| format!("{first} resolves to no address"))?;

    let handshakes = cli.handshakes.unwrap_or(cli.devices.min(2000));
    let handshake_rate = if handshakes > 0 {
        eprintln!(
            "fleet-sim: measuring {handshakes} bare TLS handshakes at concurrency {}",
            cli.concurrency
        );
        Some(fleet::handshake_rate(addr, source.ums_id.clone(), handshakes, cli.concurrency).await?)
    } else {
        None
    };
    eprintln!(
        "fleet-sim: {} devices, concurrency {}, from {} key(s) against {}",
        cli.devices,
        cli.concurrency,
        source.keys().len(),
        source
            .servers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let config = FleetConfig {
        devices: cli.devices,
        concurrency: cli.concurrency,
        source: source.clone(),
        state_root,
        first_unit,
        backoff: BackoffPolicy {
            base: Duration::from_millis(cli.backoff_base_ms.max(1)),
            max: Duration::from_millis(cli.backoff_max_ms.max(cli.backoff_base_ms).max(1)),
        },
        max_passes: cli.max_passes,
        progress: !cli.json,
    };
    // The rotation drill runs beside the fleet, on the server's own count of devices; it is
    // dropped if the fleet ends first.
    let fleet_done = tokio::sync::Notify::new();
    let drill = async {
        match (cli.rotation_drill_after, own_server.as_ref()) {
            (Some(after), Some(running)) => tokio::select! {
                drilled = fleet::rotation_drill_after(running, after) => Some(drilled),
                () = fleet_done.notified() => None,
            },
            _ => None,
        }
    };
    let fleet = async {
        let ran = fleet::run(&config).await;
        fleet_done.notify_one();
        ran
    };
    let ((runs, elapsed), drilled) = tokio::join!(fleet, drill);
    let drilled = drilled.transpose()?;
    if let Some(fingerprint) = &drilled {
        eprintln!(
            "fleet-sim: rotation drill: the server presented a chain under UMS ID {} mid-run",
            fingerprint.short()
        );
    }
    let summary = Summary::of(&runs, &source, elapsed);
    // Why devices gave up, for the first few: what a person looks at first.
    for run in &runs {
        if let fleet::Outcome::GaveUp(detail) | fleet::Outcome::PinRefused(detail) = &run.outcome {
            eprintln!("fleet-sim: {} gave up: {detail}", run.unit_id);
        }
    }
    let ratio = handshake_rate.map(|rate| summary.enrollments_per_second / rate);
    // With its own server, the server's own count of key uses is checked too.
    let server_check = match own_server.as_ref() {
        Some(running) => Some(fleet::server_check(running).await?),
        None => None,
    };
    let closing_sessions = plan
        .as_ref()
        .is_some_and(|plan| plan.close_sessions_every_seconds.is_some());
    let held = if cli.connect {
        Some(hold_connected(&cli, &config, &runs, closing_sessions).await?)
    } else {
        None
    };
    let lost = held.as_ref().map_or(0, |(lost, _)| *lost);
    if cli.json {
        let mut value = serde_json::to_value(&summary)?;
        if let Some((_, report)) = &held {
            value["connector"] = report.clone();
        }
        value["handshakes_per_second"] = serde_json::json!(handshake_rate);
        value["ratio_to_handshakes"] = serde_json::json!(ratio);
        if let Some(check) = server_check {
            value["server_devices"] = serde_json::json!(check.devices);
            value["server_keys_serving_two_devices"] =
                serde_json::json!(check.keys_serving_two_devices);
            value["server_keys_burnt"] = serde_json::json!(check.keys_burnt);
        }
        if let Some(plan) = &plan {
            value["fault_plan"] = serde_json::to_value(plan)?;
        }
        value["rotation_drill"] = serde_json::json!(drilled.map(|f| f.to_string()));
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", summary.to_text());
        if let (Some(rate), Some(ratio)) = (handshake_rate, ratio) {
            println!("bare TLS handshakes {rate:.0}/s; enrollments at {ratio:.2} of that");
        }
        if let Some(check) = server_check {
            println!(
                "server: {} device(s) recorded, {} one-time key(s) serving more than one device, \
                 {} burnt",
                check.devices, check.keys_serving_two_devices, check.keys_burnt
            );
        }
        if let Some((lost, report)) = &held {
            println!(
                "connector: {} device(s) connected, {lost} session(s) lost while holding, {} refused",
                report["devices_connected"], report["devices_refused"]
            );
        }
    }
    if let Some(running) = own_server {
        running.stop().await?;
    }
    // Under faults the devices' own account of their keys may name a key twice (a retry after
    // a lost answer is answered `repeated` through whichever key of its request): the server's
    // database decides then.
    let twice = match server_check {
        Some(check) if plan.is_some() => check.keys_serving_two_devices > 0,
        Some(check) => check.keys_serving_two_devices > 0 || !summary.keys_used_twice.is_empty(),
        None => !summary.keys_used_twice.is_empty(),
    };
    let burnt = server_check.is_some_and(|check| check.keys_burnt > 0);
    // Refusing a chain is right only while the drill presents one under another UMS ID.
    let pin_refused = summary.pin_refused > 0 && drilled.is_none();
    Ok(
        if twice || burnt || pin_refused || summary.gave_up > 0 || lost > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        },
    )
}

/// Connects every enrolled device and holds the sessions (--connect); how many were lost (or
/// never opened), and the figures.
///
/// With `closing_sessions` (the fault plan closes every session now and then), sessions lost
/// are expected: what counts is that every device is connected again after the hold. The
/// devices then reconnect with the fleet's short backoff.
async fn hold_connected(
    cli: &Cli,
    config: &FleetConfig,
    runs: &[fleet::DeviceRun],
    closing_sessions: bool,
) -> anyhow::Result<(usize, serde_json::Value)> {
    let _ = ums_stub::connections::raise_file_limit();
    let mut settings = onboard_agent::enrolled::connector::ConnectorSettings {
        ping: Duration::from_secs(cli.ping_seconds.max(1)),
        ..Default::default()
    };
    if closing_sessions {
        settings.backoff = config.backoff;
    }
    let started = std::time::Instant::now();
    let connected = fleet::connect(config, runs, settings).await?;
    let all = connected
        .wait_all_open(Duration::from_secs(120), !cli.json)
        .await;
    eprintln!(
        "fleet-sim: {}/{} devices connected in {:.1} s{}",
        connected.open(),
        connected.devices,
        started.elapsed().as_secs_f64(),
        if all { "" } else { " (not all within 120 s)" }
    );
    let (opened, open) = (connected.opened(), connected.open());
    match cli.hold {
        Some(seconds) => {
            eprintln!("fleet-sim: holding the sessions for {seconds} s");
            tokio::time::sleep(Duration::from_secs(seconds)).await;
        }
        None => {
            eprintln!("fleet-sim: holding the sessions; Ctrl-C closes them");
            tokio::signal::ctrl_c().await?;
        }
    }
    let lost = connected.lost();
    let refused = connected.refused();
    // Sessions closed by the plan: every device must come back.
    let back = if closing_sessions {
        let back = connected
            .wait_all_open(Duration::from_secs(60), false)
            .await;
        eprintln!(
            "fleet-sim: {}/{} devices connected again after the hold",
            connected.open(),
            connected.devices
        );
        Some(back)
    } else {
        None
    };
    let report = serde_json::json!({
        "devices_connected": open,
        "sessions_opened": connected.opened(),
        "sessions_lost_while_holding": lost,
        "reconnections_while_holding": connected.opened() - opened,
        "devices_refused": refused,
        "devices_connected_after_hold": back.map(|_| connected.open()),
    });
    connected.stop().await;
    let failed = match back {
        Some(back) => usize::from(!all) + usize::from(!back) + refused,
        None => lost + usize::from(!all),
    };
    Ok((failed, report))
}
