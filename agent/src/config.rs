//! Settings: the command line's global options and an optional TOML config file.
//!
//! The file is read raw (every field optional, unknown fields refused with the file and line
//! named), merged with the command line (which wins), and validated into [`Settings`].
//!
//! # Where the file is
//!
//! `--config FILE`, or the environment variable `ONBOARD_AGENT_CONFIG`; default
//! `/etc/onboard-agent/agent.toml`. A missing default file is fine (every value has a default); a
//! file named with `--config` or the environment variable must exist.
//!
//! # Options
//!
//! ```toml
//! # The unit ID this device reports to the server, instead of the one worked out from its network
//! # interfaces: a MAC address (00:E0:C5:54:0B:8B, 00-E0-C5-54-0B-8B or 00E0C5540B8B) or a UD
//! # Pocket's 18-character serial. The global option --unit-id overrides it.
//! # Default: none; the unit ID is the MAC of the built-in NIC, chosen once by the IGEL OS 12 rule
//! # (physical NICs only; bus PCI > SDIO > USB > other; wired over wireless; then the first name
//! # in lexical order) and kept in the state directory (unit-id.json) from then on.
//! unit_id = "00E0C5540B8B"
//!
//! # Where USB sticks get mounted: absolute paths. A stick is a folder one or two levels below a
//! # root (/media/LABEL, /run/media/USER/LABEL). Roots that do not exist yet are watched once they
//! # appear. `run --mount-root DIR` (repeatable) replaces the list.
//! # Default: ["/media", "/run/media", "/mnt"].
//! mount_roots = ["/media", "/run/media", "/mnt"]
//!
//! # The largest key file read, in bytes (1 KiB to 1 GiB); a bigger file is refused unread.
//! # Default: 16777216 (16 MiB; a 100,000-key XML export is about 5.5 MB).
//! max_key_file_bytes = 16777216
//!
//! # Where the agent keeps its state (the state file, the persisted unit ID, the device key and
//! # certificates). An absolute path. The global option --state-dir overrides it.
//! # Default: "/var/lib/onboard-agent".
//! state_dir = "/var/lib/onboard-agent"
//!
//! # The UMS ID this device trusts: its SHA-256 fingerprint (64 hex digits, any separators), or
//! # the 16-digit communication token (part 3 of the fingerprint) as IGEL OS 12 asks for it. A
//! # stick naming another UMS ID is refused. Default: none; the first stick's fingerprint is
//! # used and, once enrolled, kept (only `onboard-agent reset` forgets it).
//! pin = "3F1A9C0E5B7D2468ACE013579BDF2468A1B2C3D4E5F60718293A4B5C6D7E8F90"
//!
//! # The device key pair's algorithm: "p256" (ECDSA P-256) or "p384". Default: "p256".
//! device_key = "p256"
//!
//! # Waiting after network faults, 5xx and 429: the first wait in milliseconds (doubled after
//! # each fault, with jitter), and the longest wait in seconds (also for a Retry-After asking
//! # for more). Defaults: 1000 and 300.
//! backoff_first_ms = 1000
//! backoff_max_seconds = 300
//!
//! # Time-outs in seconds: for the TCP connection and TLS handshake, and for a whole request.
//! # Defaults: 10 and 30.
//! connect_timeout_seconds = 10
//! request_timeout_seconds = 30
//!
//! # How long a key refused as unknown (`key_unknown`) is skipped before it is presented again:
//! # a server briefly pointed at the wrong database must not burn every key. Other refusals (used,
//! # inactive, bound elsewhere) are for good. In seconds; default 3600.
//! unknown_key_retry_seconds = 3600
//!
//! # Once enrolled, the device keeps a WebSocket to its server (the device connector) and pings
//! # it this often, in seconds (10 to 240: the server closes a session silent for 300 s by
//! # default); a pong missing 30 seconds after a ping, or a lost connection, makes it reconnect
//! # with backoff. Default: 120.
//! connector_ping_seconds = 120
//!
//! # A file the daemon writes its state to as Prometheus text at every change (phase, failure
//! # and last refusal codes, certificate expiry, device connector), for a node exporter's
//! # textfile collector. An absolute path ending in .prom; default: none.
//! metrics_textfile = "/var/lib/prometheus/node-exporter/onboard-agent.prom"
//! ```

