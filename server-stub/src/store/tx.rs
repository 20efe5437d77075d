//! The row operations one transaction offers the flows that apply a decision (`apply.rs`). Each
//! backend implements [`Tx`] inside the transaction it opened, with its own SQL and its own locks
//! (PostgreSQL locks each row it reads for a change); how it begins, locks the whole attempt and
//! commits stays in the backend. Listing, accounts and the rest of the store are not here: only
//! what a decision is read from and written to.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use onboard_protocol::admin::{KeyId, KeyStatus};
use onboard_protocol::{Folder, KeyKind, UnitId};
use time::OffsetDateTime;

use super::error::StoreError;
use super::rows::{AuditEntry, DeviceRecord, NewKey, SessionRef};
use crate::ca::IssuedCertificate;
use crate::claim;
use crate::vault::LookupDigest;

/// What an enrollment reads of the key presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyForClaim {
    /// Its number.
    pub id: KeyId,
    /// Its kind.
    pub kind: KeyKind,
    /// The unit ID a device-bound key names.
    pub bound_to: Option<UnitId>,
    /// Whether an administrator left it activated.
    pub active: bool,
    /// Successful enrollments with it.
    pub usage_count: u64,
    /// Its lifetime and usage limit.
    pub limits: claim::Limits,
    /// Where devices enrolled with it land (copied into the device record).
    pub folder: Option<Folder>,
}

impl KeyForClaim {
    /// The row as [`claim::decide`] reads it.
    pub(crate) fn row(&self) -> claim::KeyRow<'_> {
        claim::KeyRow {
            id: self.id,
            kind: self.kind,
            bound_to: self.bound_to.as_ref(),
            active: self.active,
            usage_count: self.usage_count,
            limits: self.limits,
        }
    }
}

/// What a change of keys reads of each key: what its new status and terms are decided from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyForChange {
    /// Its number.
    pub id: KeyId,
    /// Its kind.
    pub kind: KeyKind,
    /// Successful enrollments with it.
    pub usage_count: u64,
    /// Its lifetime and usage limit.
    pub limits: claim::Limits,
    /// Its folder.
    pub folder: Option<Folder>,
}

/// One change to one key, as decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyChange<'a> {
    /// A new comment.
    Comment(&'a str),
    /// Activated or deactivated, with the status that gives it ([`claim::status`]).
    Active {
        /// Whether it is activated now.
        active: bool,
        /// Its status now.
        status: KeyStatus,
    },
    /// New terms: all of the lifetime, the usage limit and the folder, as merged from an edit.
    Terms {
        /// The lifetime and usage limit.
        limits: claim::Limits,
        /// The folder.
        folder: Option<&'a Folder>,
    },
    /// Deleted.
    Delete,
}

/// A key to insert, with the status it starts with ([`claim::status`]).
#[derive(Debug, Clone)]
pub(crate) struct KeyInsert {
    /// The key.
    pub key: NewKey,
    /// Its status.
    pub status: KeyStatus,
}

/// A device heard from, as recorded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen<'a> {
    /// When.
    pub at: OffsetDateTime,
    /// The facts it reported about itself (JSON); `None` keeps what is stored.
    pub inventory: Option<&'a str>,
    /// Whether it presented its current certificate, so the previous one is forgotten.
    pub forget_previous: bool,
    /// The connector session it opened, if it opened one: it shows online on that server.
    pub session: Option<SessionRef<'a>>,
}

/// The row operations of one open transaction. Every method acts inside it; nothing is
/// committed until the backend commits.
///
/// The futures of a blocking backend (SQLite) and of the tests' fake never wait: they are run
/// with [`ready`].
pub(crate) trait Tx {
    /// The error of a row this code cannot read, naming the database.
    fn corrupt(&self, reason: String) -> StoreError;

    /// The key with look-up digest `lookup`, if one has it; locked until the end of the
    /// transaction where the backend locks rows (not in a read-only one: a check).
    async fn key_for_claim(
        &mut self,
        lookup: &LookupDigest,
    ) -> Result<Option<KeyForClaim>, StoreError>;

    /// The device record of `unit_id`, if it is enrolled; locked likewise.
    async fn device_for_update(
        &mut self,
        unit_id: &UnitId,
    ) -> Result<Option<DeviceRecord>, StoreError>;

    /// Counts one use of key `id` at `at` and gives it `status`, guarded in SQL: only an
    /// activated key that is a mass-deployment key or unused, within its lifetime at `at` and
    /// below its usage limit. Whether the guard let it through. The guard repeats
    /// [`claim::decide`] as a second line of defence; the rule is there.
    async fn consume_key(
        &mut self,
        id: KeyId,
        status: KeyStatus,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Records a newly enrolled device, replacing whole any record its unit ID had.
    async fn put_device(&mut self, device: &DeviceRecord) -> Result<(), StoreError>;

    /// Gives an enrolled device the certificate `issued` for `public_key`, remembering
    /// `previous_serial` until the new one is seen; seen at `at`.
    async fn replace_certificate(
        &mut self,
        unit_id: &UnitId,
        public_key: &[u8],
        issued: &IssuedCertificate,
        previous_serial: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Records that an enrolled device was heard from.
    async fn seen(&mut self, unit_id: &UnitId, seen: Seen<'_>) -> Result<(), StoreError>;

    /// Inserts `keys` created at `created_at`: for each, in order, its new number, or `None` when
    /// its look-up digest is another key's (one already stored, or one before it in `keys`).
    async fn insert_keys(
        &mut self,
        keys: &[KeyInsert],
        created_at: OffsetDateTime,
    ) -> Result<Vec<Option<KeyId>>, StoreError>;

    /// Appends a line to the audit log.
    async fn audit(&mut self, entry: &AuditEntry) -> Result<(), StoreError>;

    /// Deletes the device record of `unit_id`: `None` when there was none, else the server that
    /// held its connector session, if one did.
    async fn delete_device(
        &mut self,
        unit_id: &UnitId,
    ) -> Result<Option<Option<String>>, StoreError>;

    /// Queues `command` for `unit_id`'s session on `server`.
    async fn queue_command(
        &mut self,
        server: &str,
        unit_id: &UnitId,
        command: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// The keys among `ids` that exist (in any order), locked where the backend locks rows.
    async fn keys_for_change(&mut self, ids: &[KeyId]) -> Result<Vec<KeyForChange>, StoreError>;

    /// Applies one change to key `id`.
    async fn change_key(&mut self, id: KeyId, change: KeyChange<'_>) -> Result<(), StoreError>;
}

/// Runs to its end a future that never waits: a flow over a blocking backend's transaction,
/// whose every row operation is done when it returns.
///
/// # Panics
/// If the future waits, which only a row operation that does I/O asynchronously could make it do.
pub(crate) fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a blocking transaction's row operation waited"),
    }
}
