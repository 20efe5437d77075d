//! The command line: the program's arguments, `serve`, and one module per command group, each
//! thin over the use cases ([`crate::keys`], [`crate::devices`], [`crate::audit`]).
//!
//! Exit codes: 0 success; 1 the command failed (the message says why); 2 the command line is wrong
//! (clap's usage errors).
//!
//! # Layout
//! - `keys`, `devices`, `ums_id`, `audit`, `admins` (with `tokens`): the command groups and what each prints; `--json`
//!   prints the typed views of `onboard_protocol::admin`.
//! - `table`: padded tables, times, page footers and progress bars.

mod admins;
mod audit;
mod cluster;
mod devices;
mod keys;
mod remote;
mod table;
mod target;
mod ums_id;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::config::{DEFAULT_DATA_DIR, Settings};
use crate::stub::Stub;
use admins::{AdminsCommand, TokensCommand};
use audit::AuditArgs;
use devices::DevicesCommand;
use keys::KeysCommand;
use target::Target;
use ums_id::UmsIdCommand;

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

    /// The database: sqlite (the file in the data directory), or a postgres:// URL several
    /// servers may share [default: database in the config, or sqlite].
    #[arg(
        long,
        global = true,
        env = "UMS_STUB_DATABASE",
        value_name = "sqlite|URL",
        hide_env_values = true
    )]
    pub database: Option<String>,

    /// Distributed UMS: the cluster secret file every server sharing the database is given
    /// [default: cluster_secret_file in the config].
    #[arg(
        long,
        global = true,
        env = "UMS_STUB_CLUSTER_SECRET",
        value_name = "FILE"
    )]
    pub cluster_secret: Option<PathBuf>,

    /// Drive a running server over its admin API instead of the data directory on this machine
    /// (keys, devices, audit and ums-id show), as https://HOST:PORT. Goes before the command:
    /// ums-stub --server URL --token-file F --fingerprint FP keys list.
    #[arg(long, env = "UMS_STUB_SERVER", value_name = "URL", requires_all = ["token_file", "fingerprint"])]
    pub server: Option<String>,

    /// With --server: a file holding an API token (ums-stub tokens create).
    #[arg(long, env = "UMS_STUB_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// With --server: the UMS ID fingerprint the server's TLS chain must hold, as devices pin it
    /// (ums-stub ums-id show on the server). No system root is trusted.
    #[arg(
        long,
        global = true,
        env = "UMS_STUB_FINGERPRINT",
        value_name = "SHA256"
    )]
    pub fingerprint: Option<String>,

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
    /// Print the audit log: key changes and enrollment attempts (never a key), with who made
    /// each and from where, oldest first.
    Audit(AuditArgs),
    /// Create, list, edit and delete administrator accounts of the admin API and Web App.
    #[command(subcommand)]
    Admins(AdminsCommand),
    /// Create, list and revoke API tokens for administrator accounts.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Print the OpenAPI 3.1 document: the admin API (also served at /api/v1/openapi.json) and the
    /// test-rig control routes (tag test-rig; served by serve --test-rig at /rig/v1/openapi.json).
    Openapi,
    /// Make the cluster secret of a Distributed UMS (several servers on one PostgreSQL database).
    #[command(subcommand)]
    ClusterSecret(cluster::ClusterSecretCommand),
    /// List the servers sharing this server's database, with their UMS ID status.
    #[command(subcommand)]
    Servers(cluster::ServersCommand),
    /// Move from the embedded database to a PostgreSQL one several servers may share.
    #[command(subcommand)]
    Database(cluster::DatabaseCommand),
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
    /// Serve metrics (/metrics) and health (/livez, /readyz) over plain HTTP on ADDR:PORT, or on
    /// loopback at PORT [default: metrics_listen in the config, or off].
    #[arg(long, value_name = "ADDR:PORT|PORT", value_parser = crate::config::metrics_address)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Test-rig mode, for integration rigs only: faults, a movable clock, one-shot actions and
    /// strict mode, driven over plain JSON on a second listener on loopback (no authentication;
    /// its address is printed as "test-rig control on ADDR"). Never for real devices.
    #[arg(long)]
    test_rig: bool,
    /// With --test-rig: where the control listener listens, on loopback only
    /// [default: 127.0.0.1:0, a free port].
    #[arg(long, value_name = "ADDR:PORT", requires = "test_rig")]
    test_rig_listen: Option<std::net::SocketAddr>,
}