use std::path::{Path, PathBuf};

use std::time::Duration;

use onboard_protocol::{Limits, UnitId};

use crate::device_key::DeviceKeyAlgorithm;
use crate::lifecycle::BackoffPolicy;
use crate::pin::Pin;
use crate::tls::Timeouts;

/// The config file read when none is named.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/onboard-agent/agent.toml";

/// The state directory unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/onboard-agent";

/// Where sticks get mounted unless told otherwise: udisks' `/media` and `/run/media/USER`, and
/// `/mnt` for mounts by hand.
pub const DEFAULT_MOUNT_ROOTS: [&str; 3] = ["/media", "/run/media", "/mnt"];

/// The largest key file read unless told otherwise: 16 MiB.
pub const DEFAULT_MAX_KEY_FILE_BYTES: usize = 16 * 1024 * 1024;

/// The smallest `max_key_file_bytes` accepted: 1 KiB (a key file with one key is about 400 bytes).
pub const MIN_KEY_FILE_BYTES: usize = 1024;

/// The largest `max_key_file_bytes` accepted: 1 GiB, all of which is read into memory.
pub const MAX_KEY_FILE_BYTES: usize = 1024 * 1024 * 1024;

/// The config file as written: every field optional.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// A unit ID to use instead of the detected one.
    pub unit_id: Option<String>,
    /// Where sticks get mounted.
    pub mount_roots: Option<Vec<PathBuf>>,
    /// The largest key file read, in bytes.
    pub max_key_file_bytes: Option<u64>,
    /// The state directory.
    pub state_dir: Option<PathBuf>,
    /// The UMS ID fingerprint or communication token to trust.
    pub pin: Option<String>,
    /// The device key pair's algorithm.
    pub device_key: Option<String>,
    /// The first wait after a fault, in milliseconds.
    pub backoff_first_ms: Option<u64>,
    /// The longest wait after faults, in seconds.
    pub backoff_max_seconds: Option<u64>,
    /// The connect (and TLS handshake) time-out, in seconds.
    pub connect_timeout_seconds: Option<u64>,
    /// The request time-out, in seconds.
    pub request_timeout_seconds: Option<u64>,
    /// How long a `key_unknown` refusal is remembered, in seconds.
    pub unknown_key_retry_seconds: Option<u64>,
    /// The device connector's ping interval, in seconds.
    pub connector_ping_seconds: Option<u64>,
    /// Where the daemon writes its state as Prometheus text.
    pub metrics_textfile: Option<PathBuf>,
}

/// What the command line says, which wins over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--config FILE` or `ONBOARD_AGENT_CONFIG`: the file must then exist.
    pub config_file: Option<PathBuf>,
    /// `--state-dir DIR`.
    pub state_dir: Option<PathBuf>,
    /// `--unit-id ID`.
    pub unit_id: Option<UnitId>,
    /// `run --mount-root DIR...`; empty means "not given".
    pub mount_roots: Vec<PathBuf>,
    /// `enroll --fingerprint FP` or `--token PART3`.
    pub pin: Option<Pin>,
}

/// Validated settings with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// A configured unit ID (command line or file); `None` means detect (or use the persisted one).
    pub unit_id: Option<UnitId>,
    /// Absolute mount roots, in the order given, without repeats.
    pub mount_roots: Vec<PathBuf>,
    /// The largest key file read, in bytes.
    pub max_key_file_bytes: usize,
    /// The state directory (absolute).
    pub state_dir: PathBuf,
    /// A configured pin, which no stick replaces.
    pub pin: Option<Pin>,
    /// The device key pair's algorithm.
    pub device_key: DeviceKeyAlgorithm,
    /// Waiting after faults.
    pub backoff: BackoffPolicy,
    /// Connection and request time-outs.
    pub timeouts: Timeouts,
    /// How long a `key_unknown` refusal is remembered.
    pub unknown_key_retry: Duration,
    /// How often the device connector pings (`connector_ping_seconds`).
    pub connector_ping: Duration,
    /// Where the daemon writes its state as Prometheus text (`metrics_textfile`), if anywhere.
    pub metrics_textfile: Option<PathBuf>,
}

