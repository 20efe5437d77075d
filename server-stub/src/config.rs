//! Settings: the data directory from the command line or environment, and an optional TOML file.
//!
//! The file is read raw (every field optional, unknown fields refused), then validated into
//! [`Settings`] with defaults filled in. Without `--config`, `<data-dir>/ums-stub.toml` is read if it
//! exists.
//!
//! ```toml
//! # The host name devices reach this server by; goes into exports without --server.
//! # Default: this machine's host name.
//! public_host = "ums.example.com"
//! # The HTTPS port devices connect to. Default: 8443.
//! public_port = 8443
//! # Where `serve` listens. Default: 0.0.0.0:8443. `--listen` overrides it.
//! listen = "0.0.0.0:8443"
//! # Names and addresses the TLS leaf is issued for. Default: [public_host]. `--host` overrides it.
//! hosts = ["ums.example.com", "192.0.2.10"]
//! # How long device certificates last, in days. Default: 365.
//! certificate_days = 365
//! # How long after expiry a device certificate may still be renewed (a device shelved longer
//! # than its certificate's lifetime); past it the device enrolls again with a key. Default: 365.
//! renewal_grace_days = 365
//! # Guesses (unknown keys, malformed credentials) allowed per source (an address, or an IPv6 /64)
//! # and per unit ID within the window before further guesses get 429. Other refusals (a key
//! # another device used) are not guesses, and a real key is never refused by these limits.
//! # Defaults: 30, 10, 60 seconds; 1 to 1,000,000 guesses, windows of 1 s to a day.
//! max_failures_per_source = 30
//! max_failures_per_unit = 10
//! failure_window_secs = 60
//! # Gateways or proxies in front of the server, by address or range: requests from them are
//! # counted by the client address their X-Forwarded-For names. Default: none.
//! trusted_proxies = ["10.0.0.5", "192.0.2.0/28"]
//! # Connections one source may hold open (more are closed; never more than a sixteenth of the
//! # total), and TLS handshakes it may have in progress (more wait); trusted proxies are held only
//! # to the total. Defaults: 256, 64.
//! max_connections_per_source = 256
//! max_handshakes_per_source = 64
//! # Device connector sessions (WebSockets of enrolled devices) held at once: a budget of their
//! # own, apart from the connections above, so idle devices cannot starve enrollment or the admin
//! # API. Lowered to what the file limit leaves; one source holds at most a sixteenth of it.
//! # Default: 10000.
//! max_device_sessions = 10000
//! # A session that sends nothing (not even a ping) for this long is closed. Default: 300, more
//! # than the agent's ping interval (120) plus its network time-out (30).
//! device_session_idle_secs = 300
//! # Where keys, devices and the audit log live. Default: "sqlite", the file ums-stub.db in the
//! # data directory. (A PostgreSQL URL, for several servers sharing one database, comes later.)
//! database = "sqlite"
//! # How long audit lines are kept, in days; `serve` deletes older ones at start and daily.
//! # Default: 180.
//! audit_retention_days = 180
//! # TLS to the PostgreSQL server, verified against these CA certificates (PEM); add
//! # sslmode=require to the URL to refuse a plain connection. Default: plain TCP.
//! database_ca_file = "/etc/ums-stub/db-ca.pem"
//! # Distributed UMS: the cluster secret every server sharing a PostgreSQL database is given
//! # (ums-stub cluster-secret create --out FILE; mode 0600). `--cluster-secret` overrides it.
//! cluster_secret_file = "/etc/ums-stub/cluster.secret"
//! # How long a Web App login lasts, in hours. Default: 8.
//! session_hours = 8
//! # Failed logins allowed per account and source network (IPv4 address, IPv6 /64) within
//! # failure_window_secs before that network's logins to that account get 429; a network gets
//! # three times as many over all names. Successful logins never count. Default: 10.
//! max_failed_logins = 10
//! # Metrics (/metrics, Prometheus) and health (/livez, /readyz) over plain HTTP on a listener of
//! # their own: "ADDRESS:PORT" (an IP address), or a port alone for loopback. Default: off. `--metrics-listen`
//! # overrides it. Anyone who reaches it reads the figures: keep it on loopback or a private
//! # network.
//! metrics_listen = "127.0.0.1:9464"
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use onboard_protocol::Server;
use onboard_protocol::routes::DEFAULT_PORT;

use crate::store::Database;

/// Where the server keeps its state unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/ums-stub";

/// The config file's name inside the data directory.
pub const CONFIG_FILE: &str = "ums-stub.toml";

