//! The store: one async interface for the server's data (keys, devices, the audit log), so that
//! SQLite (the embedded default) and PostgreSQL (several servers sharing one database) are
//! interchangeable. The server holds it as `Arc<dyn Store>`, chosen by [`open`] from the settings.
//!
//! The store holds keys only as look-up digests and sealed values (see [`crate::vault`]); it never
//! sees a key in the clear. It decides no key rule: backends read rows, ask [`crate::claim`], and
//! apply the answer. Its errors name no backend. Every change it records names its [`Actor`].

mod postgres;
mod sqlite;

use std::fmt;
use std::sync::Arc;

use onboard_protocol::admin::{KeyId, KeyStatus, Right};
use onboard_protocol::{Fingerprint, KeyKind, ProblemCode, UnitId};
use time::OffsetDateTime;

pub use postgres::{Dump, PostgresStore, shown_url as postgres_shown_url};
pub use sqlite::SqliteStore;

pub use crate::cluster::MainUmsId;
use crate::config::{Database, Settings};
use crate::row_mac::{RowKey, RowMac};
use crate::vault::LookupDigest;

/// Who made a change and from where, as the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `cli`, an administrator's name, or a device's unit ID.
    pub name: String,
    /// The source address, or `local` for the command line on the server machine.
    pub source: String,
    /// The API token an administrator acted through (`rig (17)`: its name and public ID), if one.
    pub via: Option<String>,
}

impl Actor {
    /// The command line on the server machine.
    pub fn cli() -> Self {
        Self {
            name: "cli".to_owned(),
            source: "local".to_owned(),
            via: None,
        }
    }

    /// An enrolling or enrolled device, from `source`.
    pub fn device(unit_id: &UnitId, source: impl fmt::Display) -> Self {
        Self {
            name: unit_id.to_string(),
            source: source.to_string(),
            via: None,
        }
    }

    /// A request that named nobody (malformed credentials), from `source`.
    pub fn anonymous(source: impl fmt::Display) -> Self {
        Self {
            name: "-".to_owned(),
            source: source.to_string(),
            via: None,
        }
    }

    /// The same actor, acting through the API token `name` with the public ID `id`.
    pub fn via_token(mut self, name: &str, id: &str) -> Self {
        self.via = Some(format!("{name} ({id})"));
        self
    }

    /// An administrator's account, from `source`.
    pub fn admin(name: impl Into<String>, source: impl fmt::Display) -> Self {
        Self {
            name: name.into(),
            source: source.to_string(),
            via: None,
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
    /// Its status as [`crate::claim::status`] decided it at its last change.
    pub status: KeyStatus,
    /// Successful enrollments with it.
    pub usage_count: u64,
    /// The last successful enrollment with it.
    pub usage_date: Option<OffsetDateTime>,
    /// The administrator's comment.
    pub comment: String,
    /// When it was created.
    pub created_at: OffsetDateTime,
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
    /// Only keys whose comment holds this text (case ignored for ASCII letters).
    pub comment: Option<String>,
}

/// Which audit lines to list. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only lines at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only lines about this unit ID.
    pub unit_id: Option<UnitId>,
    /// Only lines with this outcome (`ok` or a problem code).
    pub outcome: Option<String>,
    /// Only lines by this actor.
    pub actor: Option<String>,
    /// Newest first (pages then start after the line named, going back in time).
    pub newest_first: bool,
}

/// Where a page of a list starts and how long it is (keyset paging: rows after `after`, in list
/// order). A limit of 0 gives an empty page with no next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest<A> {
    /// The most rows to return.
    pub limit: usize,
    /// Start after this row (its ID, or unit ID for devices); `None` for the first page.
    pub after: Option<A>,
}

impl<A> PageRequest<A> {
    /// The first `limit` rows.
    pub fn first(limit: usize) -> Self {
        Self { limit, after: None }
    }

    /// Every row: for callers that need the whole list (an export, a test).
    pub fn all() -> Self {
        Self {
            limit: usize::MAX,
            after: None,
        }
    }
}

/// What is missing when a store operation finds nothing to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// These keys do not exist.
    Keys(Vec<KeyId>),
    /// No enrolled device has this unit ID.
    Device(UnitId),
    /// No account has this name.
    Account(String),
    /// No token has this ID.
    Token(String),
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Keys(ids) => write!(
                f,
                "no key with ID {}; nothing was changed",
                ids.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Missing::Device(unit_id) => write!(f, "no enrolled device has unit ID {unit_id}"),
            Missing::Account(name) => write!(f, "no account is named {name:?}"),
            Missing::Token(id) => write!(f, "no token has ID {id:?}"),
        }
    }
}

