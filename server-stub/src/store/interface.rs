//! The one async interface the server holds its data through ([`Store`]), as `Arc<dyn Store>`.

use std::fmt;
use std::sync::Arc;

use onboard_protocol::admin::KeyId;
use onboard_protocol::{Fingerprint, KeyKind, UnitId};
use time::OffsetDateTime;

use super::error::StoreError;
use super::query::{AuditFilter, DeviceFilter, KeyFilter, KeyListing, PageRequest};
use super::rows::{
    AccountChange, AccountRow, Actor, AuditEntry, CheckedKey, DeviceRecord, EnrollAttempt,
    EnrollOutcome, KeyCheck, KeyPatch, MakeKey, Progress, RenewOutcome, RenewalRequest, RowSealer,
    ServerBeat, ServerRow, SessionRef, SessionRow, StoredKey, TokenRow, UnsealedRows,
};
use crate::ca::IssueOnce;
use crate::cluster::MainUmsId;
use crate::vault::LookupDigest;

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

    /// `offset` rows into the keys `listing` matches, in its order, at most `limit` of them (the
    /// Web App's sorted key table).
    async fn key_listing(
        &self,
        listing: &KeyListing,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<StoredKey>, StoreError>;

    /// How many keys `listing` matches.
    async fn count_key_listing(&self, listing: &KeyListing) -> Result<u64, StoreError>;

    /// Sets one key's comment.
    async fn set_comment(&self, id: KeyId, comment: &str, actor: &Actor) -> Result<(), StoreError>;

    /// Edits one key: its comment, lifetime, usage limit and folder as `patch` says, the rest
    /// kept from what it has, in one transaction.
    async fn edit_key(&self, id: KeyId, patch: KeyPatch, actor: &Actor) -> Result<(), StoreError>;

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

    /// Whether each key of `check` would be accepted for its unit ID now (a dry run of an
    /// enrollment): reads the key rows and the device row in one read-only snapshot and decides
    /// each key through [`crate::claim::decide`] as [`Store::enroll`] would, presented alone.
    /// Writes nothing and locks no row: no key is consumed, no use counted, nothing audited (the
    /// caller audits the check).
    async fn check_keys(&self, check: &KeyCheck) -> Result<Vec<CheckedKey>, StoreError>;

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
    async fn devices(&self, page: &PageRequest<UnitId>) -> Result<Vec<DeviceRecord>, StoreError> {
        self.devices_matching(&DeviceFilter::default(), page).await
    }

    /// One page of the enrolled devices `filter` matches, by unit ID.
    async fn devices_matching(
        &self,
        filter: &DeviceFilter,
        page: &PageRequest<UnitId>,
    ) -> Result<Vec<DeviceRecord>, StoreError>;

    /// The enrolled device with `unit_id`.
    async fn device(&self, unit_id: &UnitId) -> Result<Option<DeviceRecord>, StoreError>;

    /// How many devices are enrolled.
    async fn count_devices(&self) -> Result<u64, StoreError> {
        self.count_devices_matching(&DeviceFilter::default()).await
    }

    /// How many enrolled devices `filter` matches.
    async fn count_devices_matching(&self, filter: &DeviceFilter) -> Result<u64, StoreError>;

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
        key: Arc<dyn RowSealer>,
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
