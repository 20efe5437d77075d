//! The device's unit ID: configured, else persisted, else detected from the NICs and persisted.
//!
//! Detection runs once. Its result is kept in `STATE_DIR/unit-id.json` and returned from then on,
//! so that a USB NIC plugged in later (which might win the rule on a device whose only built-in NIC
//! is on another bus) never changes a device's identity. A unit ID that is configured (config file
//! or `--unit-id`) wins over both and is not persisted.
//!
//! The file, written atomically:
//!
//! ```json
//! {"version":1,"unit_id":"00E0C5540B8B","interface":"eno1","detected_at":"2026-11-22T10:00:00Z"}
//! ```

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use onboard_protocol::UnitId;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::nic::{self, Interfaces, SysfsError};
use crate::state::{self, WriteError};

/// The persisted unit ID's file name inside the state directory.
pub const UNIT_ID_FILE: &str = "unit-id.json";

/// The version of [`UNIT_ID_FILE`]'s format this agent writes and reads.
pub const UNIT_ID_FILE_VERSION: u32 = 1;

/// Where sysfs is mounted unless told otherwise.
pub const DEFAULT_SYSFS_ROOT: &str = "/sys";

/// Where a unit ID came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The config file or `--unit-id`.
    Configured,
    /// The state directory, from an earlier detection.
    Persisted,
    /// Worked out just now from the NICs.
    Detected,
}

impl Source {
    /// The stable name used in JSON and messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Configured => "configured",
            Source::Persisted => "persisted",
            Source::Detected => "detected",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A unit ID and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Resolved {
    /// The unit ID.
    pub unit_id: UnitId,
    /// Where it came from.
    pub source: Source,
    /// The interface it was detected from (now or when it was persisted); `None` when configured.
    pub interface: Option<String>,
}

/// Whether a detected unit ID is written to the state directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persist {
    /// Write it (the agent's normal course: the first detection decides for good).
    Yes,
    /// Leave the state directory untouched (a read-only look such as `scan`).
    No,
}

/// Why no unit ID could be had.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// No physical NIC with a usable MAC.
    #[error(
        "no physical network interface with a usable MAC address in {}{}; set unit_id in the \
         config file or pass --unit-id (a MAC such as 00E0C5540B8B, or a UD Pocket's \
         18-character serial)",
        class_net.display(),
        skipped_summary(skipped)
    )]
    NoUsableNic {
        /// The folder looked in.
        class_net: PathBuf,
        /// Every interface passed over, with the reason.
        skipped: Vec<nic::Skipped>,
    },
    /// The interfaces could not be listed.
    #[error(transparent)]
    Sysfs(#[from] SysfsError),
    /// The persisted file exists but cannot be read.
    #[error("cannot read the persisted unit ID {}", path.display())]
    ReadPersisted {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The persisted file is not what this agent writes. It is not replaced by a fresh
    /// detection, which might give another unit ID; the message says how to start over.
    #[error(
        "the persisted unit ID {} is damaged or from an unknown version ({reason}); delete it to \
         detect the unit ID anew, or configure one",
        path.display()
    )]
    BadPersisted {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The detected unit ID could not be persisted.
    #[error("cannot persist the detected unit ID")]
    Persist(#[source] WriteError),
}

fn skipped_summary(skipped: &[nic::Skipped]) -> String {
    if skipped.is_empty() {
        return " (there are none)".to_owned();
    }
    // A host with a hundred veths must not bury the advice that follows.
    const SHOWN: usize = 8;
    let mut list: Vec<String> = skipped
        .iter()
        .take(SHOWN)
        .map(|skip| format!("{}: {}", skip.name, skip.reason))
        .collect();
    if skipped.len() > SHOWN {
        list.push(format!("and {} more", skipped.len() - SHOWN));
    }
    format!(" (passed over: {})", list.join("; "))
}

/// The persisted file's content.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct PersistedUnitId {
    version: u32,
    unit_id: UnitId,
    interface: Option<String>,
    detected_at: Option<String>,
}

/// The unit ID: `configured` if given, else the persisted one in `state_dir`, else detected from
/// the NICs under `sysfs_root` (and persisted when `persist` says so).
pub fn resolve(
    configured: Option<&UnitId>,
    state_dir: &Path,
    sysfs_root: &Path,
    persist: Persist,
) -> Result<Resolved, IdentityError> {
    if let Some(unit_id) = configured {
        return Ok(Resolved {
            unit_id: unit_id.clone(),
            source: Source::Configured,
            interface: None,
        });
    }
    if let Some(resolved) = read_persisted(state_dir)? {
        return Ok(resolved);
    }
    let resolved = detect(sysfs_root)?;
    if persist == Persist::Yes {
        write_persisted(state_dir, &resolved).map_err(IdentityError::Persist)?;
    }
    Ok(resolved)
}