/// Why a store operation failed. Names no backend: callers branch on the variant.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// What the operation names does not exist; nothing was changed.
    #[error("{0}")]
    NotFound(Missing),
    /// The change clashes with what exists (a typed key value another key has).
    #[error("{0}")]
    Conflict(String),
    /// The database cannot be reached or is busy for now; retrying later may work.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database belongs to another UMS ID: its sealed keys would not open under this one.
    #[error(
        "the database {database} was made under UMS ID {stored}, but this server's UMS ID is \
         {ours}; restore the UMS ID it was made under (ums-stub ums-id restore BACKUP --force), or \
         use a data directory of its own for this UMS ID"
    )]
    OtherUmsId {
        /// Where the database is.
        database: String,
        /// The fingerprint recorded in the database.
        stored: Fingerprint,
        /// This server's fingerprint.
        ours: Fingerprint,
    },
    /// The database's schema is newer than this program.
    #[error(
        "the database {database} has schema version {found}, newer than this ums-stub knows \
         ({known}); upgrade ums-stub"
    )]
    SchemaTooNew {
        /// Where the database is.
        database: String,
        /// Its version.
        found: i64,
        /// The newest this program knows.
        known: i64,
    },
    /// Signing the device certificate failed (the transaction was rolled back).
    #[error("cannot issue the device certificate: {0}")]
    Issue(String),
    /// The database holds something this code cannot read.
    #[error("the database {database} holds {reason}")]
    Corrupt {
        /// Where the database is.
        database: String,
        /// What is wrong.
        reason: String,
    },
    /// The backend failed.
    #[error("the database {database} failed")]
    Backend {
        /// Where the database is.
        database: String,
        /// The failure.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Calls back with the number of keys done so far, for progress bars.
pub type Progress = Box<dyn Fn(u64) + Send + Sync>;

/// Makes the `index`th key of a batch; called again for the same index when a generated value
/// clashes with an existing key.
pub type MakeKey = Box<dyn FnMut(usize) -> NewKey + Send>;

/// An enrollment attempt, as the store sees it: no key value, only its digest.
#[derive(Debug, Clone)]
pub struct EnrollAttempt {
    /// The unit ID the device claims (HTTP Basic user).
    pub unit_id: UnitId,
    /// The digest of the key it presented (HTTP Basic).
    pub lookup: LookupDigest,
    /// The digests of the alternates it presented after it, in the order to try
    /// ([`onboard_protocol::alternates`]); at most seven.
    pub alternates: Vec<LookupDigest>,
    /// The DER SubjectPublicKeyInfo of its certificate request.
    pub public_key: Vec<u8>,
    /// The source address, for the audit log (the actor is the unit ID).
    pub source: String,
    /// A record of this unit ID whose certificate expired before this instant has lapsed
    /// ([`crate::renewal::lapsed`]) and is replaced, as if the unit ID were new.
    pub lapsed_before: OffsetDateTime,
}

/// A renewal request, as the store sees it.
#[derive(Debug, Clone)]
pub struct RenewalRequest {
    /// The unit ID the presented certificate names.
    pub unit_id: UnitId,
    /// The serial of the presented certificate, hex.
    pub serial: String,
    /// Its expiry.
    pub not_after: OffsetDateTime,
    /// The DER SubjectPublicKeyInfo of the certificate request.
    pub public_key: Vec<u8>,
    /// How long after expiry a certificate may still renew.
    pub grace: time::Duration,
}

/// What a renewal came to.
#[derive(Debug, Clone)]
pub enum RenewOutcome {
    /// A new certificate (in the record).
    Renewed(DeviceRecord),
    /// The current certificate again: the device renewed before and lost the answer.
    Repeated(DeviceRecord),
    /// Refused.
    Refused(crate::renewal::Refusal),
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

/// Signs the certificate for an enrollment or renewal; called inside the transaction, only when
/// the request is good, and may run on a backend's writer thread.
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
    /// The serial of the certificate before it, honoured until the device is seen with the current.
    pub previous_serial: Option<String>,
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
    /// The server holding its connector session (by its heartbeat name), while it is connected.
    pub online_server: Option<String>,
}

/// When a committed write must be on the disk: before it is answered, or with whatever write
/// syncs next. The rule of which writes may wait lives here; the backends apply it (SQLite's writer
/// syncs its WAL file after a batch holding a [`Durability::Synced`] write, PostgreSQL commits the
/// others with `synchronous_commit` off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// On the disk before it is answered: it changed what a key or a device is, or it records
    /// something done (an export, a reveal).
    Synced,
    /// Only an audit line of a refusal, or of a retry answered from what is stored: a killed
    /// process keeps it, a power cut may lose it, and no key or device depends on it. It costs
    /// no fsync of its own.
    Deferred,
}