/// The command line's definition, for what is generated from it outside the program: the manual
/// pages and shell completions of the packages (`cargo xtask package`). `ums-stub` itself never
/// calls it.
pub fn command() -> clap::Command {
    Cli::command()
}

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
        // Colours only on a terminal: the journal and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
    if let Some(server) = cli.server.clone() {
        return run_remote(&server, cli);
    }
    let mut settings = Settings::load(cli.data_dir, cli.config.as_deref())?;
    if let Some(database) = &cli.database {
        settings.database = crate::store::Database::parse(database).context("--database")?;
    }
    if let Some(secret) = &cli.cluster_secret {
        settings.cluster_secret = Some(secret.clone());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let mut out = std::io::stdout().lock();
        match cli.command {
            Command::UmsId(command) => ums_id::run(command, settings, &mut out).await?,
            Command::Keys(command) => keys::run(command, local(settings).await?, &mut out).await?,
            Command::Serve(args) => serve(settings, args).await?,
            Command::Devices(command) => {
                devices::run(command, local(settings).await?, &mut out).await?
            }
            Command::Audit(args) => audit::run(args, local(settings).await?, &mut out).await?,
            Command::Admins(command) => {
                admins::run_admins(command, Stub::open(settings).await?, &mut out).await?
            }
            Command::Tokens(command) => {
                admins::run_tokens(command, Stub::open(settings).await?, &mut out).await?
            }
            Command::ClusterSecret(command) => cluster::run_secret(command, &mut out)?,
            Command::Database(command) => {
                cluster::run_database(command, Stub::open(settings).await?, &mut out).await?
            }
            Command::Servers(command) => {
                cluster::run_servers(command, Stub::open(settings).await?, &mut out).await?
            }
            Command::Openapi => {
                std::io::Write::write_all(&mut out, crate::rig::control::json().as_bytes())?
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The data directory on this machine, as what a command acts on.
async fn local(settings: Settings) -> anyhow::Result<Target> {
    Ok(Target::Local(Box::new(Stub::open(settings).await?)))
}

/// Runs a command against a running server (`--server`).
fn run_remote(server: &str, cli: Cli) -> anyhow::Result<ExitCode> {
    let (Some(token_file), Some(fingerprint)) = (&cli.token_file, &cli.fingerprint) else {
        anyhow::bail!("--server needs --token-file and --fingerprint");
    };
    let remote = remote::Remote::connect(server, token_file, fingerprint)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let Cli { command, .. } = cli;
    runtime.block_on(async move {
        let mut out = std::io::stdout().lock();
        let target = Target::Remote(remote);
        match command {
            Command::Keys(command) => keys::run(command, target, &mut out).await?,
            Command::Devices(command) => devices::run(command, target, &mut out).await?,
            Command::Audit(args) => audit::run(args, target, &mut out).await?,
            Command::UmsId(UmsIdCommand::Show { json }) => {
                ums_id::show(&target.ums_id().await?, json, &mut out)?
            }
            _ => anyhow::bail!(
                "--server drives keys, devices, audit and ums-id show; run this command on the \
                 server machine"
            ),
        }
        Ok(ExitCode::SUCCESS)
    })
}

async fn serve(mut settings: Settings, args: ServeArgs) -> anyhow::Result<()> {
    if let Some(listen) = args.listen {
        settings.listen = listen;
    }
    if !args.hosts.is_empty() {
        settings.hosts = args.hosts;
    }
    if args.metrics_listen.is_some() {
        settings.metrics_listen = args.metrics_listen;
    }
    // The control listener's address is checked before anything is opened.
    let control_listen = args
        .test_rig
        .then(|| {
            crate::rig::control::loopback_only(
                args.test_rig_listen
                    .unwrap_or(crate::rig::control::DEFAULT_LISTEN),
            )
        })
        .transpose()?;
    settings.test_rig = args.test_rig;
    let listen = settings.listen;
    // Every connection is a file descriptor: take what the hard limit allows, and cap connections
    // below whatever that is.
    let files = crate::connections::raise_file_limit();
    let (shared, tls) = crate::serve::prepare(settings).await?;
    let listener =
        crate::serve::listen(listen).with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener.local_addr()?;
    tracing::info!(
        listen = %bound,
        hosts = ?shared.stub.settings.hosts,
        ums_id = %shared.stub.ums_id.fingerprint().short(),
        open_files = files,
        connections = shared.stub.settings.connections.total_within(files),
        "serving EST enrollment"
    );
    let metrics = crate::serve::listen_metrics(shared.stub.settings.metrics_listen)?;
    // Installed before the address is printed: a SIGTERM sent once it is stops gracefully.
    let shutdown = shutdown_signal();
    // Printed for scripts and tests that listen on port 0.
    println!("listening on {bound}");
    if let Some(metrics) = &metrics {
        let at = metrics.local_addr()?;
        tracing::info!(listen = %at, "serving metrics and health (/metrics, /livez, /readyz)");
        println!("metrics on {at}");
    }
    let control = match control_listen {
        Some(addr) => Some(start_control(&shared, addr, bound.port()).await?),
        None => None,
    };
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let served = crate::serve::run_with_metrics(shared, listener, metrics, tls, shutdown).await;
    if let Some(control) = control {
        control.abort();
    }
    served?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    tracing::info!("stopped");
    Ok(())
}

/// Opens the test-rig control listener on `addr` (loopback, checked) for the server on `port`,
/// logs the warning banner and prints the address for rigs to read.
async fn start_control(
    shared: &std::sync::Arc<crate::http::Shared>,
    addr: std::net::SocketAddr,
    port: u16,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use crate::rig::control;
    let host = shared
        .stub
        .settings
        .hosts
        .first()
        .cloned()
        .unwrap_or_else(|| shared.stub.settings.public_server.host().to_owned());
    let controls = control::Control::new(shared.clone(), control::Facts { host, port })?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen on {addr} for the test-rig controls ({})",
            control::LISTEN_FLAG
        )
    })?;
    let at = listener.local_addr()?;
    tracing::warn!("{}", control::banner(at));
    // Printed for rigs, as the main listener's line is.
    println!("test-rig control on {at}");
    Ok(control::spawn(listener, controls))
}

/// Installs the SIGINT and SIGTERM handlers now; completes on the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    async move {
        let (Ok(mut interrupt), Ok(mut terminate)) = handlers else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
    }
}