/// The database file's name inside the data directory.
pub const DATABASE_FILE: &str = "ums-stub.db";

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    public_host: Option<String>,
    public_port: Option<u16>,
    listen: Option<std::net::SocketAddr>,
    hosts: Option<Vec<String>>,
    certificate_days: Option<i64>,
    renewal_grace_days: Option<i64>,
    max_failures_per_source: Option<u32>,
    max_failures_per_unit: Option<u32>,
    failure_window_secs: Option<u64>,
    database: Option<String>,
    audit_retention_days: Option<i64>,
    trusted_proxies: Option<Vec<String>>,
    max_connections_per_source: Option<usize>,
    max_handshakes_per_source: Option<usize>,
    max_device_sessions: Option<usize>,
    device_session_idle_secs: Option<u64>,
    session_hours: Option<i64>,
    max_failed_logins: Option<u32>,
    cluster_secret_file: Option<PathBuf>,
    database_ca_file: Option<PathBuf>,
    metrics_listen: Option<String>,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The data directory: database, UMS ID, config.
    pub data_dir: PathBuf,
    /// The server devices are told to contact when an export names none.
    pub public_server: Server,
    /// Whether the config file sets `public_host` (else `public_server` names this machine's
    /// host name, which devices may not resolve).
    pub public_host_set: bool,
    /// Where `serve` listens.
    pub listen: std::net::SocketAddr,
    /// Names and addresses for the TLS leaf.
    pub hosts: Vec<String>,
    /// Device certificate lifetime (`certificate_days` in the config file).
    pub certificate_lifetime: time::Duration,
    /// How long after expiry a device certificate may still renew.
    pub renewal_grace: time::Duration,
    /// Failed-attempt limits.
    pub rate_limits: crate::rate_limit::Limits,
    /// Which database holds keys, devices and the audit log.
    pub database: Database,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long audit lines are kept.
    pub audit_retention: time::Duration,
    /// Caps on open connections and handshakes.
    pub connections: crate::connections::ConnectionLimits,
    /// The device connector's budget and idle time-out.
    pub device_sessions: crate::connector::SessionLimits,
    /// The lifetime and renewal of the server's own TLS certificate (not in the config file: the
    /// defaults, a year renewed 30 days early and checked hourly, suit every server; tests shorten
    /// them).
    pub tls_leaf: crate::tls::LeafPolicy,
    /// How long a Web App session lasts.
    pub session_lifetime: time::Duration,
    /// The cluster secret file of a Distributed UMS.
    pub cluster_secret: Option<PathBuf>,
    /// CA certificates (PEM) the PostgreSQL server's TLS certificate must chain to; TLS to the
    /// database is used when this is set.
    pub database_ca: Option<PathBuf>,
    /// Failed-login limits (per account and source network, and the bounds that follow).
    pub login_limits: crate::login_limit::LoginLimits,
    /// Where the metrics and health listener listens, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Test-rig mode (`serve --test-rig`, or [`crate::testing`]): faults and a movable clock.
    /// Not in the config file: a production config can never turn it on.
    pub test_rig: bool,
}

