//! The state directory: atomic writes into it, and what the agent keeps there.
//!
//! Every file the agent persists is written whole or not at all: a temp file in the same
//! directory, fsynced, given its mode, renamed over the target, and the directory fsynced so the
//! rename itself survives a power cut. Thin clients lose power without warning.
//!
//! # Files
//! - `state.json` ([`AgentState`], mode 0600): a `version`, the [`Phase`], the unit ID, the
//!   servers, the pin, enrollment time, certificate serial and expiry, and the digests of keys
//!   refused with a final code. It is the commit point: the agent is enrolled when it says so.
//! - `device-key.pem` (0600): the device's private key, PKCS#8. Written before the first request
//!   that carries its CSR, so a retry after a lost answer (or a restart) presents the same key
//!   pair and the server answers with the same certificate.
//! - `device-cert.pem` (0644): the device certificate the UMS ID issued.
//! - `ums-id.pem` (0644): the UMS ID certificate the device is pinned to.
//! - `unit-id.json` (0644): the persisted unit ID ([`crate::identity`]).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use onboard_protocol::{Fingerprint, FirstAuthKey, KeyKind, ProblemCode, UnitId};
use sha2::{Digest, Sha256};

use crate::lifecycle::Phase;
use crate::pin::Pin;

/// The state file.
pub const STATE_FILE: &str = "state.json";
/// The device's private key.
pub const DEVICE_KEY_FILE: &str = "device-key.pem";
/// The device certificate.
pub const DEVICE_CERT_FILE: &str = "device-cert.pem";
/// The UMS ID certificate.
pub const UMS_ID_CERT_FILE: &str = "ums-id.pem";
/// The files `reset` removes: everything of an enrollment (the unit ID stays).
pub const ENROLLMENT_FILES: [&str; 4] = [
    STATE_FILE,
    DEVICE_KEY_FILE,
    DEVICE_CERT_FILE,
    UMS_ID_CERT_FILE,
];

/// The state-file version this agent writes and reads.
pub const STATE_VERSION: u32 = 1;

/// What `state.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AgentState {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// Where the agent is.
    pub phase: Phase,
    /// The unit ID it enrolls (or enrolled) as.
    #[serde(default)]
    pub unit_id: Option<UnitId>,
    /// The servers of the key file it works from (`host:port`), in the order tried.
    #[serde(default)]
    pub servers: Vec<String>,
    /// The server it enrolled with, or is enrolling with.
    #[serde(default)]
    pub server: Option<String>,
    /// The UMS ID it trusts, learned at enrollment (a configured pin is not stored here).
    #[serde(default)]
    pub pin: Option<Pin>,
    /// When it enrolled (RFC 3339).
    #[serde(default)]
    pub enrolled_at: Option<String>,
    /// The type of key it enrolled with.
    #[serde(default)]
    pub key_type: Option<KeyKind>,
    /// The device certificate's serial (hex).
    #[serde(default)]
    pub certificate_serial: Option<String>,
    /// When the device certificate expires (RFC 3339).
    #[serde(default)]
    pub certificate_not_after: Option<String>,
    /// When it last renewed (RFC 3339).
    #[serde(default)]
    pub renewed_at: Option<String>,
    /// When it last reported its inventory (RFC 3339).
    #[serde(default)]
    pub inventory_reported_at: Option<String>,
    /// Keys refused with a final code, by digest; never the value.
    #[serde(default)]
    pub refused_keys: Vec<RefusedKey>,
    /// A random salt for the key digests, made once (hex).
    #[serde(default)]
    pub key_salt: String,
    /// The last thing that went wrong, for `status`. Never holds a key.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// A key refused with a final code.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RefusedKey {
    /// SHA-256 over the salt, the UMS ID fingerprint and the key value (hex).
    pub digest: String,
    /// The code it drew.
    pub code: ProblemCode,
    /// When, on the device clock (Unix seconds); absent in states from before it was kept.
    #[serde(default)]
    pub at: Option<i64>,
}

/// The most refusals remembered; the oldest are forgotten first (and at worst presented once
/// more).
pub const MAX_REFUSED_KEYS: usize = 10_000;