impl Durability {
    /// What a batch of writes needs: synced if any one of them does.
    pub fn of_all(each: impl IntoIterator<Item = Durability>) -> Durability {
        if each.into_iter().any(|one| one == Durability::Synced) {
            Durability::Synced
        } else {
            Durability::Deferred
        }
    }
}

impl EnrollOutcome {
    /// Only a new certificate (a key consumed, a device recorded) must be synced before the
    /// device hears of it; a refusal or a repeated answer changes nothing a device relies on.
    pub fn durability(&self) -> Durability {
        match self {
            EnrollOutcome::Issued {
                repeated: false, ..
            } => Durability::Synced,
            EnrollOutcome::Issued { repeated: true, .. }
            | EnrollOutcome::Refused(_)
            | EnrollOutcome::RefusedEach(_) => Durability::Deferred,
        }
    }
}

impl AuditEntry {
    /// A refusal's line (an outcome other than `ok`) may wait for the next sync; a line recording
    /// something done (an export, a reveal: audited before it is shown) may not.
    pub fn durability(&self) -> Durability {
        if self.outcome == "ok" {
            Durability::Synced
        } else {
            Durability::Deferred
        }
    }
}

/// What an enrollment attempt came to.
#[derive(Debug, Clone)]
pub enum EnrollOutcome {
    /// A certificate: new, or (`repeated`) the one already issued to this unit ID and key pair.
    Issued {
        /// The device as now recorded.
        device: Box<DeviceRecord>,
        /// Whether this was a retry answered with the stored certificate, consuming nothing.
        repeated: bool,
        /// Which key enrolled it: 0 the first, then the alternates.
        key: usize,
        /// The keys tried before it and refused, by index, each audited as if presented alone.
        refused: Vec<(usize, ProblemCode)>,
    },
    /// The one key presented was refused, with a stable problem code.
    Refused(ProblemCode),
    /// Alternates were presented and every key tried was refused, in order (the last one's code
    /// is the answer). A refusal final for the device (`unit_id_conflict`) ends the tries.
    RefusedEach(Vec<(usize, ProblemCode)>),
}

/// The keys of one attempt tried in order inside one transaction (the Basic key, then the
/// alternates), and what they came to. The backends loop over [`KeyTries::lookups`], try each
/// key, and hand its outcome to [`KeyTries::take`]; so the order and the stopping rule live once.
#[derive(Debug, Default)]
pub(crate) struct KeyTries {
    refused: Vec<(usize, ProblemCode)>,
    alternates: bool,
}

impl KeyTries {
    /// Tries for `attempt`, and its keys in the order to try them.
    pub(crate) fn new(
        attempt: &EnrollAttempt,
    ) -> (KeyTries, impl Iterator<Item = (usize, &LookupDigest)>) {
        let tries = KeyTries {
            refused: Vec::new(),
            alternates: !attempt.alternates.is_empty(),
        };
        let lookups = std::iter::once(&attempt.lookup)
            .chain(&attempt.alternates)
            .enumerate();
        (tries, lookups)
    }

    /// What key `index` came to; the attempt's outcome when it ends here (a certificate, or a
    /// refusal final for the device), `None` to try the next key.
    pub(crate) fn take(&mut self, index: usize, outcome: EnrollOutcome) -> Option<EnrollOutcome> {
        match outcome {
            EnrollOutcome::Issued {
                device, repeated, ..
            } => Some(EnrollOutcome::Issued {
                device,
                repeated,
                key: index,
                refused: std::mem::take(&mut self.refused),
            }),
            EnrollOutcome::Refused(code) => {
                self.refused.push((index, code));
                (!code.is_final_for_key()).then(|| self.finish())
            }
            EnrollOutcome::RefusedEach(each) => {
                self.refused.extend(each);
                None
            }
        }
    }

    /// Every key tried was refused.
    pub(crate) fn finish(&mut self) -> EnrollOutcome {
        let refused = std::mem::take(&mut self.refused);
        match refused.as_slice() {
            [(0, code)] if !self.alternates => EnrollOutcome::Refused(*code),
            _ => EnrollOutcome::RefusedEach(refused),
        }
    }
}

