//! The command line: argument definitions and what each command prints.
//!
//! Exit codes: 0 success; 1 the command failed (the message says why); 2 the command line is wrong
//! (clap's usage errors).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use onboard_protocol::{Format, KeyKind, Server, UnitId};
use time::format_description::well_known::Rfc3339;

use crate::config::{DEFAULT_DATA_DIR, Settings};
use crate::files;
use crate::keys::KeyView;
use crate::store::{KeyFilter, KeyId, KeyStatus};
use crate::stub::Stub;
use crate::ums_id::UmsId;
use crate::unit_ids;

/// The UMS stub: the companion server devices onboard to.
///
/// It owns the UMS ID (the key pair and CA certificate devices pin), creates and manages
/// first-authentication keys, and exports them for USB sticks. State lives in the data directory:
/// the database (ums-stub.db), the UMS ID (ums-id/), and an optional config file (ums-stub.toml).
#[derive(Debug, Parser)]
#[command(name = "ums-stub", version, max_term_width = 100)]
pub struct Cli {
    /// The data directory (created at first use, mode 0700).
    #[arg(long, global = true, env = "UMS_STUB_DATA_DIR", default_value = DEFAULT_DATA_DIR, value_name = "DIR")]
    pub data_dir: PathBuf,

    /// A TOML config file [default: DIR/ums-stub.toml when it exists].
    #[arg(long, global = true, env = "UMS_STUB_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show, export, back up or restore the UMS ID.
    #[command(subcommand)]
    UmsId(UmsIdCommand),
    /// Create, list, edit, (de)activate, delete and export first-authentication keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Serve EST enrollment over HTTPS until SIGINT or SIGTERM.
    ///
    /// Devices fetch the UMS ID chain from /.well-known/est/cacerts, enroll at
    /// /.well-known/est/simpleenroll with HTTP Basic (user = unit ID, password = key) and a base64
    /// PKCS#10 body, and renew at /.well-known/est/simplereenroll over mutual TLS. The TLS
    /// certificate is issued by the UMS ID for the --host names and kept in DIR/tls/. Readiness is
    /// reported to systemd (Type=notify) once the port is bound.
    Serve(ServeArgs),
    /// List or delete enrolled devices.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// Print the audit log: key changes and enrollment attempts (never a key).
    Audit {
        /// Only entries at or after this time (RFC 3339, for example 2026-11-22T10:00:00Z).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Print JSON: an array of {at, event, unit_id, key_id, source, outcome, detail}.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// The address and port to listen on [default: listen in the config, or 0.0.0.0:8443].
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<std::net::SocketAddr>,
    /// A host name or IP address devices reach this server by, for the TLS certificate; repeat for
    /// more [default: hosts in the config, or public_host].
    #[arg(long = "host", value_name = "NAME")]
    hosts: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum DevicesCommand {
    /// List enrolled devices: unit ID, what each last reported about itself (host name, OS and
    /// version, kernel, CPU, memory, NICs; "-" before its first report), when it was last seen,
    /// when it enrolled, key type used, certificate serial and expiry.
    List {
        /// Print JSON: an array of {unit_id, serial, not_after, key_type, key_id, enrolled_at,
        /// last_seen, inventory}, inventory null or {host_name, os_name, os_version, kernel,
        /// cpu_model, memory_bytes, nics: [{name, mac}]}.
        #[arg(long)]
        json: bool,
    },
    /// Forget a device so its unit ID can enroll again (after a reset, or for a replaced device).
    Delete {
        /// The device's unit ID.
        unit_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum UmsIdCommand {
    /// Print the UMS ID fingerprint: whole, in four parts, short, and when it was created.
    Show {
        /// Print JSON: fingerprint, parts, short, created_at.
        #[arg(long)]
        json: bool,
    },
    /// Write the UMS ID certificate as PEM (a .crt file) for devices and tools to trust.
    Export {
        /// The file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace the file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Write the whole UMS ID (private key included, mode 0600) to move it to another server.
    Backup {
        /// The file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace the file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Install a UMS ID from a backup.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// Replace a different UMS ID already in place (devices pinning it will refuse this server,
        /// and keys stored under it become unreadable).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create keys.
    #[command(subcommand)]
    Create(CreateCommand),
    /// List keys as the UMS does: Unit ID, Key (masked unless --show), Status, Usage date, Usage
    /// count, Type, Comment.
    List(ListArgs),
    /// Change a key's comment.
    Edit {
        /// The key.
        id: KeyId,
        /// The new comment.
        #[arg(long)]
        comment: String,
    },
    /// Activate keys (a used one-time key stays used).
    Activate {
        /// The keys.
        #[arg(required = true)]
        ids: Vec<KeyId>,
    },
    /// Deactivate keys: devices presenting them are refused.
    Deactivate {
        /// The keys.
        #[arg(required = true)]
        ids: Vec<KeyId>,
    },
    /// Delete keys.
    Delete {
        /// The keys.
        #[arg(required = true)]
        ids: Vec<KeyId>,
    },
    /// Export keys to a file for a USB stick (mode 0600), with the servers and the UMS ID
    /// fingerprint.
    Export(ExportArgs),
}

#[derive(Debug, Subcommand)]
enum CreateCommand {
    /// One-time keys any one device may use.
    OneTime {
        /// How many.
        #[arg(long, value_name = "N")]
        quantity: usize,
        /// A comment for all of them.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// One-time keys bound to devices, one per unit ID.
    DeviceBound {
        /// A unit ID (a MAC in any common spelling, or a UD Pocket serial); repeat for more.
        #[arg(
            long = "unit-id",
            value_name = "ID",
            required_unless_present = "import",
            conflicts_with = "import"
        )]
        unit_ids: Vec<String>,
        /// A CSV file with one unit ID per row in the first column (header optional, ; or ,).
        #[arg(long, value_name = "FILE.csv")]
        import: Option<PathBuf>,
        /// A comment for all of them.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// A mass-deployment key any number of devices may use.
    Mass {
        /// Use this password instead of a random key (no other key may have it). Other local
        /// users can read a command line: prefer --password-stdin.
        #[arg(long)]
        password: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long, conflicts_with = "password")]
        password_stdin: bool,
        /// A comment.
        #[arg(long, default_value = "")]
        comment: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TypeArg {
    OneTime,
    DeviceBound,
    Mass,
}

impl From<TypeArg> for KeyKind {
    fn from(arg: TypeArg) -> Self {
        match arg {
            TypeArg::OneTime => KeyKind::OneTime,
            TypeArg::DeviceBound => KeyKind::DeviceBound,
            TypeArg::Mass => KeyKind::MassDeployment,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StatusArg {
    Active,
    Inactive,
    Used,
}

impl From<StatusArg> for KeyStatus {
    fn from(arg: StatusArg) -> Self {
        match arg {
            StatusArg::Active => KeyStatus::Active,
            StatusArg::Inactive => KeyStatus::Inactive,
            StatusArg::Used => KeyStatus::Used,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Xml,
    Html,
    Text,
}

impl From<FormatArg> for Format {
    fn from(arg: FormatArg) -> Self {
        match arg {
            FormatArg::Xml => Format::Xml,
            FormatArg::Html => Format::Html,
            FormatArg::Text => Format::Text,
        }
    }
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Show the keys instead of masking them.
    #[arg(long)]
    show: bool,
    /// Only keys of this type.
    #[arg(long = "type", value_enum)]
    kind: Option<TypeArg>,
    /// Only keys with this status.
    #[arg(long, value_enum)]
    status: Option<StatusArg>,
    /// Only keys bound to this unit ID.
    #[arg(long = "unit-id", value_name = "ID")]
    unit_id: Option<String>,
    /// Print JSON: an array of {id, type, key, unit_id, status, usage_count, usage_date, comment}.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// The file format.
    #[arg(long, value_enum, default_value = "xml")]
    format: FormatArg,
    /// The file to write (for example /media/stick/icg.xml).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// A server devices should contact, HOST or HOST:PORT; repeat for more, in order
    /// [default: the configured public host, port 8443].
    #[arg(long = "server", value_name = "HOST:PORT")]
    servers: Vec<String>,
    /// Replace the file if it exists.
    #[arg(long)]
    force: bool,
    /// The keys to export [default: all active keys].
    ids: Vec<KeyId>,
}

/// Runs a parsed command line.
/// The whole program for the arguments `args` (the first is the program's name): parses them,
/// logs to standard error (the journal, under systemd; RUST_LOG adjusts the level), runs, and
/// prints the whole cause chain on failure. `main` is this; `onboard-demo` carries it too.
pub fn main_with(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let cli = Cli::parse_from(args);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ums-stub: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command; the exit code, or an error for [`main_with`] to print.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(cli.data_dir, cli.config.as_deref())?;
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::UmsId(command) => ums_id(command, settings, &mut out)?,
        Command::Keys(command) => keys(command, Stub::open(settings)?, &mut out)?,
        Command::Serve(args) => serve(settings, args)?,
        Command::Devices(command) => devices(command, Stub::open(settings)?, &mut out)?,
        Command::Audit { since, json } => audit(Stub::open(settings)?, since, json, &mut out)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn serve(mut settings: Settings, args: ServeArgs) -> anyhow::Result<()> {
    if let Some(listen) = args.listen {
        settings.listen = listen;
    }
    if !args.hosts.is_empty() {
        settings.hosts = args.hosts;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listen = settings.listen;
        let (shared, tls) = crate::serve::prepare(settings)?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let bound = listener.local_addr()?;
        tracing::info!(
            listen = %bound,
            hosts = ?shared.stub.settings.hosts,
            ums_id = %shared.stub.ums_id.fingerprint().short(),
            "serving EST enrollment"
        );
        // Printed for scripts and tests that listen on port 0.
        println!("listening on {bound}");
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        crate::serve::run(shared, listener, tls, shutdown_signal()).await?;
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        tracing::info!("stopped");
        Ok(())
    })
}

/// Completes on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => tracing::info!("SIGINT received"),
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
    }
}

fn devices(command: DevicesCommand, stub: Stub, out: &mut impl Write) -> anyhow::Result<()> {
    use crate::store::Store;
    match command {
        DevicesCommand::List { json } => {
            let devices = stub.store.devices()?;
            let time = |t: time::OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
            if json {
                let rows: Vec<serde_json::Value> = devices
                    .iter()
                    .map(|d| {
                        serde_json::json!({
                            "unit_id": d.unit_id.as_str(),
                            "serial": d.serial,
                            "not_after": time(d.not_after),
                            "key_type": d.key_kind.as_str(),
                            "key_id": d.key_id,
                            "enrolled_at": time(d.enrolled_at),
                            "last_seen": time(d.last_seen),
                            "inventory": d.inventory.as_deref().and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok()),
                        })
                    })
                    .collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
            } else {
                let mut table = vec![
                    [
                        "Unit ID",
                        "Host name",
                        "OS",
                        "Kernel",
                        "CPU",
                        "Memory",
                        "Last seen",
                        "Enrolled at",
                        "Key type",
                        "Certificate serial",
                        "Expires",
                        "NICs",
                    ]
                    .map(str::to_owned),
                ];
                for d in &devices {
                    let [host, os, kernel, cpu, memory, nics] = inventory_cells(d);
                    table.push([
                        d.unit_id.to_string(),
                        host,
                        os,
                        kernel,
                        cpu,
                        memory,
                        time(d.last_seen),
                        time(d.enrolled_at),
                        d.key_kind.as_str().to_owned(),
                        d.serial.clone(),
                        time(d.not_after),
                        nics,
                    ]);
                }
                print_table(out, &table)?;
                writeln!(
                    out,
                    "{} {}",
                    devices.len(),
                    if devices.len() == 1 {
                        "device"
                    } else {
                        "devices"
                    }
                )?;
            }
        }
        DevicesCommand::Delete { unit_id } => {
            let unit_id: UnitId = unit_id.parse()?;
            stub.store.delete_device(&unit_id, "cli")?;
            writeln!(
                out,
                "Deleted device {unit_id}; it may enroll again with a new key."
            )?;
        }
    }
    Ok(())
}

/// Host name, OS and version, kernel, CPU, memory and NICs a device last reported, as table
/// cells; `-` where it reported nothing (or has not reported yet).
fn inventory_cells(device: &crate::store::DeviceRecord) -> [String; 6] {
    let none = || "-".to_owned();
    let Some(report) = device
        .inventory
        .as_deref()
        .and_then(|text| serde_json::from_str::<onboard_protocol::Inventory>(text).ok())
    else {
        return std::array::from_fn(|_| none());
    };
    let os = [report.os_name.as_deref(), report.os_version.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let nics = report
        .nics
        .iter()
        .map(|nic| format!("{} {}", nic.name, nic.mac))
        .collect::<Vec<_>>()
        .join(", ");
    let or_none = |text: String| if text.is_empty() { none() } else { text };
    [
        report.host_name,
        or_none(os),
        report.kernel.unwrap_or_else(none),
        report.cpu_model.unwrap_or_else(none),
        memory(report.memory_bytes),
        or_none(nics),
    ]
}

/// Bytes for people: `7.6 GiB`, `512 MiB`; `-` for 0 (unknown).
fn memory(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    match bytes {
        0 => "-".to_owned(),
        b if b >= GIB => format!("{:.1} GiB", b as f64 / GIB as f64),
        b => format!("{} MiB", b.div_ceil(MIB)),
    }
}

fn audit(
    stub: Stub,
    since: Option<String>,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    use crate::store::Store;
    let since = since
        .map(|text| {
            time::OffsetDateTime::parse(&text, &Rfc3339)
                .with_context(|| format!("--since {text:?} is not an RFC 3339 time"))
        })
        .transpose()?;
    let entries = stub.store.audit(since)?;
    let time = |t: time::OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
    if json {
        let rows: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "at": time(e.at),
                    "event": e.event,
                    "unit_id": e.unit_id,
                    "key_id": e.key_id,
                    "source": e.source,
                    "outcome": e.outcome,
                    "detail": e.detail,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    let mut table = vec![[
        "Time".to_owned(),
        "Event".to_owned(),
        "Unit ID".to_owned(),
        "Key ID".to_owned(),
        "Source".to_owned(),
        "Outcome".to_owned(),
        "Detail".to_owned(),
    ]];
    for e in &entries {
        table.push([
            time(e.at),
            e.event.clone(),
            e.unit_id.clone().unwrap_or_default(),
            e.key_id.map(|id| id.to_string()).unwrap_or_default(),
            e.source.clone(),
            e.outcome.clone(),
            e.detail.clone(),
        ]);
    }
    print_table(out, &table)
}

/// Prints rows as columns padded to their widest cell.
fn print_table<const N: usize>(out: &mut impl Write, table: &[[String; N]]) -> anyhow::Result<()> {
    let mut widths = [0usize; N];
    for row in table {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut buffer = std::io::BufWriter::new(out);
    for row in table {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        writeln!(buffer, "{}", line.join("  ").trim_end())?;
    }
    buffer.flush()?;
    Ok(())
}

fn ums_id(command: UmsIdCommand, settings: Settings, out: &mut impl Write) -> anyhow::Result<()> {
    if let UmsIdCommand::Restore { file, force } = command {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let restored = UmsId::from_backup(&text, &file)?;
        // With --force a damaged identity in place is replaced, not reported.
        let before = match UmsId::load(&settings.data_dir) {
            Ok(existing) => existing.map(|id| id.fingerprint()),
            Err(_) if force => None,
            Err(error) => return Err(error.into()),
        };
        restored.install(&settings.data_dir, force)?;
        if before == Some(restored.fingerprint()) {
            writeln!(
                out,
                "The UMS ID {} is already in place; nothing changed.",
                restored.fingerprint().short()
            )?;
        } else {
            writeln!(out, "Restored UMS ID {}.", restored.fingerprint().short())?;
        }
        return Ok(());
    }
    let stub = Stub::open(settings)?;
    let id = &stub.ums_id;
    match command {
        UmsIdCommand::Show { json } => {
            let fingerprint = id.fingerprint();
            let created_at = id.created_at().format(&Rfc3339)?;
            if json {
                let value = serde_json::json!({
                    "fingerprint": fingerprint.to_string(),
                    "parts": fingerprint.parts(),
                    "short": fingerprint.short(),
                    "created_at": created_at,
                });
                writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
            } else {
                writeln!(out, "UMS ID fingerprint (SHA-256): {fingerprint}")?;
                for (index, part) in fingerprint.parts().iter().enumerate() {
                    writeln!(out, "  Part {}: {part}", index + 1)?;
                }
                writeln!(out, "Short: {}", fingerprint.short())?;
                writeln!(out, "Created: {created_at}")?;
            }
        }
        UmsIdCommand::Export { out: path, force } => {
            files::write_private(&path, id.certificate_pem().as_bytes(), force)?;
            writeln!(
                out,
                "Wrote the UMS ID certificate {} to {}.",
                id.fingerprint().short(),
                path.display()
            )?;
        }
        UmsIdCommand::Backup { out: path, force } => {
            files::write_private(&path, id.backup().as_bytes(), force)?;
            writeln!(
                out,
                "Wrote the UMS ID {} with its private key to {} (mode 0600): keep it secret.",
                id.fingerprint().short(),
                path.display()
            )?;
        }
        UmsIdCommand::Restore { .. } => unreachable!("handled above"),
    }
    Ok(())
}

fn keys(command: KeysCommand, stub: Stub, out: &mut impl Write) -> anyhow::Result<()> {
    let admin = stub.keys();
    match command {
        KeysCommand::Create(CreateCommand::OneTime { quantity, comment }) => {
            let bar = progress(quantity as u64, "creating one-time keys");
            let ids = admin.create_one_time(quantity, &comment, &|done| bar.set_position(done))?;
            bar.finish_and_clear();
            writeln!(
                out,
                "Created {} one-time {}: {}.",
                ids.len(),
                plural(ids.len()),
                id_ranges(&ids)
            )?;
        }
        KeysCommand::Create(CreateCommand::DeviceBound {
            unit_ids,
            import,
            comment,
        }) => {
            let unit_ids: Vec<UnitId> = match import {
                Some(path) => {
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    unit_ids::from_csv(&bytes).with_context(|| format!("{}", path.display()))?
                }
                None => unit_ids::check(
                    unit_ids
                        .iter()
                        .enumerate()
                        .map(|(i, text)| (i + 1, text.as_str())),
                )
                .context("--unit-id (line = position on the command line)")?,
            };
            let bar = progress(unit_ids.len() as u64, "creating device-bound keys");
            let ids =
                admin.create_device_bound(&unit_ids, &comment, &|done| bar.set_position(done))?;
            bar.finish_and_clear();
            writeln!(
                out,
                "Created {} device-bound {}: {}.",
                ids.len(),
                plural(ids.len()),
                id_ranges(&ids)
            )?;
        }
        KeysCommand::Create(CreateCommand::Mass {
            password,
            password_stdin,
            comment,
        }) => {
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("cannot read the password from standard input")?;
                Some(line.trim_end_matches(['\r', '\n']).to_owned())
            } else {
                password
            };
            let (id, key) = admin.create_mass(password.as_deref(), &comment)?;
            writeln!(
                out,
                "Created mass-deployment key {id}: {key} (keys list --show reveals it)."
            )?;
        }
        KeysCommand::List(args) => list(&stub, args, out)?,
        KeysCommand::Edit { id, comment } => {
            admin.edit_comment(id, &comment)?;
            writeln!(out, "Key {id}: comment set.")?;
        }
        KeysCommand::Activate { ids } => {
            admin.activate(&ids)?;
            writeln!(out, "Activated {}.", id_ranges(&ids))?;
        }
        KeysCommand::Deactivate { ids } => {
            admin.deactivate(&ids)?;
            writeln!(out, "Deactivated {}.", id_ranges(&ids))?;
        }
        KeysCommand::Delete { ids } => {
            admin.delete(&ids)?;
            writeln!(out, "Deleted {}.", id_ranges(&ids))?;
        }
        KeysCommand::Export(args) => export(&stub, args, out)?,
    }
    Ok(())
}

fn list(stub: &Stub, args: ListArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let unit_id = args
        .unit_id
        .map(|text| text.parse::<UnitId>())
        .transpose()
        .context("--unit-id")?;
    let filter = KeyFilter {
        kind: args.kind.map(KeyKind::from),
        status: args.status.map(KeyStatus::from),
        unit_id,
        ids: None,
    };
    let keys = stub.keys().list(&filter)?;
    let shown = |view: &KeyView| {
        if args.show {
            view.key.expose_secret().to_owned()
        } else {
            view.key.masked()
        }
    };
    let date = |view: &KeyView| view.usage_date.and_then(|d| d.format(&Rfc3339).ok());
    if args.json {
        let rows: Vec<serde_json::Value> = keys
            .iter()
            .map(|view| {
                serde_json::json!({
                    "id": view.id,
                    "type": view.kind.as_str(),
                    "key": shown(view),
                    "unit_id": view.unit_id.as_ref().map(UnitId::as_str),
                    "status": view.status.as_str(),
                    "usage_count": view.usage_count,
                    "usage_date": date(view),
                    "comment": view.comment,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    let mut table = vec![[
        "ID".to_owned(),
        "Unit ID".to_owned(),
        "Key".to_owned(),
        "Status".to_owned(),
        "Usage date".to_owned(),
        "Usage count".to_owned(),
        "Type".to_owned(),
        "Comment".to_owned(),
    ]];
    for view in &keys {
        table.push([
            view.id.to_string(),
            view.unit_id
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            shown(view),
            view.status.label().to_owned(),
            date(view).unwrap_or_default(),
            view.usage_count.to_string(),
            view.kind.as_str().to_owned(),
            view.comment.clone(),
        ]);
    }
    print_table(out, &table)?;
    writeln!(out, "{} {}", keys.len(), plural(keys.len()))?;
    Ok(())
}

fn export(stub: &Stub, args: ExportArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let servers = if args.servers.is_empty() {
        vec![stub.settings.public_server.clone()]
    } else {
        args.servers
            .iter()
            .map(|text| parse_server(text).with_context(|| format!("--server {text}")))
            .collect::<anyhow::Result<_>>()?
    };
    let format = Format::from(args.format);
    let file = stub
        .keys()
        .export(&args.ids, servers, stub.ums_id.fingerprint())?;
    let bar = progress(1, "writing the export");
    let text = file.write(format);
    files::write_private(&args.out, text.as_bytes(), args.force)?;
    bar.finish_and_clear();
    writeln!(
        out,
        "Exported {} to {} ({format}, mode 0600).",
        summary(&file),
        args.out.display()
    )?;
    Ok(())
}

fn summary(file: &onboard_protocol::KeyFile) -> String {
    format!(
        "{} {} ({} one-time, {} device-bound, {} mass) for {} with UMS ID {}",
        file.keys.len(),
        plural(file.keys.len()),
        file.count(KeyKind::OneTime),
        file.count(KeyKind::DeviceBound),
        file.count(KeyKind::MassDeployment),
        file.servers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        file.ums_id.short()
    )
}

/// `HOST`, `HOST:PORT` or `[IPV6]:PORT`.
fn parse_server(text: &str) -> anyhow::Result<Server> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .context("an IPv6 address in [ ] lacks its ]")?;
        (host, after.strip_prefix(':'))
    } else if text.matches(':').count() == 1 {
        let (host, port) = text.split_once(':').unwrap_or((text, ""));
        (host, Some(port))
    } else {
        (text, None)
    };
    let port = match port {
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => bail!("the port is not a number from 1 to 65535"),
        },
        None => onboard_protocol::routes::DEFAULT_PORT,
    };
    Ok(Server::new(host, port)?)
}

fn plural(count: usize) -> &'static str {
    if count == 1 { "key" } else { "keys" }
}

/// `IDs 1 to 100` or `IDs 1, 5, 7` or `ID 3`.
fn id_ranges(ids: &[KeyId]) -> String {
    match ids {
        [] => "no keys".to_owned(),
        [one] => format!("ID {one}"),
        [first, .., last] if ids.windows(2).all(|w| w[1] == w[0] + 1) => {
            format!("IDs {first} to {last}")
        }
        _ => format!(
            "IDs {}",
            ids.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A progress bar on standard error when it is a terminal; hidden otherwise.
fn progress(total: u64, message: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() || total < 1000 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} ({eta})") {
        bar.set_style(style);
    }
    bar.set_message(message);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_parse_with_and_without_port() {
        assert_eq!(
            parse_server("ums.example.com").unwrap().to_string(),
            "ums.example.com:8443"
        );
        assert_eq!(parse_server("ums:9443").unwrap().to_string(), "ums:9443");
        assert_eq!(
            parse_server("[fd00::1]:9443").unwrap().to_string(),
            "[fd00::1]:9443"
        );
        assert_eq!(
            parse_server("fd00::1").unwrap().to_string(),
            "[fd00::1]:8443"
        );
        assert!(parse_server("ums:0").is_err());
        assert!(parse_server("ums:http").is_err());
    }

    #[test]
    fn memory_reads_well() {
        assert_eq!(memory(0), "-");
        assert_eq!(memory(512 << 20), "512 MiB");
        assert_eq!(memory(8 << 30), "8.0 GiB");
        assert_eq!(memory(8_162_000_000), "7.6 GiB");
    }

    #[test]
    fn id_ranges_read_well() {
        assert_eq!(id_ranges(&[3]), "ID 3");
        assert_eq!(id_ranges(&[1, 2, 3]), "IDs 1 to 3");
        assert_eq!(id_ranges(&[1, 5]), "IDs 1, 5");
    }
}