impl Settings {
    /// Reads the config file (`config`, or the one in `data_dir` if present) and validates it.
    pub fn load(data_dir: PathBuf, config: Option<&Path>) -> anyhow::Result<Self> {
        let default_file = data_dir.join(CONFIG_FILE);
        let file = match config {
            Some(path) => Some(path.to_owned()),
            None => default_file.is_file().then_some(default_file),
        };
        let raw = match &file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the config file {}", path.display()))?;
                toml::from_str::<RawConfig>(&text)
                    .with_context(|| format!("config file {}", path.display()))?
            }
            None => RawConfig::default(),
        };
        let public_host_set = raw.public_host.is_some();
        let host = match raw.public_host {
            Some(host) => host,
            None => machine_host_name(),
        };
        let shown = file
            .as_ref()
            .map_or_else(|| "defaults".to_owned(), |path| path.display().to_string());
        let port = raw.public_port.unwrap_or(DEFAULT_PORT);
        if port == 0 {
            bail!("config file {shown}: public_port must be from 1 to 65535");
        }
        let public_server = Server::new(host, port).with_context(|| match &file {
            Some(path) => format!("config file {}: public_host", path.display()),
            None => {
                "this machine's host name cannot name a server; set public_host in the config file"
                    .to_owned()
            }
        })?;
        let certificate_days = raw.certificate_days.unwrap_or(365);
        if !(1..=3650).contains(&certificate_days) {
            bail!("config file {shown}: certificate_days must be from 1 to 3650");
        }
        let grace_days = raw.renewal_grace_days.unwrap_or(365);
        if !(0..=3650).contains(&grace_days) {
            bail!("config file {shown}: renewal_grace_days must be from 0 to 3650");
        }
        let defaults = crate::rate_limit::Limits::default();
        let guesses = |name: &str, value: Option<u32>, default: u32| {
            let value = value.unwrap_or(default);
            if (1..=1_000_000).contains(&value) {
                Ok(value)
            } else {
                Err(anyhow::anyhow!(
                    "config file {shown}: {name} must be from 1 to 1000000"
                ))
            }
        };
        let window = raw.failure_window_secs.unwrap_or(defaults.window.as_secs());
        if !(1..=86_400).contains(&window) {
            bail!("config file {shown}: failure_window_secs must be from 1 to 86400");
        }
        let rate_limits = crate::rate_limit::Limits {
            per_source: guesses(
                "max_failures_per_source",
                raw.max_failures_per_source,
                defaults.per_source,
            )?,
            per_unit: guesses(
                "max_failures_per_unit",
                raw.max_failures_per_unit,
                defaults.per_unit,
            )?,
            window: std::time::Duration::from_secs(window),
        };
        let trusted_proxies = raw
            .trusted_proxies
            .unwrap_or_default()
            .iter()
            .map(|text| {
                text.parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "config file {shown}: trusted_proxies: {text:?} is not an address or a range (10.0.0.0/8)"
                        )
                    })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let database = match &raw.database {
            Some(text) => {
                Database::parse(text).with_context(|| format!("config file {shown}: database"))?
            }
            None => Database::Sqlite,
        };
        let connection_defaults = crate::connections::ConnectionLimits::default();
        let cap = |name: &str, value: Option<usize>, default: usize| {
            let value = value.unwrap_or(default);
            if (1..=65_536).contains(&value) {
                Ok(value)
            } else {
                Err(anyhow::anyhow!(
                    "config file {shown}: {name} must be from 1 to 65536"
                ))
            }
        };
        let connections = crate::connections::ConnectionLimits {
            total: connection_defaults.total,
            evict_after: connection_defaults.evict_after,
            per_source: cap(
                "max_connections_per_source",
                raw.max_connections_per_source,
                connection_defaults.per_source,
            )?,
            handshakes_per_source: cap(
                "max_handshakes_per_source",
                raw.max_handshakes_per_source,
                connection_defaults.handshakes_per_source,
            )?,
        };
        let session_defaults = crate::connector::SessionLimits::default();
        let idle = raw
            .device_session_idle_secs
            .unwrap_or(session_defaults.idle.as_secs());
        if !(10..=86_400).contains(&idle) {
            bail!("config file {shown}: device_session_idle_secs must be from 10 to 86400");
        }
        let max_sessions = raw.max_device_sessions.unwrap_or(session_defaults.max);
        if !(1..=1_000_000).contains(&max_sessions) {
            bail!("config file {shown}: max_device_sessions must be from 1 to 1000000");
        }
        let device_sessions = crate::connector::SessionLimits {
            max: max_sessions,
            idle: std::time::Duration::from_secs(idle),
        };
        let retention_days = raw.audit_retention_days.unwrap_or(180);
        if !(1..=36_500).contains(&retention_days) {
            bail!("config file {shown}: audit_retention_days must be from 1 to 36500");
        }
        let session_hours = raw.session_hours.unwrap_or(8);
        if !(1..=720).contains(&session_hours) {
            bail!("config file {shown}: session_hours must be from 1 to 720");
        }
        let login_limits = crate::login_limit::LoginLimits::new(
            guesses("max_failed_logins", raw.max_failed_logins, 10)?,
            std::time::Duration::from_secs(window),
        );
        let metrics_listen = match raw.metrics_listen.as_deref() {
            None => None,
            Some(text) => Some(
                metrics_address(text)
                    .with_context(|| format!("config file {shown}: metrics_listen"))?,
            ),
        };
        let hosts = raw
            .hosts
            .unwrap_or_else(|| vec![public_server.host().to_owned()]);
        Ok(Self {
            data_dir,
            listen: raw
                .listen
                .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))),
            hosts,
            certificate_lifetime: time::Duration::days(certificate_days),
            renewal_grace: time::Duration::days(grace_days),
            rate_limits,
            public_server,
            public_host_set,
            database,
            tls_leaf: crate::tls::LeafPolicy::default(),
            audit_retention: time::Duration::days(retention_days),
            trusted_proxies,
            connections,
            device_sessions,
            session_lifetime: time::Duration::hours(session_hours),
            cluster_secret: raw.cluster_secret_file,
            database_ca: raw.database_ca_file,
            login_limits,
            metrics_listen,
            test_rig: false,
        })
    }

    /// The SQLite database file.
    pub fn database_file(&self) -> PathBuf {
        self.data_dir.join(DATABASE_FILE)
    }
}