/// One line of the audit log. Never holds a key value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Its number, in the order lines were written (0 for a line not yet written).
    pub id: i64,
    /// When.
    pub at: OffsetDateTime,
    /// What: `enroll`, `reenroll`, `keys.create`, `keys.edit`, `keys.activate`, `keys.deactivate`,
    /// `keys.delete`, `devices.delete`, `devices.command` (outcome `offline` when the device was
    /// not connected).
    pub event: String,
    /// Who: `cli`, an administrator, or a device's unit ID.
    pub actor: String,
    /// Where the request came from: an address, or `local`.
    pub source: String,
    /// The unit ID concerned, if any.
    pub unit_id: Option<String>,
    /// The key concerned, if one.
    pub key_id: Option<KeyId>,
    /// `ok` or a problem code.
    pub outcome: String,
    /// More, for people (an ID range, a certificate serial).
    pub detail: String,
    /// The API token the actor acted through ([`Actor::via`]); written into the stored detail
    /// ([`AuditEntry::stored_detail`]), so a line read back has it there and `None` here.
    pub via: Option<String>,
}

impl AuditEntry {
    /// A line for `event` by `actor` now, outcome `ok`, to be filled in.
    pub fn new(event: &str, actor: &Actor) -> Self {
        Self {
            id: 0,
            at: OffsetDateTime::now_utc(),
            event: event.to_owned(),
            actor: actor.name.clone(),
            source: actor.source.clone(),
            unit_id: None,
            key_id: None,
            outcome: "ok".to_owned(),
            detail: String::new(),
            via: actor.via.clone(),
        }
    }

    /// The detail as stored: with the token the actor acted through, when one.
    pub fn stored_detail(&self) -> String {
        match (&self.via, self.detail.is_empty()) {
            (None, _) => self.detail.clone(),
            (Some(token), true) => format!("via token {token}"),
            (Some(token), false) => format!("{}; via token {token}", self.detail),
        }
    }
}

/// A device connector session: the server holding it (by its heartbeat name) and its number
/// there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRef<'a> {
    /// The server's heartbeat name.
    pub server: &'a str,
    /// The session's number on that server.
    pub id: i64,
}

/// The command queued for the server holding a deleted device's connector session: close it.
pub const DISCONNECT: &str = "disconnect";

/// An administrator account as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct AccountRow {
    /// Its name.
    pub name: String,
    /// Its password's argon2id hash, as a PHC string.
    pub password_hash: String,
    /// Its rights.
    pub rights: Vec<Right>,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When its rights or password last changed.
    pub changed_at: OffsetDateTime,
    /// Its MAC ([`crate::row_mac`]); none on a row from before row MACs, or written by hand.
    pub mac: Option<RowMac>,
}

impl fmt::Debug for AccountRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountRow")
            .field("name", &self.name)
            .field("rights", &self.rights)
            .finish_non_exhaustive()
    }
}

/// A change to an account; either part ends its sessions, a new password its tokens too.
#[derive(Clone)]
pub struct AccountChange {
    /// New rights.
    pub rights: Option<Vec<Right>>,
    /// A new password hash.
    pub password_hash: Option<String>,
    /// The MAC of the account as changed.
    pub mac: RowMac,
    /// The MAC the account carries now: the change applies only to the row it was made from
    /// (another change in between makes it a [`StoreError::Conflict`]).
    pub previous: Option<RowMac>,
}

/// An API token as stored: only the SHA-256 of the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// Its public ID.
    pub id: String,
    /// SHA-256 of the whole token.
    pub digest: [u8; 32],
    /// The account it acts for.
    pub account: String,
    /// A name to tell it by.
    pub name: String,
    /// The rights it asks for.
    pub rights: Vec<Right>,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it stops working, if ever.
    pub expires_at: Option<OffsetDateTime>,
    /// Its MAC ([`crate::row_mac`]).
    pub mac: Option<RowMac>,
}

/// A Web App session as stored: only the SHA-256 of its cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// SHA-256 of the session cookie's value.
    pub digest: [u8; 32],
    /// The account logged in.
    pub account: String,
    /// When it began.
    pub created_at: OffsetDateTime,
    /// When it ends.
    pub expires_at: OffsetDateTime,
    /// Its MAC ([`crate::row_mac`]).
    pub mac: Option<RowMac>,
}

/// Account and token rows that carry no MAC ([`crate::row_mac`]): they grant nothing until
/// sealed ([`Store::seal_admin_rows`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnsealedRows {
    /// The accounts.
    pub accounts: Vec<AccountRow>,
    /// The tokens.
    pub tokens: Vec<TokenRow>,
}

