//! The store: one interface for the key data, so that SQLite (the embedded default) and later
//! PostgreSQL (several stub servers sharing one database) are interchangeable.
//!
//! The store holds keys only as look-up digests and sealed values (see [`crate::vault`]); it never
//! sees a key in the clear.

mod sqlite;

use std::fmt;
use std::str::FromStr;

use onboard_protocol::{KeyKind, ProblemCode, UnitId};
use time::OffsetDateTime;

pub use sqlite::SqliteStore;

use crate::vault::LookupDigest;

/// A key's number in the store, as `keys list` shows it.
pub type KeyId = i64;

/// A key's status, as the UMS key list shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyStatus {
    /// Usable for enrollment.
    Active,
    /// Deactivated by an administrator.
    Inactive,
    /// A one-time or device-bound key that has enrolled its device.
    Used,
}

impl KeyStatus {
    /// The stable name used on the command line and in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Inactive => "inactive",
            KeyStatus::Used => "used",
        }
    }

    /// How the UMS key list shows it.
    pub const fn label(self) -> &'static str {
        match self {
            KeyStatus::Active => "Active",
            KeyStatus::Inactive => "Inactive",
            KeyStatus::Used => "Used",
        }
    }
}

impl fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "active" => Ok(KeyStatus::Active),
            "inactive" => Ok(KeyStatus::Inactive),
            "used" => Ok(KeyStatus::Used),
            _ => Err(format!(
                "{text:?} is not a key status: expected active, inactive or used"
            )),
        }
    }
}

/// A key to insert.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// Its kind.
    pub kind: KeyKind,
    /// HMAC digest of the value; unique across all keys.
    pub lookup: LookupDigest,
    /// The sealed value.
    pub sealed: Vec<u8>,
    /// The unit ID a device-bound key names.
    pub unit_id: Option<UnitId>,
    /// The administrator's comment.
    pub comment: String,
    /// Whether the value was generated (on a clash, generate another) or typed (a clash is an
    /// error: two keys with the same password cannot exist).
    pub generated: bool,
}

/// A key as stored.
#[derive(Debug, Clone)]
pub struct StoredKey {
    /// Its number.
    pub id: KeyId,
    /// Its kind.
    pub kind: KeyKind,
    /// HMAC digest of the value.
    pub lookup: LookupDigest,
    /// The sealed value.
    pub sealed: Vec<u8>,
    /// The unit ID a device-bound key names.
    pub unit_id: Option<UnitId>,
    /// Whether an administrator left it activated.
    pub active: bool,
    /// Successful enrollments with it.
    pub usage_count: u64,
    /// The last successful enrollment with it.
    pub usage_date: Option<OffsetDateTime>,
    /// The administrator's comment.
    pub comment: String,
    /// When it was created.
    pub created_at: OffsetDateTime,
}

impl StoredKey {
    /// The status the UMS shows: Used wins over the activation flag.
    pub fn status(&self) -> KeyStatus {
        if self.kind != KeyKind::MassDeployment && self.usage_count > 0 {
            KeyStatus::Used
        } else if self.active {
            KeyStatus::Active
        } else {
            KeyStatus::Inactive
        }
    }
}

