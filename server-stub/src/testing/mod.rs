//! Servers for tests and integration rigs (cargo feature `testing`): the one way the workspace's
//! own tests start a `ums-stub`, and the way a rig written in Rust starts one.
//!
//! - [`TestServer`], built by [`TestServer::builder`]: a server inside the test's own process and
//!   tokio runtime, on a free loopback port, over a temporary data directory (SQLite, or a
//!   PostgreSQL URL), in test-rig mode with every fault off ([`Builder::without_rig`] starts a
//!   plain one). It hands back what a test needs: the URL, the UMS ID fingerprint and
//!   certificate, stick files of new keys ([`TestServer::key_file`]), the devices, the audit log,
//!   waits for a device to enroll or connect, the rig's controls, the routes' shared state.
//!   Dropped, it shuts down and removes its data directory.
//! - [`ServeProcess`], started by [`ServeCommand`]: a given `ums-stub` binary run as
//!   `serve`, its address read from what it prints; signals go through [`send_signal`] (the
//!   `nix` crate), as they do to any other process a test started.
//!
//! A fixed UMS ID ([`Builder::ums_id`], from a backup such as [`ums_id_backup`] writes) keeps a
//! rig's pins stable from run to run.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! use onboard_protocol::KeyKind;
//! use ums_stub::testing::TestServer;
//!
//! let server = TestServer::builder()
//!     .settings(|settings| settings.certificate_lifetime = time::Duration::days(30))
//!     .start()
//!     .await?;
//! // The file a USB stick carries: two one-time keys naming this server and pinning its UMS ID.
//! let stick = server.key_file(KeyKind::OneTime, 2).await?;
//! assert!(String::from_utf8(stick)?.contains(&server.fingerprint().to_string()));
//! assert!(server.url().starts_with("https://localhost:"));
//! assert!(server.rig().is_some(), "test-rig mode, faults off");
//! assert!(server.devices().await?.is_empty());
//! server.stop().await?;
//! # Ok(())
//! # }
//! ```

mod process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use onboard_protocol::{Fingerprint, Format, KeyKind, Server, UnitId};
use tokio::net::TcpListener;

pub use process::{
    STOP_DEADLINE, ServeCommand, ServeProcess, Signal, send_signal, stop_child, wait_with_deadline,
};

use crate::config::Settings;
use crate::http::Shared;
use crate::rig::Rig;
use crate::serve::Running;
use crate::store::{Actor, AuditEntry, AuditFilter, Database, DeviceRecord, PageRequest};
use crate::ums_id::UmsId;

/// How long the waiting helpers ([`TestServer::enrolled`], [`TestServer::connected`]) wait.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// How often the waiting helpers look.
const POLL: Duration = Duration::from_millis(20);

/// A settings change a test asks for.
type Adjust<'a> = Box<dyn FnOnce(&mut Settings) + Send + 'a>;

/// Where a server keeps its data directory.
enum Data {
    /// In a new temporary folder, removed with the server.
    Temporary,
    /// In `data` inside this temporary folder, which the server owns (and hands back on
    /// [`TestServer::stop_keeping_dir`]).
    In(tempfile::TempDir),
    /// In this folder, which the test owns.
    At(PathBuf),
}

/// How a [`TestServer`] starts: see [`TestServer::builder`].
#[must_use = "a builder starts nothing until `start` is awaited"]
pub struct Builder<'a> {
    data: Data,
    listener: Option<TcpListener>,
    hosts: Vec<String>,
    database: Option<String>,
    ums_id: Option<String>,
    test_rig: bool,
    adjust: Vec<Adjust<'a>>,
}

impl std::fmt::Debug for Builder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the database URL (a password) nor the UMS ID backup (a private key) is shown.
        f.debug_struct("Builder")
            .field("hosts", &self.hosts)
            .field("postgres", &self.database.is_some())
            .field("fixed_ums_id", &self.ums_id.is_some())
            .field("test_rig", &self.test_rig)
            .finish_non_exhaustive()
    }
}

impl Default for Builder<'_> {
    fn default() -> Self {
        Self {
            data: Data::Temporary,
            listener: None,
            hosts: vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            database: None,
            ums_id: None,
            test_rig: true,
            adjust: Vec::new(),
        }
    }
}

impl<'a> Builder<'a> {
    /// Changes the settings after the builder's own (host names, store, test-rig mode), just
    /// before the server opens its data directory. Several closures apply in order.
    pub fn settings(mut self, adjust: impl FnOnce(&mut Settings) + Send + 'a) -> Self {
        self.adjust.push(Box::new(adjust));
        self
    }

    /// Serves on `listener` instead of a new one on a free loopback port (a port kept across a
    /// restart, or one bound by the test).
    pub fn listener(mut self, listener: TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Keeps the data directory in `data` inside `dir`: a folder a stopped server handed back
    /// ([`TestServer::stop_keeping_dir`]) starts it again over the same data. Removed with the
    /// server unless handed back again.
    pub fn in_dir(mut self, dir: tempfile::TempDir) -> Self {
        self.data = Data::In(dir);
        self
    }

    /// Keeps the data directory at `path`, which the test owns and removes.
    pub fn data_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.data = Data::At(path.into());
        self
    }

