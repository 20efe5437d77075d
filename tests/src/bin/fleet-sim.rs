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
use ums_stub::store::PageRequest;

const EXIT_CODES: &str = "\
Exit codes:
  0  every device enrolled or was refused for good, and no one-time or device-bound key was
     used twice
  1  a key was used twice, a device gave up after faults, a connected device lost its session
     (--connect), or the simulator could not run
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
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
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
            let (running, source) =
                fleet::own_server(temp.path(), kind, cli.keys.unwrap_or(cli.devices), limits)
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
            base: Duration::from_millis(200),
            max: Duration::from_secs(5),
        },
        max_passes: cli.max_passes,
        progress: !cli.json,
    };
    let (runs, elapsed) = fleet::run(&config).await;
    let summary = Summary::of(&runs, &source, elapsed);
    let ratio = handshake_rate.map(|rate| summary.enrollments_per_second / rate);
    // With its own server, the server's own count of key uses is checked too.
    let server_check = match own_server.as_ref() {
        Some(running) => Some(server_key_uses(running).await?),
        None => None,
    };
    let held = if cli.connect {
        Some(hold_connected(&cli, &config, &runs).await?)
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
        if let Some((used, over)) = server_check {
            value["server_devices"] = serde_json::json!(used);
            value["server_keys_serving_two_devices"] = serde_json::json!(over);
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", summary.to_text());
        if let (Some(rate), Some(ratio)) = (handshake_rate, ratio) {
            println!("bare TLS handshakes {rate:.0}/s; enrollments at {ratio:.2} of that");
        }
        if let Some((used, over)) = server_check {
            println!(
                "server: {used} device(s) recorded, {over} one-time key(s) serving more than one device"
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
    let twice =
        !summary.keys_used_twice.is_empty() || server_check.is_some_and(|(_, over)| over > 0);
    Ok(if twice || summary.gave_up > 0 || lost > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Connects every enrolled device and holds the sessions (--connect); how many were lost (or
/// never opened), and the figures.
async fn hold_connected(
    cli: &Cli,
    config: &FleetConfig,
    runs: &[fleet::DeviceRun],
) -> anyhow::Result<(usize, serde_json::Value)> {
    let _ = ums_stub::connections::raise_file_limit();
    let settings = onboard_agent::enrolled::connector::ConnectorSettings {
        ping: Duration::from_secs(cli.ping_seconds.max(1)),
        ..Default::default()
    };
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
    let report = serde_json::json!({
        "devices_connected": open,
        "sessions_opened": connected.opened(),
        "sessions_lost_while_holding": lost,
        "reconnections_while_holding": connected.opened() - opened,
        "devices_refused": connected.refused(),
    });
    connected.stop().await;
    Ok((lost + usize::from(!all), report))
}

/// The server's own count, from its device records: devices enrolled, and one-time or
/// device-bound keys that more than one device enrolled with (the usage count cannot show that:
/// the consume guard caps it at 1).
async fn server_key_uses(running: &ums_stub::serve::Running) -> anyhow::Result<(u64, usize)> {
    let devices = running
        .shared()
        .stub
        .store
        .devices(&PageRequest::all())
        .await?;
    let mut per_key = std::collections::HashMap::<i64, usize>::new();
    for device in &devices {
        if let (Some(key), false) = (device.key_id, device.key_kind == KeyKind::MassDeployment) {
            *per_key.entry(key).or_default() += 1;
        }
    }
    let shared = per_key.values().filter(|&&count| count > 1).count();
    Ok((devices.len() as u64, shared))
}