/// Why the settings cannot be had. Messages name the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A config file named explicitly does not exist.
    #[error("the config file {} does not exist", .0.display())]
    Missing(PathBuf),
    /// The file exists but cannot be read.
    #[error("cannot read the config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, or fields that do not exist or have the wrong type (the source names the line).
    #[error("config file {}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML reader says, with line and column.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A value out of range.
    #[error("{origin}: {field}: {reason}")]
    Invalid {
        /// The config file, or "the command line".
        origin: String,
        /// The field at fault.
        field: &'static str,
        /// What is wrong and what is expected.
        reason: String,
    },
}

impl Settings {
    /// Reads the config file (the one named in `overrides`, or the default one if it exists),
    /// applies `overrides` and validates the result.
    pub fn load(overrides: Overrides) -> Result<Settings, ConfigError> {
        Self::load_from(overrides, Path::new(DEFAULT_CONFIG_FILE))
    }

    /// [`Settings::load`] with another default config file (for tests).
    pub fn load_from(overrides: Overrides, default_file: &Path) -> Result<Settings, ConfigError> {
        let (file, required) = match &overrides.config_file {
            Some(path) => (path.clone(), true),
            None => (default_file.to_owned(), false),
        };
        let raw =
            match std::fs::read_to_string(&file) {
                Ok(text) => Some(toml::from_str::<RawConfig>(&text).map_err(|source| {
                    ConfigError::Parse {
                        path: file.clone(),
                        source: Box::new(source),
                    }
                })?),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    if required {
                        return Err(ConfigError::Missing(file));
                    }
                    None
                }
                Err(source) => return Err(ConfigError::Read { path: file, source }),
            };
        let config_file = raw.is_some().then_some(file);
        raw.unwrap_or_default().validate(config_file, overrides)
    }
}

impl RawConfig {
    /// Merges `overrides` over the file's values (`config_file` names it in messages) and checks
    /// every value.
    pub fn validate(
        self,
        config_file: Option<PathBuf>,
        overrides: Overrides,
    ) -> Result<Settings, ConfigError> {
        let file_origin = match &config_file {
            Some(path) => format!("config file {}", path.display()),
            None => "the defaults".to_owned(),
        };
        let invalid = |from_file: bool, field: &'static str, reason: String| ConfigError::Invalid {
            origin: if from_file {
                file_origin.clone()
            } else {
                "the command line".to_owned()
            },
            field,
            reason,
        };

        let unit_id = match (overrides.unit_id, self.unit_id) {
            (Some(unit_id), _) => Some(unit_id),
            (None, Some(text)) => Some(
                text.parse::<UnitId>()
                    .map_err(|error| invalid(true, "unit_id", error.to_string()))?,
            ),
            (None, None) => None,
        };

        let (mount_roots, roots_from_file) = if !overrides.mount_roots.is_empty() {
            (overrides.mount_roots, false)
        } else if let Some(roots) = self.mount_roots {
            (roots, true)
        } else {
            (
                DEFAULT_MOUNT_ROOTS.iter().map(PathBuf::from).collect(),
                true,
            )
        };
        if mount_roots.is_empty() {
            return Err(invalid(
                roots_from_file,
                "mount_roots",
                "the list is empty; name at least one folder sticks get mounted under".to_owned(),
            ));
        }
        let mut unique: Vec<PathBuf> = Vec::with_capacity(mount_roots.len());
        for root in mount_roots {
            if !root.is_absolute() {
                return Err(invalid(
                    roots_from_file,
                    "mount_roots",
                    format!("{} is not an absolute path", root.display()),
                ));
            }
            if !unique.contains(&root) {
                unique.push(root);
            }
        }

        let max_key_file_bytes = match self.max_key_file_bytes {
            None => DEFAULT_MAX_KEY_FILE_BYTES,
            Some(bytes) => usize::try_from(bytes)
                .ok()
                .filter(|bytes| (MIN_KEY_FILE_BYTES..=MAX_KEY_FILE_BYTES).contains(bytes))
                .ok_or_else(|| {
                    invalid(
                        true,
                        "max_key_file_bytes",
                        format!(
                            "{bytes} is out of range: from {MIN_KEY_FILE_BYTES} (1 KiB) to \
                             {MAX_KEY_FILE_BYTES} (1 GiB)"
                        ),
                    )
                })?,
        };