impl UnsealedRows {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty() && self.tokens.is_empty()
    }

    /// The audit line of sealing these rows (`why`: at the upgrade, or by command), naming each
    /// with what it grants.
    pub(crate) fn audit_entry(&self, why: &str, actor: &Actor) -> AuditEntry {
        let accounts: Vec<String> = self
            .accounts
            .iter()
            .map(|row| format!("{} ({})", row.name, rights_list(&row.rights)))
            .collect();
        let tokens: Vec<String> = self
            .tokens
            .iter()
            .map(|row| {
                format!(
                    "{} of {} ({})",
                    row.id,
                    row.account,
                    rights_list(&row.rights)
                )
            })
            .collect();
        let mut entry = AuditEntry::new("admin-rows.seal", actor);
        entry.detail = format!(
            "{why}: accounts [{}], tokens [{}]",
            accounts.join(", "),
            tokens.join(", ")
        );
        entry
    }

    /// The MACs to give these rows under `key`: accounts by name, tokens by ID. One computation
    /// for both backends, which write them in the transaction that read the rows.
    pub(crate) fn macs(&self, key: &RowKey) -> (Vec<KeyedMac>, Vec<KeyedMac>) {
        let accounts = self
            .accounts
            .iter()
            .map(|row| {
                let mac = key.account(&row.name, &row.password_hash, &row.rights);
                (row.name.clone(), mac)
            })
            .collect();
        let tokens = self
            .tokens
            .iter()
            .map(|row| (row.id.clone(), key.token(row)))
            .collect();
        (accounts, tokens)
    }
}

/// A row's key (an account's name, a token's ID) and the MAC to give it.
pub(crate) type KeyedMac = (String, RowMac);

fn rights_list(rights: &[Right]) -> String {
    rights
        .iter()
        .map(|right| right.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// One server's heartbeat, as it records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerBeat {
    /// Its name (host and port devices reach it by).
    pub name: String,
    /// The fingerprint of the UMS ID it uses.
    pub fingerprint: Fingerprint,
    /// Where it stands towards the Main UMS ID.
    pub status: crate::cluster::SyncStatus,
}

/// One server as the status table shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRow {
    /// What it last recorded.
    pub beat: ServerBeat,
    /// Whether its last heartbeat is recent, by the database's clock.
    pub running: bool,
}