    /// The host names its TLS leaf names (default: `localhost` and `127.0.0.1`).
    pub fn hosts(mut self, hosts: &[&str]) -> Self {
        self.hosts = hosts.iter().map(|host| (*host).to_owned()).collect();
        self
    }

    /// Keeps the store in the PostgreSQL database at `url` (a fresh one per server, or one
    /// several servers share) instead of SQLite. A cluster secret is made beside the data
    /// directory unless the settings name one.
    pub fn postgres(mut self, url: impl Into<String>) -> Self {
        self.database = Some(url.into());
        self
    }

    /// Starts under the UMS ID in `backup` (the text [`ums_id_backup`] or `ums-stub ums-id
    /// backup` writes), installed into the data directory first: servers started from one
    /// fixture share one fingerprint, so the pins of a rig's sticks and images stay valid.
    pub fn ums_id(mut self, backup: impl Into<String>) -> Self {
        self.ums_id = Some(backup.into());
        self
    }

    /// Starts a plain server: no test-rig mode (no faults, no rig controls), as `serve` runs.
    pub fn without_rig(mut self) -> Self {
        self.test_rig = false;
        self
    }

    /// Opens the data directory (creating the UMS ID and store at first use) and starts serving
    /// as a task on the current tokio runtime; returns once it accepts connections.
    pub async fn start(self) -> anyhow::Result<TestServer> {
        let Builder {
            data,
            listener,
            hosts,
            database,
            ums_id,
            test_rig,
            adjust,
        } = self;
        let (dir, data_dir) = match data {
            Data::Temporary => {
                let dir = tempfile::tempdir().context("cannot make a temporary folder")?;
                let data_dir = dir.path().join("data");
                (Some(dir), data_dir)
            }
            Data::In(dir) => {
                let data_dir = dir.path().join("data");
                (Some(dir), data_dir)
            }
            Data::At(path) => (None, path),
        };
        if let Some(backup) = ums_id {
            let origin = Path::new("(fixture)");
            UmsId::from_backup(&backup, origin)
                .and_then(|ums_id| ums_id.install(&data_dir, false))
                .context("cannot install the fixed UMS ID")?;
        }
        let mut settings = Settings::load(data_dir.clone(), None)?;
        settings.hosts = hosts;
        settings.test_rig = test_rig;
        if let Some(url) = &database {
            settings.database = Database::parse(url)?;
        }
        for adjust in adjust {
            adjust(&mut settings);
        }
        if database.is_some() && settings.cluster_secret.is_none() {
            let secret = data_dir.with_file_name(format!(
                "{}.cluster.secret",
                data_dir.file_name().unwrap_or_default().to_string_lossy()
            ));
            if !secret.exists() {
                crate::cluster::ClusterSecret::create(&secret)?;
            }
            settings.cluster_secret = Some(secret);
        }
        let listener = match listener {
            Some(listener) => listener,
            None => crate::serve::listen(SocketAddr::from(([127, 0, 0, 1], 0)))
                .context("cannot listen on a loopback port")?,
        };
        let running = crate::serve::spawn(settings, listener).await?;
        Ok(TestServer { running, dir })
    }
}

/// A new UMS ID as backup text, for [`Builder::ums_id`]: a fixture a rig writes once and keeps.
/// It holds the private key: keep it out of logs and readable by the rig alone.
pub fn ums_id_backup() -> anyhow::Result<String> {
    Ok(UmsId::generate()?.backup())
}

/// A server running in the test's process. Dropped, it shuts down (without waiting) and its
/// temporary data directory is removed; [`TestServer::stop`] waits.
pub struct TestServer {
    // Declared first, dropped first: the server stops before its folder goes.
    running: Running,
    dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

impl TestServer {
    /// A builder with the defaults: a free loopback port, a temporary SQLite store, a new UMS
    /// ID, host names `localhost` and `127.0.0.1`, test-rig mode with faults off.
    pub fn builder<'a>() -> Builder<'a> {
        Builder::default()
    }

    /// A server with the defaults ([`TestServer::builder`]).
    pub async fn start() -> anyhow::Result<TestServer> {
        Self::builder().start().await
    }

    /// The server as [`crate::serve::spawn`] runs it.
    pub fn running(&self) -> &Running {
        &self.running
    }

    /// The state its routes share: the store, the key operations, the connector.
    pub fn shared(&self) -> &Arc<Shared> {
        self.running.shared()
    }

    /// Its test-rig controls (faults, the clock); `None` when started [`Builder::without_rig`].
    pub fn rig(&self) -> Option<&Arc<Rig>> {
        self.running.rig()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.running.addr()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.running.port()
    }

    /// Its base URL by name: `https://localhost:PORT`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port())
    }

    /// The server as key files name it: `127.0.0.1:PORT`.
    pub fn server(&self) -> Server {
        Server::new("127.0.0.1", self.port()).expect("a loopback address and a port make a server")
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        &self.shared().stub.settings.data_dir
    }

