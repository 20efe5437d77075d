//! The rows of the store: what it reads and writes for keys, devices, the audit log, accounts,
//! tokens, sessions and servers, and the requests and outcomes of enrollment and renewal as the
//! store sees them. Plain data: no rule decides here and nothing touches a database.

use std::fmt;

use onboard_protocol::admin::{KeyId, KeyStatus, Right};
use onboard_protocol::{Fingerprint, Folder, KeyKind, ProblemCode, UnitId};
use time::OffsetDateTime;

use crate::claim::Limits;
use crate::vault::LookupDigest;

/// The MAC an account, token or session row carries ([`crate::row_mac`]).
pub type RowMac = [u8; 32];

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
    /// Its lifetime and usage limit (a usage limit on a mass-deployment key only).
    pub limits: Limits,
    /// Where devices enrolled with it land.
    pub folder: Option<Folder>,
}

/// An administrator's edit of one key: each member `None` keeps what the key has; for the terms,
/// `Some(None)` clears one (valid at once, never expires, no usage limit, no folder).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPatch {
    /// A new comment.
    pub comment: Option<String>,
    /// A new start of its lifetime.
    pub not_before: Option<Option<OffsetDateTime>>,
    /// A new end of its lifetime.
    pub expires_at: Option<Option<OffsetDateTime>>,
    /// A new usage limit (mass-deployment keys only).
    pub usage_limit: Option<Option<u64>>,
    /// A new folder.
    pub folder: Option<Option<Folder>>,
}

impl KeyPatch {
    /// Whether it changes the lifetime, the usage limit or the folder.
    pub fn changes_terms(&self) -> bool {
        self.not_before.is_some()
            || self.expires_at.is_some()
            || self.usage_limit.is_some()
            || self.folder.is_some()
    }

    /// What it changes, for the audit log: each member changed, with its new value (`none` when
    /// cleared); the comment's text is left out, as for a comment alone.
    pub(crate) fn describe(&self) -> String {
        fn shown<T: fmt::Display>(value: Option<T>) -> String {
            value.map_or_else(|| "none".to_owned(), |value| value.to_string())
        }
        let time = |at: Option<OffsetDateTime>| {
            shown(at.and_then(|at| {
                at.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            }))
        };
        let mut parts = Vec::new();
        if self.comment.is_some() {
            parts.push("comment".to_owned());
        }
        if let Some(at) = self.not_before {
            parts.push(format!("not_before {}", time(at)));
        }
        if let Some(at) = self.expires_at {
            parts.push(format!("expires_at {}", time(at)));
        }
        if let Some(limit) = self.usage_limit {
            parts.push(format!("usage_limit {}", shown(limit)));
        }
        if let Some(folder) = &self.folder {
            parts.push(format!("folder {}", shown(folder.as_ref())));
        }
        parts.join(", ")
    }
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
    /// The part of its status that does not depend on the time, as
    /// [`crate::claim::stored_status`] decided it at its last change (Active, Inactive or Used):
    /// what it shows is [`crate::claim::status`] at the time of reading.
    pub status: KeyStatus,
    /// Successful enrollments with it.
    pub usage_count: u64,
    /// The last successful enrollment with it.
    pub usage_date: Option<OffsetDateTime>,
    /// The administrator's comment.
    pub comment: String,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// Its lifetime and usage limit.
    pub limits: Limits,
    /// Where devices enrolled with it land.
    pub folder: Option<Folder>,
}