/// What the server needs from a database.
#[async_trait::async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// The UMS ID this database belongs to, once recorded.
    async fn ums_id(&self) -> Result<Option<Fingerprint>, StoreError>;

    /// Records `ums_id` as the UMS ID this database belongs to at first use; refuses with
    /// [`StoreError::OtherUmsId`] a database recorded under another.
    async fn bind_ums_id(&self, ums_id: &Fingerprint) -> Result<(), StoreError>;

    /// Inserts `count` keys made by `make`, all in one transaction: all of them or none.
    async fn insert_keys(
        &self,
        count: usize,
        make: MakeKey,
        progress: Progress,
        actor: &Actor,
    ) -> Result<Vec<KeyId>, StoreError>;

    /// One page of the keys matching `filter`, by ID.
    async fn keys(
        &self,
        filter: &KeyFilter,
        page: &PageRequest<KeyId>,
    ) -> Result<Vec<StoredKey>, StoreError>;

    /// How many keys match `filter`.
    async fn count_keys(&self, filter: &KeyFilter) -> Result<u64, StoreError>;

    /// Sets one key's comment.
    async fn set_comment(&self, id: KeyId, comment: &str, actor: &Actor) -> Result<(), StoreError>;

    /// Activates or deactivates keys: all of them, or none if any ID is unknown.
    async fn set_active(
        &self,
        ids: &[KeyId],
        active: bool,
        actor: &Actor,
    ) -> Result<(), StoreError>;

    /// Deletes keys: all of them, or none if any ID is unknown.
    async fn delete_keys(&self, ids: &[KeyId], actor: &Actor) -> Result<(), StoreError>;

    /// The type of the key with this look-up digest, if some key has it: a read that writes
    /// nothing, for telling a real key from a guess (and a random key from one that may have been
    /// typed) before deciding to spend a write on it.
    async fn key_kind(&self, lookup: &LookupDigest) -> Result<Option<KeyKind>, StoreError>;

    /// Whether some key has each of these look-up digests, in one read, in their order.
    async fn known_keys(&self, lookups: &[LookupDigest]) -> Result<Vec<bool>, StoreError>;

    /// Decides an enrollment attempt through [`crate::claim::decide`] and applies the decision
    /// in one transaction with the certificate `issue` signs. Exactly once: a one-time key is
    /// consumed by one device however many attempts race, and a retry by the same unit ID with the
    /// same public key gets the stored certificate back without consuming anything. An
    /// implementation may decide several concurrent attempts in one transaction (group commit).
    async fn enroll(
        &self,
        attempt: EnrollAttempt,
        issue: IssueOnce,
    ) -> Result<EnrollOutcome, StoreError>;

    /// Decides a renewal through [`crate::renewal::decide`] and applies it in one transaction
    /// with the certificate `issue` signs.
    async fn renew(
        &self,
        request: RenewalRequest,
        actor: &Actor,
        issue: IssueOnce,
    ) -> Result<RenewOutcome, StoreError>;

    /// Records that an enrolled device was heard from, with the facts it reported, when the
    /// certificate it presented (by serial) is its current or previous one
    /// ([`crate::renewal::held`]); the current one seen, the previous is forgotten. `false` when
    /// it is neither.
    /// With `session`, the device opened that connector session: it shows online on its server.
    async fn touch_device(
        &self,
        unit_id: &UnitId,
        serial: &str,
        inventory: Option<&str>,
        session: Option<SessionRef<'_>>,
    ) -> Result<bool, StoreError>;

    /// The device's connector `session` ended: offline, last seen now. Nothing when a newer
    /// session (here or on another server) holds it by now.
    async fn device_offline(
        &self,
        unit_id: &UnitId,
        session: SessionRef<'_>,
    ) -> Result<(), StoreError>;

    /// Marks every device whose session `server` held as offline, and drops what was queued for
    /// them; how many. At its start (sessions do not survive a restart or a crash) the times last
    /// seen stay; at its stop (`seen_now`, its sessions just closed) they become now.
    async fn release_devices(&self, server: &str, seen_now: bool) -> Result<u64, StoreError>;

    /// Queues `command` for a device, routed to the server holding its session, and audits it;
    /// that server, or `None` when the device is offline (nothing is queued then).
    /// [`StoreError::NotFound`] when no such device is enrolled.
    async fn queue_command(
        &self,
        unit_id: &UnitId,
        command: &str,
        actor: &Actor,
    ) -> Result<Option<String>, StoreError>;

    /// Takes the commands queued for sessions on `server`, oldest first. Deleting a connected
    /// device queues `disconnect` for it.
    async fn take_commands(&self, server: &str) -> Result<Vec<(UnitId, String)>, StoreError>;

    /// One page of the enrolled devices, by unit ID.
    async fn devices(&self, page: &PageRequest<UnitId>) -> Result<Vec<DeviceRecord>, StoreError>;

    /// The enrolled device with `unit_id`.
    async fn device(&self, unit_id: &UnitId) -> Result<Option<DeviceRecord>, StoreError>;

    /// How many devices are enrolled.
    async fn count_devices(&self) -> Result<u64, StoreError>;

    /// Forgets a device so its unit ID may enroll again (with a new key pair).
    async fn delete_device(&self, unit_id: &UnitId, actor: &Actor) -> Result<(), StoreError>;

    /// Appends to the audit log (for refusals decided before the store is asked, such as rate
    /// limits and malformed requests).
    async fn record(&self, entry: AuditEntry) -> Result<(), StoreError>;

    /// One page of the audit lines matching `filter`, oldest first.
    async fn audit(
        &self,
        filter: &AuditFilter,
        page: &PageRequest<i64>,
    ) -> Result<Vec<AuditEntry>, StoreError>;

    /// How many audit lines match `filter`.
    async fn count_audit(&self, filter: &AuditFilter) -> Result<u64, StoreError>;

    /// Deletes the audit lines written before `before`; how many.
    async fn prune_audit(&self, before: OffsetDateTime) -> Result<u64, StoreError>;

    /// Creates an account; [`StoreError::Conflict`] if the name is taken.
    async fn create_account(&self, account: &AccountRow, actor: &Actor) -> Result<(), StoreError>;

    /// One page of the accounts, by name.
    async fn accounts(&self, page: &PageRequest<String>) -> Result<Vec<AccountRow>, StoreError>;

    /// How many accounts there are.
    async fn count_accounts(&self) -> Result<u64, StoreError>;

    /// The account named `name`.
    async fn account(&self, name: &str) -> Result<Option<AccountRow>, StoreError>;

    /// Changes an account and ends its sessions (and with a new password its tokens), in one
    /// transaction. Refuses with [`StoreError::Conflict`], in the same transaction, a change that
    /// would leave no account with server:admin ([`crate::rights::leaves_no_admin`]).
    async fn update_account(
        &self,
        name: &str,
        change: AccountChange,
        actor: &Actor,
    ) -> Result<(), StoreError>;

    /// Deletes an account with its tokens and sessions. Refuses with [`StoreError::Conflict`], in
    /// the same transaction, to delete the last account with server:admin.
    async fn delete_account(&self, name: &str, actor: &Actor) -> Result<(), StoreError>;

    /// Whether this open of the store applied the migration that added row MACs (known to the
    /// process that applied it, not read back from the database): the only open that may seal
    /// rows without a MAC on its own ([`crate::row_mac::sealing`]).
    fn migrated_row_macs_now(&self) -> bool;

    /// The account and token rows that carry no MAC.
    async fn unsealed_admin_rows(&self) -> Result<UnsealedRows, StoreError>;

    /// Gives every account and token row that carries no MAC its MAC under `key` and writes the
    /// audit line naming them ([`UnsealedRows::audit_entry`], `why` as its reason), in one
    /// transaction; returns what it sealed. Whether to call it is the caller's decision.
    async fn seal_admin_rows(
        &self,
        key: Arc<RowKey>,
        why: &str,
        actor: &Actor,
    ) -> Result<UnsealedRows, StoreError>;

    /// Stores a new token; [`StoreError::NotFound`] if its account is gone.
    async fn create_token(&self, token: &TokenRow, actor: &Actor) -> Result<(), StoreError>;

    /// One page of the tokens (of `account`, or all), by ID.
    async fn tokens(
        &self,
        account: Option<&str>,
        page: &PageRequest<String>,
    ) -> Result<Vec<TokenRow>, StoreError>;

    /// The token with public ID `id`.
    async fn token(&self, id: &str) -> Result<Option<TokenRow>, StoreError>;

    /// Revokes (deletes) a token.
    async fn revoke_token(&self, id: &str, actor: &Actor) -> Result<(), StoreError>;

    /// Starts a session, auditing the login as `actor`, if the account still has the password
    /// hash `verified` (the one the login was checked against): a password changed or an account
    /// deleted while the login was being checked gives [`StoreError::NotFound`], no session.
    async fn create_session(
        &self,
        session: &SessionRow,
        verified: &str,
        actor: &Actor,
    ) -> Result<(), StoreError>;

    /// The session whose cookie has SHA-256 `digest`.
    async fn session(&self, digest: &[u8; 32]) -> Result<Option<SessionRow>, StoreError>;

    /// Ends a session (a logout); ending one already gone is no error.
    async fn end_session(&self, digest: &[u8; 32], actor: &Actor) -> Result<(), StoreError>;

    /// Deletes the sessions that ended before `now`; how many.
    async fn prune_sessions(&self, now: OffsetDateTime) -> Result<u64, StoreError>;

    /// The database's clock, whole seconds: what every server sharing the database measures
    /// expiries (tokens, sessions) and heartbeats by, whatever its own clock says.
    async fn clock(&self) -> Result<OffsetDateTime, StoreError>;

    /// The Main UMS ID of the servers sharing this database, once one was offered.
    async fn main_ums_id(&self) -> Result<Option<MainUmsId>, StoreError>;

    /// Records `main` as the Main UMS ID unless one is recorded already (the first server on an
    /// empty database wins a race); the one recorded afterwards.
    async fn offer_main_ums_id(&self, main: &MainUmsId) -> Result<MainUmsId, StoreError>;

    /// Replaces the Main UMS ID (`ums-id restore`): every server adopts it at its next start.
    async fn replace_main_ums_id(&self, main: &MainUmsId, actor: &Actor) -> Result<(), StoreError>;

    /// Records a server's heartbeat, stamped with the database's clock.
    async fn heartbeat(&self, beat: &ServerBeat) -> Result<(), StoreError>;

    /// Every server that ever beat, by name, running if its last beat is within `within` by the
    /// database's clock.
    async fn servers(&self, within: std::time::Duration) -> Result<Vec<ServerRow>, StoreError>;
}