    /// The fingerprint of its UMS ID, which devices pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.running.ums_id_fingerprint()
    }

    /// Its UMS ID certificate, DER: the trust anchor of its TLS chain.
    pub fn certificate_der(&self) -> &[u8] {
        self.running.ums_id_certificate_der()
    }

    /// Its UMS ID certificate, PEM.
    pub fn certificate_pem(&self) -> &str {
        self.shared().stub.ums_id.certificate_pem()
    }

    /// An HTTPS client that trusts its UMS ID alone.
    pub fn client(&self) -> anyhow::Result<reqwest::Client> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from(
            self.certificate_der().to_vec(),
        ))?;
        let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .build()?)
    }

    /// Creates `count` new keys of `kind` and returns the bytes of the key file a stick carries
    /// (`icg.xml`) holding them, naming this server ([`TestServer::server`]) and pinning its UMS
    /// ID. Device-bound keys name their devices: [`TestServer::device_bound_key_file`].
    pub async fn key_file(&self, kind: KeyKind, count: usize) -> anyhow::Result<Vec<u8>> {
        let keys = self.shared().stub.keys();
        let actor = Actor::cli();
        let ids = match kind {
            KeyKind::OneTime => {
                keys.create_one_time(count, "", Box::new(|_| {}), &actor)
                    .await?
            }
            KeyKind::MassDeployment => {
                let mut ids = Vec::with_capacity(count);
                for _ in 0..count {
                    ids.push(keys.create_mass(None, "", &actor).await?.0);
                }
                ids
            }
            KeyKind::DeviceBound => {
                bail!("device-bound keys name their devices: use device_bound_key_file")
            }
        };
        self.export(&ids).await
    }

    /// Creates one device-bound key for each of `units` and returns the bytes of the key file
    /// holding them, as [`TestServer::key_file`] does.
    pub async fn device_bound_key_file(&self, units: &[UnitId]) -> anyhow::Result<Vec<u8>> {
        let ids = self
            .shared()
            .stub
            .keys()
            .create_device_bound(units, "", Box::new(|_| {}), &Actor::cli())
            .await?;
        self.export(&ids).await
    }

    async fn export(&self, ids: &[onboard_protocol::admin::KeyId]) -> anyhow::Result<Vec<u8>> {
        let file = self
            .shared()
            .stub
            .keys()
            .export(ids, vec![self.server()], self.fingerprint())
            .await?;
        Ok(file.write(Format::Xml).into_bytes())
    }

    /// Every enrolled device, as the store holds it.
    pub async fn devices(&self) -> anyhow::Result<Vec<DeviceRecord>> {
        Ok(self
            .shared()
            .stub
            .store
            .devices(&PageRequest::all())
            .await?)
    }

    /// The whole audit log, oldest first.
    pub async fn audit(&self) -> anyhow::Result<Vec<AuditEntry>> {
        Ok(self
            .shared()
            .stub
            .store
            .audit(&AuditFilter::default(), &PageRequest::all())
            .await?)
    }

    /// Waits (at most [`DEADLINE`]) until `unit` has enrolled; its record.
    pub async fn enrolled(&self, unit: &UnitId) -> anyhow::Result<DeviceRecord> {
        self.wait_for_device(unit, "enrolled", |_| true).await
    }

    /// Waits (at most [`DEADLINE`]) until `unit` holds a connector session on this server; its
    /// record.
    pub async fn connected(&self, unit: &UnitId) -> anyhow::Result<DeviceRecord> {
        let here = self.shared().connector.server().to_owned();
        self.wait_for_device(unit, "connected", |device| {
            device.online_server.as_deref() == Some(here.as_str())
        })
        .await
    }

    async fn wait_for_device(
        &self,
        unit: &UnitId,
        what: &str,
        test: impl Fn(&DeviceRecord) -> bool,
    ) -> anyhow::Result<DeviceRecord> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(device) = self.shared().stub.store.device(unit).await?
                && test(&device)
            {
                return Ok(device);
            }
            if Instant::now() >= deadline {
                bail!("{unit} was not {what} within {DEADLINE:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The running server and the temporary folder holding its data directory (none for a data
    /// directory the test gave): for code that keeps a [`Running`] and stops it itself.
    pub fn into_parts(self) -> (Running, Option<tempfile::TempDir>) {
        (self.running, self.dir)
    }

    /// Shuts it down gracefully (requests in flight finish) and removes its data directory.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.running.stop().await
    }

    /// Shuts it down gracefully and hands back the folder holding its data directory, to start
    /// again over it ([`Builder::in_dir`]). Fails for a data directory the test gave
    /// ([`Builder::data_dir`]): that one stays where it is anyway.
    pub async fn stop_keeping_dir(self) -> anyhow::Result<tempfile::TempDir> {
        let TestServer { running, dir } = self;
        running.stop().await?;
        dir.context("the data directory was the test's own (data_dir): it stays where it is")
    }
}