        let (state_dir, state_from_file) = match (overrides.state_dir, self.state_dir) {
            (Some(dir), _) => (dir, false),
            (None, Some(dir)) => (dir, true),
            (None, None) => (PathBuf::from(DEFAULT_STATE_DIR), true),
        };
        if !state_dir.is_absolute() {
            return Err(invalid(
                state_from_file,
                "state_dir",
                format!("{} is not an absolute path", state_dir.display()),
            ));
        }

        let pin = match (overrides.pin, self.pin) {
            (Some(pin), _) => Some(pin),
            (None, Some(text)) => Some(
                text.parse::<Pin>()
                    .map_err(|error| invalid(true, "pin", error.to_string()))?,
            ),
            (None, None) => None,
        };
        let device_key = match self.device_key {
            Some(text) => text
                .parse::<DeviceKeyAlgorithm>()
                .map_err(|reason| invalid(true, "device_key", reason))?,
            None => DeviceKeyAlgorithm::default(),
        };
        let ranged = |field: &'static str,
                      value: Option<u64>,
                      default: u64,
                      range: std::ops::RangeInclusive<u64>| {
            let value = value.unwrap_or(default);
            if range.contains(&value) {
                Ok(value)
            } else {
                Err(invalid(
                    true,
                    field,
                    format!(
                        "{value} is out of range: from {} to {}",
                        range.start(),
                        range.end()
                    ),
                ))
            }
        };
        let backoff = BackoffPolicy {
            base: Duration::from_millis(ranged(
                "backoff_first_ms",
                self.backoff_first_ms,
                1000,
                1..=600_000,
            )?),
            max: Duration::from_secs(ranged(
                "backoff_max_seconds",
                self.backoff_max_seconds,
                300,
                1..=86_400,
            )?),
        };
        let unknown_key_retry = Duration::from_secs(ranged(
            "unknown_key_retry_seconds",
            self.unknown_key_retry_seconds,
            3600,
            1..=30 * 86_400,
        )?);
        let connector_ping = Duration::from_secs(ranged(
            "connector_ping_seconds",
            self.connector_ping_seconds,
            120,
            10..=240,
        )?);
        if let Some(path) = &self.metrics_textfile
            && (!path.is_absolute() || path.extension().is_none_or(|ext| ext != "prom"))
        {
            return Err(invalid(
                true,
                "metrics_textfile",
                format!(
                    "{} is not an absolute path ending in .prom (the textfile collector reads \
                     only those)",
                    path.display()
                ),
            ));
        }
        let timeouts = Timeouts {
            connect: Duration::from_secs(ranged(
                "connect_timeout_seconds",
                self.connect_timeout_seconds,
                10,
                1..=600,
            )?),
            request: Duration::from_secs(ranged(
                "request_timeout_seconds",
                self.request_timeout_seconds,
                30,
                1..=3600,
            )?),
        };

        Ok(Settings {
            config_file,
            unit_id,
            mount_roots: unique,
            max_key_file_bytes,
            state_dir,
            pin,
            device_key,
            backoff,
            timeouts,
            unknown_key_retry,
            connector_ping,
            metrics_textfile: self.metrics_textfile,
        })
    }
}

impl Settings {
    /// The bounds for reading key files: the configured size and the protocol's other defaults.
    pub fn key_file_limits(&self) -> Limits {
        Limits {
            max_bytes: self.max_key_file_bytes,
            ..Limits::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: Option<&str>, overrides: Overrides) -> Result<Settings, String> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.toml");
        if let Some(text) = text {
            std::fs::write(&file, text).unwrap();
        }
        Settings::load_from(overrides, &file).map_err(|error| {
            let mut message = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            message
        })
    }

    /// The commented config file the Debian package installs as /etc/onboard-agent/agent.toml.
    const PACKAGED: &str = include_str!("../../packaging/onboard-agent/agent.toml");