/// Opens the store the settings name, creating and migrating it at first use. The caller binds it
/// to its UMS ID ([`Store::bind_ums_id`]; `Stub::open` does).
pub async fn open(settings: &Settings) -> Result<Arc<dyn Store>, StoreError> {
    let store: Arc<dyn Store> = match &settings.database {
        Database::Sqlite => {
            let file = settings.database_file();
            let opened = tokio::task::spawn_blocking(move || SqliteStore::open(&file))
                .await
                .map_err(|error| StoreError::Backend {
                    database: settings.database_file().display().to_string(),
                    source: Box::new(error),
                })??;
            Arc::new(opened)
        }
        Database::Postgres(url) => {
            Arc::new(PostgresStore::open_with(url.expose(), settings.database_ca.as_deref()).await?)
        }
    };
    Ok(store)
}

/// Applies [`crate::rights::leaves_no_admin`] for a backend: `before` is `name`'s rights and
/// `admins` the number of accounts with server:admin, both read inside the transaction that
/// changes `name` to `after` (`None`: deletes it), under a lock no other such change passes.
pub(crate) fn keep_an_admin(
    name: &str,
    before: &[Right],
    after: Option<&[Right]>,
    admins: u64,
) -> Result<(), StoreError> {
    use crate::rights::{self, CredentialError, Rights};
    let admins = usize::try_from(admins).unwrap_or(usize::MAX);
    if rights::leaves_no_admin(Rights::of(before), after.map(Rights::of), admins) {
        return Err(StoreError::Conflict(
            CredentialError::LastAdmin(name.to_owned()).to_string(),
        ));
    }
    Ok(())
}