/// The metrics listener's address: `HOST:PORT`, or a port alone for loopback (`127.0.0.1`).
pub fn metrics_address(text: &str) -> anyhow::Result<std::net::SocketAddr> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse().map_err(|_| {
        anyhow::anyhow!("expected an address and port (127.0.0.1:9464) or a port, not {text:?}")
    })
}

/// The kernel's host name, or `localhost` when it cannot be read.
fn machine_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commented config file the Debian package installs as /etc/ums-stub/ums-stub.toml.
    const PACKAGED: &str = include_str!("../../packaging/ums-stub/ums-stub.toml");

    /// `text` with its commented-out settings (`#name = value`) made settings again; prose
    /// comments (`# ...`) stay.
    fn uncomment(text: &str) -> String {
        text.lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase()) => rest,
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_packaged_config_file_names_every_setting_with_its_default() {
        // As installed, every setting is commented out: the server runs on its defaults.
        let shipped: RawConfig = toml::from_str(PACKAGED).unwrap();
        assert_eq!(
            format!("{shipped:?}"),
            format!("{:?}", RawConfig::default())
        );

        // Uncommented, every setting is there under its name. The pattern names every field, so
        // a new setting does not compile here until it is added to the test and the file.
        let raw: RawConfig = toml::from_str(&uncomment(PACKAGED)).unwrap();
        let RawConfig {
            public_host,
            public_port,
            listen,
            hosts,
            certificate_days,
            renewal_grace_days,
            max_failures_per_source,
            max_failures_per_unit,
            failure_window_secs,
            database,
            audit_retention_days,
            trusted_proxies,
            max_connections_per_source,
            max_handshakes_per_source,
            max_device_sessions,
            device_session_idle_secs,
            session_hours,
            max_failed_logins,
            cluster_secret_file,
            database_ca_file,
            metrics_listen,
        } = raw;
        let present = [
            ("public_host", public_host.is_some()),
            ("public_port", public_port.is_some()),
            ("listen", listen.is_some()),
            ("hosts", hosts.is_some()),
            ("certificate_days", certificate_days.is_some()),
            ("renewal_grace_days", renewal_grace_days.is_some()),
            ("max_failures_per_source", max_failures_per_source.is_some()),
            ("max_failures_per_unit", max_failures_per_unit.is_some()),
            ("failure_window_secs", failure_window_secs.is_some()),
            ("database", database.is_some()),
            ("audit_retention_days", audit_retention_days.is_some()),
            ("trusted_proxies", trusted_proxies.is_some()),
            (
                "max_connections_per_source",
                max_connections_per_source.is_some(),
            ),
            (
                "max_handshakes_per_source",
                max_handshakes_per_source.is_some(),
            ),
            ("max_device_sessions", max_device_sessions.is_some()),
            (
                "device_session_idle_secs",
                device_session_idle_secs.is_some(),
            ),
            ("session_hours", session_hours.is_some()),
            ("max_failed_logins", max_failed_logins.is_some()),
            ("cluster_secret_file", cluster_secret_file.is_some()),
            ("database_ca_file", database_ca_file.is_some()),
            ("metrics_listen", metrics_listen.is_some()),
        ];
        for (name, present) in present {
            assert!(present, "the packaged config file lacks {name}");
        }

        // The values shown are accepted, and where the file states a default it is the real one.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ums-stub.toml");
        std::fs::write(&file, uncomment(PACKAGED)).unwrap();
        let stated = Settings::load(dir.path().to_owned(), Some(&file)).unwrap();
        let defaults = Settings::load(dir.path().join("empty"), None).unwrap();
        assert_eq!(stated.public_server.port(), defaults.public_server.port());
        assert_eq!(stated.listen, defaults.listen);
        assert_eq!(stated.certificate_lifetime, defaults.certificate_lifetime);
        assert_eq!(stated.renewal_grace, defaults.renewal_grace);
        assert_eq!(stated.rate_limits, defaults.rate_limits);
        assert_eq!(stated.database, defaults.database);
        assert_eq!(stated.audit_retention, defaults.audit_retention);
        assert_eq!(stated.connections, defaults.connections);
        assert_eq!(stated.device_sessions, defaults.device_sessions);
        assert_eq!(stated.session_lifetime, defaults.session_lifetime);
        assert_eq!(stated.login_limits, defaults.login_limits);
    }

    #[test]
    fn reads_the_file_in_the_data_dir_and_fills_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::load(dir.path().to_owned(), None).unwrap();
        assert_eq!(settings.public_server.port(), 8443);
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "public_host = \"ums.example.com\"\n",
        )
        .unwrap();
        let settings = Settings::load(dir.path().to_owned(), None).unwrap();
        assert_eq!(settings.public_server.to_string(), "ums.example.com:8443");
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "public_port = 8443\npublic_hots = \"x\"\n").unwrap();
        let error = format!(
            "{:#}",
            Settings::load(dir.path().to_owned(), Some(&file)).unwrap_err()
        );
        assert!(
            error.contains("bad.toml") && error.contains("line 2") && error.contains("public_hots"),
            "{error}"
        );
        let missing = format!(
            "{:#}",
            Settings::load(dir.path().to_owned(), Some(&dir.path().join("no.toml"))).unwrap_err()
        );
        assert!(missing.contains("no.toml"), "{missing}");
    }

    #[test]
    fn limits_out_of_range_and_bad_proxies_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("limits.toml");
        for (text, named) in [
            ("failure_window_secs = 0", "failure_window_secs"),
            ("failure_window_secs = 31536000", "failure_window_secs"),
            ("max_failures_per_source = 0", "max_failures_per_source"),
            (
                "max_failures_per_unit = 4000000000",
                "max_failures_per_unit",
            ),
            ("trusted_proxies = [\"gateway\"]", "trusted_proxies"),
            (
                "max_connections_per_source = 0",
                "max_connections_per_source",
            ),
            (
                "max_handshakes_per_source = 70000",
                "max_handshakes_per_source",
            ),
        ] {
            std::fs::write(&file, format!("{text}\n")).unwrap();
            let error = format!(
                "{:#}",
                Settings::load(dir.path().to_owned(), Some(&file)).unwrap_err()
            );
            assert!(
                error.contains("limits.toml") && error.contains(named),
                "{text}: {error}"
            );
        }
        std::fs::write(
            &file,
            "trusted_proxies = [\"10.0.0.5\", \"192.0.2.0/28\", \"::1\"]\n",
        )
        .unwrap();
        let settings = Settings::load(dir.path().to_owned(), Some(&file)).unwrap();
        assert_eq!(settings.trusted_proxies.len(), 3);
        assert!(
            settings.trusted_proxies[1].contains(&"192.0.2.9".parse::<std::net::IpAddr>().unwrap())
        );
    }

    #[test]
    fn audit_retention_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Settings::load(dir.path().to_owned(), None)
                .unwrap()
                .audit_retention,
            time::Duration::days(180)
        );
        let file = dir.path().join("audit.toml");
        for bad in ["0", "-5", "100000"] {
            std::fs::write(&file, format!("audit_retention_days = {bad}\n")).unwrap();
            let error = format!(
                "{:#}",
                Settings::load(dir.path().to_owned(), Some(&file)).unwrap_err()
            );
            assert!(
                error.contains("audit.toml") && error.contains("audit_retention_days"),
                "{error}"
            );
        }
    }

    #[test]
    fn the_database_is_sqlite_unless_told_and_a_password_is_never_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::load(dir.path().to_owned(), None).unwrap();
        assert_eq!(settings.database, Database::Sqlite);
        let file = dir.path().join("db.toml");
        std::fs::write(&file, "database = \"SQLite\"\n").unwrap();
        let settings = Settings::load(dir.path().to_owned(), Some(&file)).unwrap();
        assert_eq!(settings.database, Database::Sqlite);
        // A PostgreSQL URL is taken; its password never shows in Debug or Display.
        std::fs::write(
            &file,
            "database = \"postgres://admin:hunter2@db:5433/ums\"\n",
        )
        .unwrap();
        let settings = Settings::load(dir.path().to_owned(), Some(&file)).unwrap();
        let Database::Postgres(url) = &settings.database else {
            panic!("{:?}", settings.database)
        };
        assert_eq!(url.expose(), "postgres://admin:hunter2@db:5433/ums");
        assert_eq!(url.to_string(), "postgres://admin@db:5433/ums");
        assert!(!format!("{settings:?}").contains("hunter2"));
        for text in [
            "postgres://admin:hunter2@db:port/ums",
            "mysql://admin:hunter2@db",
        ] {
            std::fs::write(&file, format!("database = \"{text}\"\n")).unwrap();
            let error = format!(
                "{:#}",
                Settings::load(dir.path().to_owned(), Some(&file)).unwrap_err()
            );
            assert!(
                error.contains("db.toml")
                    && error.contains("database")
                    && !error.contains("hunter2"),
                "{error}"
            );
        }
    }
}