/// Detects the unit ID from the NICs under `sysfs_root`, without looking at any state.
pub fn detect(sysfs_root: &Path) -> Result<Resolved, IdentityError> {
    let Interfaces { nics, skipped } = nic::read_interfaces(sysfs_root)?;
    match nic::choose(&nics) {
        Some(nic) => Ok(Resolved {
            unit_id: nic.mac.clone(),
            source: Source::Detected,
            interface: Some(nic.name.clone()),
        }),
        None => Err(IdentityError::NoUsableNic {
            class_net: sysfs_root.join("class/net"),
            skipped,
        }),
    }
}

/// The unit ID persisted in `state_dir`, if there is one.
pub fn read_persisted(state_dir: &Path) -> Result<Option<Resolved>, IdentityError> {
    let path = state_dir.join(UNIT_ID_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(IdentityError::ReadPersisted { path, source }),
    };
    let bad = |reason: String| IdentityError::BadPersisted {
        path: path.clone(),
        reason,
    };
    let file: PersistedUnitId =
        serde_json::from_slice(&bytes).map_err(|error| bad(error.to_string()))?;
    if file.version != UNIT_ID_FILE_VERSION {
        return Err(bad(format!(
            "version {}, this agent knows {UNIT_ID_FILE_VERSION}",
            file.version
        )));
    }
    Ok(Some(Resolved {
        unit_id: file.unit_id,
        source: Source::Persisted,
        interface: file.interface,
    }))
}

/// Persists a detected unit ID atomically.
fn write_persisted(state_dir: &Path, resolved: &Resolved) -> Result<(), WriteError> {
    let file = PersistedUnitId {
        version: UNIT_ID_FILE_VERSION,
        unit_id: resolved.unit_id.clone(),
        interface: resolved.interface.clone(),
        detected_at: OffsetDateTime::now_utc().format(&Rfc3339).ok(),
    };
    let mut json = serde_json::to_vec(&file).unwrap_or_default();
    json.push(b'\n');
    state::write_atomically(state_dir, UNIT_ID_FILE, &json, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_wins_and_is_not_persisted() {
        let state = tempfile::tempdir().unwrap();
        let unit: UnitId = "UDP1234567890ABCDE".parse().unwrap();
        let resolved = resolve(
            Some(&unit),
            state.path(),
            Path::new("/nonexistent"),
            Persist::Yes,
        )
        .unwrap();
        assert_eq!(resolved.source, Source::Configured);
        assert_eq!(resolved.unit_id, unit);
        assert!(!state.path().join(UNIT_ID_FILE).exists());
    }

    #[test]
    fn no_interfaces_says_how_to_configure_one() {
        let state = tempfile::tempdir().unwrap();
        let error = resolve(None, state.path(), state.path(), Persist::Yes).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("--unit-id"), "{message}");
        assert!(message.contains("unit_id"), "{message}");
        assert!(message.contains("there are none"), "{message}");
    }

    #[test]
    fn a_long_list_of_passed_over_interfaces_is_cut_short() {
        let skipped: Vec<nic::Skipped> = (0..20)
            .map(|n| nic::Skipped {
                name: format!("veth{n:02}"),
                reason: "virtual (no device link)",
            })
            .collect();
        let summary = skipped_summary(&skipped);
        assert!(
            summary.contains("veth07") && !summary.contains("veth08"),
            "{summary}"
        );
        assert!(summary.ends_with("and 12 more)"), "{summary}");
    }

    #[test]
    fn a_damaged_or_newer_file_is_not_replaced() {
        let state = tempfile::tempdir().unwrap();
        let path = state.path().join(UNIT_ID_FILE);
        for text in [
            "{",
            r#"{"version":2,"unit_id":"00E0C5540B8B","interface":null,"detected_at":null}"#,
            r#"{"version":1,"unit_id":"nope","interface":null,"detected_at":null}"#,
        ] {
            std::fs::write(&path, text).unwrap();
            let error = read_persisted(state.path()).unwrap_err().to_string();
            assert!(error.contains("delete it"), "{error}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        }
    }

    #[test]
    fn a_persisted_file_reads_back() {
        let state = tempfile::tempdir().unwrap();
        let resolved = Resolved {
            unit_id: "00E0C5540B8B".parse().unwrap(),
            source: Source::Detected,
            interface: Some("eno1".to_owned()),
        };
        write_persisted(state.path(), &resolved).unwrap();
        let back = read_persisted(state.path()).unwrap().unwrap();
        assert_eq!(back.source, Source::Persisted);
        assert_eq!(back.unit_id, resolved.unit_id);
        assert_eq!(back.interface.as_deref(), Some("eno1"));
    }
}