/// Turns rows fetched with one more than `limit` into a page: the extra row only says that a next
/// page exists, which starts after the last row kept.
pub(crate) fn paged<R, T, A, E>(
    mut rows: Vec<R>,
    limit: usize,
    cursor: impl Fn(&R) -> A,
    view: impl FnMut(R) -> Result<T, E>,
) -> Result<onboard_protocol::admin::Page<T, A>, E> {
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_after = if more { rows.last().map(cursor) } else { None };
    Ok(onboard_protocol::admin::Page {
        items: rows.into_iter().map(view).collect::<Result<_, _>>()?,
        next_after,
        total: None,
    })
}

impl<A: Clone> PageRequest<A> {
    /// The same page asking for one row more, so [`paged`] can tell whether another page follows.
    pub(crate) fn probe(&self) -> Self {
        Self {
            limit: self.limit.saturating_add(1),
            after: self.after.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(repeated: bool) -> EnrollOutcome {
        let now = OffsetDateTime::UNIX_EPOCH;
        EnrollOutcome::Issued {
            device: Box::new(DeviceRecord {
                unit_id: "0A0000000001".parse().unwrap(),
                public_key: Vec::new(),
                certificate: Vec::new(),
                serial: String::new(),
                not_after: now,
                previous_serial: None,
                key_id: Some(1),
                key_kind: KeyKind::OneTime,
                enrolled_at: now,
                last_seen: now,
                inventory: None,
                online_server: None,
            }),
            repeated,
            key: 0,
            refused: Vec::new(),
        }
    }

    #[test]
    fn only_a_new_certificate_must_be_synced_before_it_is_answered() {
        use Durability::{Deferred, Synced};
        let table = [
            (issued(false), Synced),
            (issued(true), Deferred),
            (EnrollOutcome::Refused(ProblemCode::KeyUsed), Deferred),
            (
                EnrollOutcome::Refused(ProblemCode::UnitIdConflict),
                Deferred,
            ),
            (
                EnrollOutcome::RefusedEach(vec![
                    (0, ProblemCode::KeyUsed),
                    (1, ProblemCode::KeyUnknown),
                ]),
                Deferred,
            ),
        ];
        for (outcome, durability) in table {
            assert_eq!(outcome.durability(), durability, "{outcome:?}");
        }
    }

    #[test]
    fn only_a_refusal_s_audit_line_may_wait_for_the_next_sync() {
        use Durability::{Deferred, Synced};
        let actor = Actor::cli();
        let with = |event: &str, outcome: &str| {
            let mut entry = AuditEntry::new(event, &actor);
            entry.outcome = outcome.to_owned();
            entry
        };
        let table = [
            (with("keys.export", "ok"), Synced),
            (with("keys.reveal", "ok"), Synced),
            (with("enroll", "key_unknown"), Deferred),
            (with("enroll", "rate_limited"), Deferred),
            (with("session.login", "unauthorized"), Deferred),
        ];
        for (entry, durability) in table {
            assert_eq!(entry.durability(), durability, "{entry:?}");
        }
    }

    #[test]
    fn a_batch_is_synced_when_any_of_its_writes_must_be() {
        use Durability::{Deferred, Synced};
        let table: [(&[Durability], Durability); 5] = [
            (&[], Deferred),
            (&[Deferred], Deferred),
            (&[Deferred, Deferred, Deferred], Deferred),
            (&[Synced], Synced),
            (&[Deferred, Synced, Deferred], Synced),
        ];
        for (each, all) in table {
            assert_eq!(Durability::of_all(each.iter().copied()), all, "{each:?}");
        }
    }
}