    /// `text` with its commented-out settings (`#name = value`) made settings again; prose
    /// comments (`# ...`) stay. `except` stay commented out.
    fn uncomment(text: &str, except: &[&str]) -> String {
        text.lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest)
                    if rest.starts_with(|c: char| c.is_ascii_lowercase())
                        && !except
                            .iter()
                            .any(|name| rest.starts_with(&format!("{name} ="))) =>
                {
                    rest
                }
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_packaged_config_file_names_every_setting_with_its_default() {
        // As installed, every setting is commented out: the agent runs on its defaults.
        let shipped: RawConfig = toml::from_str(PACKAGED).unwrap();
        assert_eq!(shipped, RawConfig::default());

        // Uncommented, every setting is there under its name. The pattern names every field, so
        // a new setting does not compile here until it is added to the test and the file.
        let raw: RawConfig = toml::from_str(&uncomment(PACKAGED, &[])).unwrap();
        let RawConfig {
            unit_id,
            mount_roots,
            max_key_file_bytes,
            state_dir,
            pin,
            device_key,
            backoff_first_ms,
            backoff_max_seconds,
            connect_timeout_seconds,
            request_timeout_seconds,
            unknown_key_retry_seconds,
            connector_ping_seconds,
            metrics_textfile,
        } = raw.clone();
        let present = [
            ("unit_id", unit_id.is_some()),
            ("mount_roots", mount_roots.is_some()),
            ("max_key_file_bytes", max_key_file_bytes.is_some()),
            ("state_dir", state_dir.is_some()),
            ("pin", pin.is_some()),
            ("device_key", device_key.is_some()),
            ("backoff_first_ms", backoff_first_ms.is_some()),
            ("backoff_max_seconds", backoff_max_seconds.is_some()),
            ("connect_timeout_seconds", connect_timeout_seconds.is_some()),
            ("request_timeout_seconds", request_timeout_seconds.is_some()),
            (
                "unknown_key_retry_seconds",
                unknown_key_retry_seconds.is_some(),
            ),
            ("connector_ping_seconds", connector_ping_seconds.is_some()),
            ("metrics_textfile", metrics_textfile.is_some()),
        ];
        for (name, present) in present {
            assert!(present, "the packaged config file lacks {name}");
        }
        // The values shown are accepted...
        raw.validate(None, Overrides::default()).unwrap();
        // ...and, but for the examples (settings with no default), they are the defaults.
        let stated: RawConfig = toml::from_str(&uncomment(
            PACKAGED,
            &["unit_id", "pin", "metrics_textfile"],
        ))
        .unwrap();
        assert_eq!(
            stated.validate(None, Overrides::default()).unwrap(),
            RawConfig::default()
                .validate(None, Overrides::default())
                .unwrap()
        );
    }

    #[test]
    fn a_missing_default_file_gives_every_default() {
        let settings = load(None, Overrides::default()).unwrap();
        assert_eq!(
            settings,
            Settings {
                config_file: None,
                unit_id: None,
                mount_roots: vec!["/media".into(), "/run/media".into(), "/mnt".into()],
                max_key_file_bytes: 16 * 1024 * 1024,
                state_dir: "/var/lib/onboard-agent".into(),
                pin: None,
                device_key: DeviceKeyAlgorithm::P256,
                backoff: BackoffPolicy::default(),
                timeouts: Timeouts::default(),
                unknown_key_retry: crate::state::DEFAULT_UNKNOWN_KEY_RETRY,
                connector_ping: Duration::from_secs(120),
                metrics_textfile: None,
            }
        );
    }

    #[test]
    fn a_missing_named_file_is_an_error_naming_it() {
        let overrides = Overrides {
            config_file: Some("/nonexistent/where.toml".into()),
            ..Overrides::default()
        };
        let error = load(None, overrides).unwrap_err();
        assert!(error.contains("/nonexistent/where.toml"), "{error}");
        assert!(error.contains("does not exist"), "{error}");
    }