/// How long a `key_unknown` or `key_not_yet_valid` refusal is remembered unless configured
/// (`unknown_key_retry_seconds`). The other final codes are facts about the key (used, inactive,
/// bound to another unit, expired, exhausted) and are remembered for good; an unknown key may be
/// a server briefly pointed at the wrong database, which must not burn every key on the stick,
/// and a key not valid yet (a stick prepared before its rollout) becomes valid by itself.
pub const DEFAULT_UNKNOWN_KEY_RETRY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Whether a final refusal with `code` may stop holding by itself, so that it is remembered only
/// for a while: `key_unknown` and `key_not_yet_valid`.
pub fn refusal_lapses(code: ProblemCode) -> bool {
    matches!(code, ProblemCode::KeyUnknown | ProblemCode::KeyNotYetValid)
}

/// Whether a refusal with `code`, remembered at `at`, still holds at `now`, when refusals that
/// lapse ([`refusal_lapses`]) are remembered for `unknown_for`: the one rule of how long a refused
/// key is skipped.
pub fn refusal_holds(
    code: ProblemCode,
    at: Option<i64>,
    now: time::OffsetDateTime,
    unknown_for: std::time::Duration,
) -> bool {
    if !refusal_lapses(code) {
        return true;
    }
    let Some(at) = at else {
        return false;
    };
    let elapsed = now.unix_timestamp() - at;
    // A clock set back (NTP after a boot in the future) cannot make one last longer.
    let limit = i64::try_from(unknown_for.as_secs()).unwrap_or(i64::MAX);
    (0..limit).contains(&elapsed)
}

impl Default for AgentState {
    fn default() -> Self {
        AgentState {
            version: STATE_VERSION,
            phase: Phase::WaitingForKey,
            unit_id: None,
            servers: Vec::new(),
            server: None,
            pin: None,
            enrolled_at: None,
            key_type: None,
            certificate_serial: None,
            certificate_not_after: None,
            renewed_at: None,
            inventory_reported_at: None,
            refused_keys: Vec::new(),
            key_salt: String::new(),
            last_error: None,
        }
    }
}