impl StoredKey {
    /// The status the key list shows at `now` ([`crate::claim::status`]).
    pub fn status_at(&self, now: OffsetDateTime) -> KeyStatus {
        crate::claim::status(self.kind, self.active, self.usage_count, self.limits, now)
    }
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

/// A dry run of an enrollment (`onboard-agent check`), as the store sees it: whether each key
/// would be accepted for the unit ID now. Nothing is consumed, locked or written.
#[derive(Debug, Clone)]
pub struct KeyCheck {
    /// The unit ID the keys are checked for.
    pub unit_id: UnitId,
    /// The digests of the keys, in the request's order (at most
    /// [`onboard_protocol::alternates::MAX_KEYS_PER_REQUEST`]).
    pub lookups: Vec<LookupDigest>,
    /// The DER SubjectPublicKeyInfo of the device's key pair, when the check carried a
    /// certificate request; empty for a device that would enroll with a new key pair.
    pub public_key: Vec<u8>,
    /// As [`EnrollAttempt::lapsed_before`].
    pub lapsed_before: OffsetDateTime,
}

/// What a check found for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedKey {
    /// The key with that value, if one has it.
    pub key_id: Option<KeyId>,
    /// What an enrollment with it would come to now ([`crate::claim::decide`]).
    pub decision: crate::claim::Decision,
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
    /// The folder of the key it enrolled with, copied at enrollment.
    pub folder: Option<Folder>,
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
    /// (another change in between makes it a [`StoreError::Conflict`](super::StoreError::Conflict)).
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

/// A row's key (an account's name, a token's ID) and the MAC to give it.
pub type KeyedMac = (String, RowMac);

/// What gives account and token rows their MACs (the row MAC key of the UMS ID in use), for
/// [`Store::seal_admin_rows`](super::Store::seal_admin_rows): the store computes no MAC itself.
pub trait RowSealer: Send + Sync + fmt::Debug {
    /// The MACs to give `rows`: accounts by name, tokens by ID.
    fn macs(&self, rows: &UnsealedRows) -> (Vec<KeyedMac>, Vec<KeyedMac>);
}

/// Account and token rows that carry no MAC ([`crate::row_mac`]): they grant nothing until
/// sealed ([`Store::seal_admin_rows`](super::Store::seal_admin_rows)).
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
            .map(|row| format!("{} ({})", row.name, rights_text(&row.rights)))
            .collect();
        let tokens: Vec<String> = self
            .tokens
            .iter()
            .map(|row| {
                format!(
                    "{} of {} ({})",
                    row.id,
                    row.account,
                    rights_text(&row.rights)
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
}

/// Rights as stored and audited: their names, comma-separated.
pub(crate) fn rights_text(rights: &[Right]) -> String {
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

/// The audit lines of changes to accounts and tokens, alike on both backends.
impl AccountRow {
    /// The line of creating this account.
    pub(crate) fn created_entry(&self, actor: &Actor) -> AuditEntry {
        let mut entry = AuditEntry::new("accounts.create", actor);
        entry.detail = format!("account {} with {}", self.name, rights_text(&self.rights));
        entry
    }

    /// The line of deleting the account `name`.
    pub(crate) fn deleted_entry(name: &str, actor: &Actor) -> AuditEntry {
        let mut entry = AuditEntry::new("accounts.delete", actor);
        entry.detail = format!("account {name}");
        entry
    }
}

impl AccountChange {
    /// The line of this change to the account `name`, which ended `ended` sessions and
    /// `revoked` tokens.
    pub(crate) fn audit_entry(
        &self,
        name: &str,
        ended: u64,
        revoked: u64,
        actor: &Actor,
    ) -> AuditEntry {
        let mut entry = AuditEntry::new("accounts.edit", actor);
        let mut parts = vec![format!("account {name}")];
        if let Some(rights) = &self.rights {
            parts.push(format!("rights {}", rights_text(rights)));
        }
        if self.password_hash.is_some() {
            parts.push("new password".to_owned());
        }
        parts.push(format!("{ended} session(s) ended"));
        if self.password_hash.is_some() {
            parts.push(format!("{revoked} token(s) ended"));
        }
        entry.detail = parts.join(", ");
        entry
    }
}

impl TokenRow {
    /// The line of creating this token.
    pub(crate) fn created_entry(&self, actor: &Actor) -> AuditEntry {
        let mut entry = AuditEntry::new("tokens.create", actor);
        entry.detail = format!(
            "token {} for account {} with {}",
            self.id,
            self.account,
            rights_text(&self.rights)
        );
        entry
    }

    /// The line of revoking the token `id` of `account`.
    pub(crate) fn revoked_entry(id: &str, account: &str, actor: &Actor) -> AuditEntry {
        let mut entry = AuditEntry::new("tokens.revoke", actor);
        entry.detail = format!("token {id} of account {account}");
        entry
    }
}