/// Which keys to list. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    /// Only this kind.
    pub kind: Option<KeyKind>,
    /// Only this status.
    pub status: Option<KeyStatus>,
    /// Only keys bound to this unit ID.
    pub unit_id: Option<UnitId>,
    /// Only these keys.
    pub ids: Option<Vec<KeyId>>,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Some of the named keys do not exist; nothing was changed.
    #[error("no key with ID {}; nothing was changed", join(.0))]
    NotFound(Vec<KeyId>),
    /// A typed key value that another key already has.
    #[error("another key already has this value; two keys cannot share a password")]
    DuplicateKey,
    /// Generated values kept clashing (practically impossible with 17 random digits).
    #[error("could not generate a unique key value after {0} attempts")]
    NoUniqueValue(usize),
    /// The database failed.
    #[error("database {path}")]
    Database {
        /// The database file.
        path: String,
        /// The failure.
        #[source]
        source: rusqlite::Error,
    },
    /// No device with this unit ID is enrolled.
    #[error("no enrolled device has unit ID {0}")]
    DeviceNotFound(UnitId),
    /// Signing the device certificate failed (the transaction was rolled back).
    #[error("cannot issue the device certificate: {0}")]
    Issue(String),
    /// The database holds something this code cannot read.
    #[error("database {path}: {reason}")]
    Corrupt {
        /// The database file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

fn join(ids: &[KeyId]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Calls back with the number of keys done so far, for progress bars.
pub type Progress<'a> = &'a dyn Fn(u64);

/// Makes the `index`th key of a batch; called again for the same index when a generated value
/// clashes with an existing key.
pub type MakeKey<'a> = &'a mut dyn FnMut(usize) -> NewKey;

/// An enrollment attempt, as the store sees it: no key value, only its digest.
#[derive(Debug, Clone)]
pub struct EnrollAttempt {
    /// The unit ID the device claims (HTTP Basic user).
    pub unit_id: UnitId,
    /// The digest of the key it presented.
    pub lookup: LookupDigest,
    /// The DER SubjectPublicKeyInfo of its certificate request.
    pub public_key: Vec<u8>,
    /// The source address, for the audit log.
    pub source: String,
}

/// A device certificate just signed.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Its serial number, hex.
    pub serial: String,
    /// Its expiry.
    pub not_after: OffsetDateTime,
}

/// Signs a certificate; called inside the transaction, only when the request is good.
pub type IssueCertificate<'a> = &'a mut dyn FnMut() -> Result<IssuedCertificate, String>;

/// Signs the certificate for an enrollment attempt; may run on the store's writer thread.
pub type IssueOnce = Box<dyn FnOnce() -> Result<IssuedCertificate, String> + Send>;

/// An enrolled device.
#[derive(Debug, Clone)]
pub struct DeviceRecord {
    /// Its unit ID.
    pub unit_id: UnitId,
    /// The DER SubjectPublicKeyInfo its certificate certifies.
    pub public_key: Vec<u8>,
    /// Its current certificate, DER.
    pub certificate: Vec<u8>,
    /// That certificate's serial, hex.
    pub serial: String,
    /// That certificate's expiry.
    pub not_after: OffsetDateTime,
    /// The key it enrolled with (gone if the key was deleted since).
    pub key_id: Option<KeyId>,
    /// The kind of that key.
    pub key_kind: KeyKind,
    /// When it first enrolled.
    pub enrolled_at: OffsetDateTime,
    /// When it was last heard from.
    pub last_seen: OffsetDateTime,
    /// The facts it last reported about itself (JSON), if any.
    pub inventory: Option<String>,
}

/// What an enrollment attempt came to.
#[derive(Debug, Clone)]
pub enum EnrollOutcome {
    /// A certificate: new, or (`repeated`) the one already issued to this unit ID and key pair.
    Issued {
        /// The device as now recorded.
        device: DeviceRecord,
        /// Whether this was a retry answered with the stored certificate, consuming nothing.
        repeated: bool,
    },
    /// Refused with a stable problem code.
    Refused(ProblemCode),
}

/// One line of the audit log. Never holds a key value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// When.
    pub at: OffsetDateTime,
    /// What: `enroll`, `reenroll`, `keys.create`, `keys.edit`, `keys.activate`, `keys.deactivate`,
    /// `keys.delete`, `devices.delete`.
    pub event: String,
    /// The unit ID concerned, if any.
    pub unit_id: Option<String>,
    /// The key concerned, if one.
    pub key_id: Option<KeyId>,
    /// Where the request came from (an address, or `cli`).
    pub source: String,
    /// `ok` or a problem code.
    pub outcome: String,
    /// More, for people (an ID range, a certificate serial).
    pub detail: String,
}

/// What the key operations need from a database.
pub trait Store: Send + Sync {
    /// Inserts `count` keys made by `make`, all in one transaction: all of them or none.
    fn insert_keys(
        &self,
        count: usize,
        make: MakeKey<'_>,
        progress: Progress<'_>,
    ) -> Result<Vec<KeyId>, StoreError>;

    /// The keys matching `filter`, by ID.
    fn keys(&self, filter: &KeyFilter) -> Result<Vec<StoredKey>, StoreError>;

    /// Sets one key's comment.
    fn set_comment(&self, id: KeyId, comment: &str) -> Result<(), StoreError>;

    /// Activates or deactivates keys: all of them, or none if any ID is unknown.
    fn set_active(&self, ids: &[KeyId], active: bool) -> Result<(), StoreError>;

    /// Deletes keys: all of them, or none if any ID is unknown.
    fn delete_keys(&self, ids: &[KeyId]) -> Result<(), StoreError>;

    /// Decides an enrollment attempt and, when the key is good, records the device and the key's
    /// use in one transaction with the certificate `issue` signs. Exactly once: a one-time key is
    /// consumed by one device however many attempts race, and a retry by the same unit ID with the
    /// same public key gets the stored certificate back without consuming anything. An
    /// implementation may decide several concurrent attempts in one transaction (group commit).
    fn enroll(&self, attempt: EnrollAttempt, issue: IssueOnce)
    -> Result<EnrollOutcome, StoreError>;

    /// Replaces the certificate of an enrolled device whose current certificate has `serial`.
    /// `None` when no device has that unit ID and serial.
    fn renew(
        &self,
        unit_id: &UnitId,
        serial: &str,
        public_key: &[u8],
        source: &str,
        issue: IssueCertificate<'_>,
    ) -> Result<Option<DeviceRecord>, StoreError>;

    /// Records that an enrolled device (by the serial of the certificate it presented) was
    /// heard from, with the facts it reported. `false` when no device has that serial.
    fn touch_device(
        &self,
        unit_id: &UnitId,
        serial: &str,
        inventory: Option<&str>,
    ) -> Result<bool, StoreError>;

    /// All enrolled devices, by unit ID.
    fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError>;

    /// Forgets a device so its unit ID may enroll again (with a new key pair).
    fn delete_device(&self, unit_id: &UnitId, source: &str) -> Result<(), StoreError>;

    /// Appends to the audit log (for refusals decided before the store is asked, such as rate
    /// limits and malformed requests).
    fn record(&self, entry: &AuditEntry) -> Result<(), StoreError>;

    /// The audit log from `since` on, oldest first.
    fn audit(&self, since: Option<OffsetDateTime>) -> Result<Vec<AuditEntry>, StoreError>;
}