/// The state directory cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `state.json` is not what this agent writes (damaged by hand, or by a disk fault).
    #[error(
        "{} is damaged ({reason}); `onboard-agent reset` starts over",
        path.display()
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column (never a value from the file).
        reason: String,
    },
    /// Another `onboard-agent` (the service, or an `enroll` or `reset`) holds the state directory.
    #[error(
        "another onboard-agent holds {} (the service? `systemctl stop onboard-agent` first)",
        path.display()
    )]
    Busy {
        /// The lock file.
        path: PathBuf,
    },
    /// `state.json` was written by a newer agent.
    #[error("{} has version {found}; this agent reads version {STATE_VERSION}", path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
    /// A file cannot be written.
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl AgentState {
    /// Reads `dir/state.json`; a missing file is a fresh state.
    pub fn load(dir: &Path) -> Result<AgentState, StateError> {
        let path = dir.join(STATE_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(AgentState::default());
            }
            Err(source) => return Err(StateError::Read { path, source }),
        };
        #[derive(serde::Deserialize)]
        struct Versioned {
            version: u32,
        }
        let damaged = |error: serde_json::Error| StateError::Damaged {
            path: path.clone(),
            reason: format!(
                "not a state file at line {}, column {}",
                error.line(),
                error.column()
            ),
        };
        let versioned: Versioned = serde_json::from_slice(&bytes).map_err(damaged)?;
        if versioned.version != STATE_VERSION {
            return Err(StateError::Version {
                path,
                found: versioned.version,
            });
        }
        serde_json::from_slice(&bytes).map_err(damaged)
    }

    /// Writes `dir/state.json` atomically (0600).
    pub fn save(&self, dir: &Path) -> Result<(), WriteError> {
        let mut json = serde_json::to_vec_pretty(self).unwrap_or_default();
        json.push(b'\n');
        write_atomically(dir, STATE_FILE, &json, 0o600)
    }

    /// The digest under which `key` of the key file pinned to `ums_id` is remembered. Salted per
    /// device, so digests cannot be compared across devices nor looked up in precomputed
    /// tables; the salt sits in the same 0600 file, so a copy of the file does allow guessing
    /// offline, at the cost of a SHA-256 per guess.
    pub fn key_digest(&mut self, ums_id: &Fingerprint, key: &FirstAuthKey) -> String {
        if self.key_salt.is_empty() {
            let mut salt = [0u8; 16];
            // Without randomness the digests are still one-way; only the salt is lost.
            let _ = getrandom::fill(&mut salt);
            self.key_salt = hex(&salt);
        }
        let mut hasher = Sha256::new();
        hasher.update(self.key_salt.as_bytes());
        hasher.update(ums_id.as_bytes());
        hasher.update(key.expose_secret().as_bytes());
        hex(&hasher.finalize())
    }

    /// The digests of the refusals that still hold at `now`, for checking many keys at once.
    pub fn refused_digests(
        &self,
        now: time::OffsetDateTime,
        unknown_for: std::time::Duration,
    ) -> std::collections::HashSet<&str> {
        self.refused_keys
            .iter()
            .filter(|refused| refusal_holds(refused.code, refused.at, now, unknown_for))
            .map(|refused| refused.digest.as_str())
            .collect()
    }

    /// Whether a key with this digest was refused with a final code that still holds at `now`
    /// (`key_unknown` refusals for `unknown_for`).
    pub fn is_refused(
        &self,
        digest: &str,
        now: time::OffsetDateTime,
        unknown_for: std::time::Duration,
    ) -> bool {
        self.refused_keys.iter().any(|refused| {
            refused.digest == digest && refusal_holds(refused.code, refused.at, now, unknown_for)
        })
    }

    /// How long until the first remembered refusal that lapses (`key_unknown`,
    /// `key_not_yet_valid`) and still holds at `now` lifts; `None` when none holds. A device with
    /// no key left waits this long, then looks again.
    pub fn unknown_refusals_lift_in(
        &self,
        now: time::OffsetDateTime,
        unknown_for: std::time::Duration,
    ) -> Option<std::time::Duration> {
        let limit = i64::try_from(unknown_for.as_secs()).unwrap_or(i64::MAX);
        self.refused_keys
            .iter()
            .filter(|refused| {
                refusal_lapses(refused.code)
                    && refusal_holds(refused.code, refused.at, now, unknown_for)
            })
            .filter_map(|refused| refused.at)
            .map(|at| at.saturating_add(limit) - now.unix_timestamp())
            .min()
            .map(|seconds| {
                std::time::Duration::from_secs(u64::try_from(seconds.max(1)).unwrap_or(1))
            })
    }

    /// Remembers a final refusal at `now`, forgetting the oldest beyond [`MAX_REFUSED_KEYS`].
    pub fn remember_refusal(
        &mut self,
        digest: String,
        code: ProblemCode,
        now: time::OffsetDateTime,
    ) {
        self.refused_keys.retain(|refused| refused.digest != digest);
        self.refused_keys.push(RefusedKey {
            digest,
            code,
            at: Some(now.unix_timestamp()),
        });
        if self.refused_keys.len() > MAX_REFUSED_KEYS {
            let excess = self.refused_keys.len() - MAX_REFUSED_KEYS;
            self.refused_keys.drain(..excess);
        }
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// An exclusive hold on the state directory (`dir/.lock`, an advisory lock released when the
/// process ends however it ends): one `run`, `enroll` or `reset` at a time, so two processes
/// never make two device keys or write over each other's state.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// Takes the state directory's lock (creating the directory), or says who holds it. Then removes
/// what writes cut short left behind, which only the holder may do.
pub fn lock(dir: &Path) -> Result<StateLock, StateError> {
    ensure_dir(dir)?;
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|source| StateError::Read {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(StateError::Busy { path }),
        Err(std::fs::TryLockError::Error(source)) => return Err(StateError::Read { path, source }),
    }
    remove_leftovers(dir);
    Ok(StateLock { _file: file })
}

/// Removes `.NAME.tmp-PID` files that a write cut short by a kill or a power cut left behind.
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(".tmp-") {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Reads a file of the state directory; `None` when it does not exist.
pub fn read_optional(dir: &Path, name: &str) -> Result<Option<Vec<u8>>, StateError> {
    let path = dir.join(name);
    match fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Read { path, source }),
    }
}

/// Removes the files of an enrollment (`reset`); the unit ID stays. Returns the names removed.
pub fn remove_enrollment(dir: &Path) -> Result<Vec<&'static str>, WriteError> {
    let mut removed = Vec::new();
    // The state file first: without it nothing else counts as an enrollment.
    for name in ENROLLMENT_FILES {
        match fs::remove_file(dir.join(name)) {
            Ok(()) => removed.push(name),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(WriteError {
                    path: dir.join(name),
                    source,
                });
            }
        }
    }
    if !removed.is_empty() {
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|source| WriteError {
                path: dir.to_owned(),
                source,
            })?;
    }
    Ok(removed)
}