    #[test]
    fn the_file_is_read_and_the_command_line_wins() {
        let text = "unit_id = \"00:e0:c5:54:0b:8b\"\nmount_roots = [\"/a\", \"/b\", \"/a\"]\n\
                    max_key_file_bytes = 2048\nstate_dir = \"/srv/agent\"\n";
        let settings = load(Some(text), Overrides::default()).unwrap();
        assert_eq!(settings.unit_id.as_ref().unwrap().as_str(), "00E0C5540B8B");
        assert_eq!(settings.mount_roots, vec![PathBuf::from("/a"), "/b".into()]);
        assert_eq!(settings.max_key_file_bytes, 2048);
        assert_eq!(settings.key_file_limits().max_bytes, 2048);
        assert_eq!(settings.state_dir, PathBuf::from("/srv/agent"));
        assert!(settings.config_file.is_some());

        let overrides = Overrides {
            config_file: None,
            state_dir: Some("/tmp/state".into()),
            unit_id: Some("UDP1234567890ABCDE".parse().unwrap()),
            mount_roots: vec!["/stick".into()],
            pin: None,
        };
        let settings = load(Some(text), overrides).unwrap();
        assert_eq!(settings.unit_id.unwrap().as_str(), "UDP1234567890ABCDE");
        assert_eq!(settings.mount_roots, vec![PathBuf::from("/stick")]);
        assert_eq!(settings.state_dir, PathBuf::from("/tmp/state"));
    }

    #[test]
    fn refusals_name_the_file_the_field_and_the_line() {
        let table: &[(&str, &[&str])] = &[
            (
                "mount_root = [\"/a\"]\n",
                &["agent.toml", "line 1", "mount_root"],
            ),
            ("unit_id = 5\n", &["agent.toml", "line 1", "unit_id"]),
            (
                "unit_id = \"nope\"\n",
                &["agent.toml", "unit_id", "12 hex digits"],
            ),
            ("mount_roots = []\n", &["mount_roots", "empty"]),
            ("mount_roots = [\"media\"]\n", &["mount_roots", "absolute"]),
            (
                "max_key_file_bytes = 10\n",
                &["max_key_file_bytes", "1 KiB"],
            ),
            (
                "max_key_file_bytes = -1\n",
                &["agent.toml", "max_key_file_bytes"],
            ),
            ("state_dir = \"state\"\n", &["state_dir", "absolute"]),
            (
                "metrics_textfile = \"agent.prom\"\n",
                &["metrics_textfile", "absolute"],
            ),
            (
                "metrics_textfile = \"/var/lib/agent.txt\"\n",
                &["metrics_textfile", ".prom"],
            ),
            ("pin = \"12345\"\n", &["agent.toml", "pin", "64 hex digits"]),
            ("device_key = \"rsa\"\n", &["device_key", "p256"]),
            (
                "backoff_max_seconds = 0\n",
                &["backoff_max_seconds", "out of range"],
            ),
            (
                "request_timeout_seconds = 99999\n",
                &["request_timeout_seconds", "3600"],
            ),
        ];
        for (text, wanted) in table {
            let error = load(Some(text), Overrides::default()).unwrap_err();
            for word in *wanted {
                assert!(error.contains(word), "{text:?}: {word:?} not in {error}");
            }
        }
    }

    #[test]
    fn pins_and_tunables_are_read() {
        let fingerprint = onboard_protocol::Fingerprint::of_der(b"ums");
        let text = format!(
            "pin = \"{}\"\ndevice_key = \"P-384\"\nbackoff_first_ms = 50\nbackoff_max_seconds = 2\n",
            fingerprint.communication_token()
        );
        let settings = load(Some(&text), Overrides::default()).unwrap();
        assert!(settings.pin.unwrap().matches(&fingerprint));
        assert_eq!(settings.device_key, DeviceKeyAlgorithm::P384);
        assert_eq!(settings.backoff.base, Duration::from_millis(50));
        assert_eq!(settings.backoff.max, Duration::from_secs(2));
    }

    #[test]
    fn a_relative_root_on_the_command_line_is_blamed_on_it() {
        let overrides = Overrides {
            mount_roots: vec!["relative".into()],
            ..Overrides::default()
        };
        let error = load(None, overrides).unwrap_err();
        assert!(error.contains("the command line"), "{error}");
    }
}