/// A certificate as PEM.
pub fn certificate_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// The DER of the first certificate in a PEM text.
pub fn certificate_der(text: &[u8]) -> Option<Vec<u8>> {
    pem::parse_many(text)
        .ok()?
        .into_iter()
        .find(|block| block.tag() == "CERTIFICATE")
        .map(|block| block.into_contents())
}

/// A persisted file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}", path.display())]
pub struct WriteError {
    /// The file (or directory) at fault.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Creates the state directory (mode 0700, parents as needed) if it is missing.
pub fn ensure_dir(dir: &Path) -> Result<(), WriteError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| WriteError {
            path: dir.to_owned(),
            source,
        })
}

/// Writes `bytes` to `dir/name` atomically with `mode`, creating `dir` if needed.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
    ensure_dir(dir)?;
    let target = dir.join(name);
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let fail = |path: &Path| {
        let path = path.to_owned();
        move |source| WriteError { path, source }
    };
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp)
            .map_err(fail(&temp))?;
        file.write_all(bytes).map_err(fail(&temp))?;
        // The umask may have narrowed the mode at creation; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(fail(&temp))?;
        file.sync_all().map_err(fail(&temp))?;
        fs::rename(&temp, &target).map_err(fail(&target))?;
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(fail(dir))
    })();
    if result.is_err() {
        // Best effort: a leftover temp file is harmless, but tidy is better.
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_not_yet_valid_keys_are_forgotten_after_an_hour_and_the_rest_never() {
        use ProblemCode::{
            KeyBoundToOtherDevice, KeyExhausted, KeyExpired, KeyInactive, KeyNotYetValid,
            KeyUnknown, KeyUsed,
        };
        let at = 1_800_000_000;
        let now = |seconds: i64| time::OffsetDateTime::from_unix_timestamp(at + seconds).unwrap();
        // code, remembered at, seconds later => still holds
        let table = [
            (KeyUsed, Some(at), 10 * 365 * 86_400, true),
            (KeyInactive, Some(at), 86_400, true),
            (KeyBoundToOtherDevice, None, 0, true),
            (KeyUnknown, Some(at), 0, true),
            (KeyUnknown, Some(at), 3_599, true),
            (KeyUnknown, Some(at), 3_600, false),
            (KeyUnknown, Some(at), -60, false),
            (KeyUnknown, None, 0, false),
            (KeyExpired, Some(at), 10 * 365 * 86_400, true),
            (KeyExhausted, Some(at), 10 * 365 * 86_400, true),
            (KeyNotYetValid, Some(at), 3_599, true),
            (KeyNotYetValid, Some(at), 3_600, false),
            (KeyNotYetValid, None, 0, false),
        ];
        for (code, remembered, later, holds) in table {
            assert_eq!(
                refusal_holds(code, remembered, now(later), DEFAULT_UNKNOWN_KEY_RETRY),
                holds,
                "{code} {remembered:?} +{later}"
            );
        }
    }

    #[test]
    fn a_device_out_of_keys_knows_when_an_unknown_key_may_be_tried_again() {
        let mut state = AgentState::default();
        let at = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let minute = std::time::Duration::from_secs(60);
        state.remember_refusal("a".repeat(64), ProblemCode::KeyUsed, at);
        assert_eq!(state.unknown_refusals_lift_in(at, minute), None);
        state.remember_refusal("b".repeat(64), ProblemCode::KeyUnknown, at);
        state.remember_refusal(
            "c".repeat(64),
            ProblemCode::KeyNotYetValid,
            at + time::Duration::seconds(20),
        );
        state.remember_refusal("d".repeat(64), ProblemCode::KeyExpired, at);
        let later = at + time::Duration::seconds(15);
        assert_eq!(
            state.unknown_refusals_lift_in(later, minute),
            Some(std::time::Duration::from_secs(45))
        );
        // The key not valid yet lifts 20 s after the unknown one.
        assert_eq!(
            state.unknown_refusals_lift_in(at + time::Duration::seconds(70), minute),
            Some(std::time::Duration::from_secs(10))
        );
        assert_eq!(
            state.unknown_refusals_lift_in(at + time::Duration::seconds(100), minute),
            None
        );
    }

    #[test]
    fn remembered_refusals_are_bounded_oldest_first() {
        let mut state = AgentState::default();
        let now = time::OffsetDateTime::now_utc();
        for n in 0..MAX_REFUSED_KEYS + 5 {
            state.remember_refusal(format!("{n:064x}"), ProblemCode::KeyUsed, now);
        }
        assert_eq!(state.refused_keys.len(), MAX_REFUSED_KEYS);
        let hour = DEFAULT_UNKNOWN_KEY_RETRY;
        assert!(!state.is_refused(&format!("{:064x}", 4), now, hour));
        assert!(state.is_refused(&format!("{:064x}", 5), now, hour));
        assert!(state.is_refused(&format!("{:064x}", MAX_REFUSED_KEYS + 4), now, hour));
    }

    #[test]
    fn writes_whole_files_with_the_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/b");
        write_atomically(&state, "x.json", b"one", 0o600).unwrap();
        write_atomically(&state, "x.json", b"two", 0o600).unwrap();
        assert_eq!(fs::read(state.join("x.json")).unwrap(), b"two");
        let mode = fs::metadata(state.join("x.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let names: Vec<_> = fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.json")]);
    }

    #[test]
    fn the_state_file_round_trips_and_damage_is_named_not_echoed() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(AgentState::load(dir.path()).unwrap(), AgentState::default());
        let mut state = AgentState {
            phase: Phase::Enrolled,
            unit_id: Some("00E0C5540B8B".parse().unwrap()),
            servers: vec!["ums.example:8443".into()],
            ..AgentState::default()
        };
        let fingerprint = Fingerprint::of_der(b"ums id");
        let key = FirstAuthKey::new("40512337860129621").unwrap();
        let digest = state.key_digest(&fingerprint, &key);
        let now = time::OffsetDateTime::now_utc();
        state.remember_refusal(digest.clone(), ProblemCode::KeyUsed, now);
        state.remember_refusal(digest.clone(), ProblemCode::KeyUsed, now);
        state.save(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join(STATE_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
        assert!(!text.contains(key.expose_secret()), "{text}");
        let loaded = AgentState::load(dir.path()).unwrap();
        assert_eq!(loaded, state);
        assert_eq!(loaded.refused_keys.len(), 1);
        assert!(loaded.is_refused(&digest, now, DEFAULT_UNKNOWN_KEY_RETRY));
        // The same key under another salt digests differently.
        let mut other = AgentState::default();
        assert_ne!(other.key_digest(&fingerprint, &key), digest);

        fs::write(
            dir.path().join(STATE_FILE),
            b"{\"version\": 1, \"phase\": 40512337860129621",
        )
        .unwrap();
        let error = AgentState::load(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("state.json") && error.contains("line 1"),
            "{error}"
        );
        assert!(!error.contains("40512337860129621"), "{error}");
        fs::write(dir.path().join(STATE_FILE), b"{\"version\": 9}").unwrap();
        let error = AgentState::load(dir.path()).unwrap_err().to_string();
        assert!(error.contains("version 9"), "{error}");
    }

    #[test]
    fn leftovers_of_a_cut_write_are_removed_and_reset_keeps_the_unit_id() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".state.json.tmp-4242"), b"{half").unwrap();
        fs::write(dir.path().join("unit-id.json"), b"{}").unwrap();
        AgentState::default().save(dir.path()).unwrap();
        write_atomically(dir.path(), DEVICE_KEY_FILE, b"k", 0o600).unwrap();
        // Reading leaves a write in progress alone; the lock holder tidies.
        AgentState::load(dir.path()).unwrap();
        assert!(dir.path().join(".state.json.tmp-4242").exists());
        let held = lock(dir.path()).unwrap();
        assert!(!dir.path().join(".state.json.tmp-4242").exists());
        let busy = lock(dir.path()).unwrap_err().to_string();
        assert!(
            busy.contains("another onboard-agent") && busy.contains(".lock"),
            "{busy}"
        );
        drop(held);
        lock(dir.path()).unwrap();
        assert_eq!(
            remove_enrollment(dir.path()).unwrap(),
            vec![STATE_FILE, DEVICE_KEY_FILE]
        );
        assert!(dir.path().join("unit-id.json").exists());
        assert!(remove_enrollment(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_directory_that_cannot_be_made_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, b"").unwrap();
        let error = write_atomically(&blocker.join("sub"), "x", b"", 0o600).unwrap_err();
        assert!(error.to_string().contains("file/sub"), "{error}");
    }

    #[test]
    fn hex_is_lower_case_two_digits_a_byte() {
        assert_eq!(hex(&[]), "");
        assert_eq!(hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
    }
}
