//! Key management: the operations the command line runs and the admin API will reuse.
//!
//! Values are generated here from the OS CSPRNG, sealed before they reach the store, and unsealed
//! only for shown lists and exports. Lists come back as the typed views of
//! [`onboard_protocol::admin`]; which keys may be exported is [`crate::claim::exportable`].

use std::sync::Arc;

use onboard_protocol::admin::{
    CreateKeys, EditKey, KeyAction, KeyId, KeyStatus, KeyView, KeysChanged, MAX_COMMENT_CHARS,
    MAX_USAGE_LIMIT, Page,
};
use onboard_protocol::{
    Fingerprint, FirstAuthKey, Folder, KeyEntry, KeyFile, KeyKind, Server, UnitId,
};
use time::OffsetDateTime;

use crate::claim;
use crate::random;
use crate::store::{
    self, Actor, KeyFilter, KeyListing, KeyPatch, Missing, NewKey, PageRequest, Progress, Store,
    StoreError, StoredKey,
};
use crate::vault::{KeyVault, SealBroken};

/// The most one-time keys one request creates.
pub const MAX_QUANTITY: usize = 1_000_000;

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored value does not decrypt.
    #[error(transparent)]
    Seal(#[from] SealBroken),
    /// A quantity of zero or above the limit.
    #[error("the quantity must be from 1 to {MAX_QUANTITY}")]
    Quantity,
    /// No unit ID to bind keys to.
    #[error("name at least one unit ID")]
    NoUnitIds,
    /// A typed password that cannot be a key value.
    #[error("the password cannot be a key: {0}")]
    Password(#[from] onboard_protocol::KeyValueError),
    /// A typed mass-deployment key below the floor.
    #[error(transparent)]
    WeakMassKey(#[from] crate::mass_key_floor::WeakMassKey),
    /// Keys named for export that cannot go on a stick.
    #[error("key {id} is {status}; only active keys (and keys not valid yet) can be exported")]
    NotExportable {
        /// The key.
        id: KeyId,
        /// Its status.
        status: KeyStatus,
    },
    /// A server to put into an export that cannot name one.
    #[error("server: {0}")]
    Server(String),
    /// A comment too long for the key list.
    #[error("comment: a comment has at most {MAX_COMMENT_CHARS} characters")]
    Comment,
    /// A usage limit out of range.
    #[error("usage_limit: a usage limit is from 1 to {MAX_USAGE_LIMIT}")]
    UsageLimit,
    /// A usage limit for a key that is not a mass-deployment key.
    #[error(
        "usage_limit: only mass-deployment keys have a usage limit (key {0} is a {1} key, which \
         enrolls one device)"
    )]
    UsageLimitKind(KeyId, KeyKind),
    /// This server could not adopt the Main UMS ID of its database: its key vault is not the
    /// cluster's, so it neither reads nor writes keys.
    #[error(
        "this server is not in sync with the Main UMS ID of its database (no or a wrong cluster \
         secret): it cannot read or write keys; restart it with the cluster's secret \
         (--cluster-secret FILE)"
    )]
    NotInSync,
    /// Nothing to export.
    #[error("no key to export: there are no active, unused keys (create some, or name IDs)")]
    NothingToExport,
}

/// Key IDs for people: `1 to 100`, `1, 5, 7`, or runs of both (`1 to 4, 9`).
pub fn id_ranges(ids: &[KeyId]) -> String {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut index = 0;
    while index < sorted.len() {
        let start = sorted[index];
        let mut end = start;
        while index + 1 < sorted.len() && sorted[index + 1] == end + 1 {
            index += 1;
            end = sorted[index];
        }
        parts.push(if end > start + 1 {
            format!("{start} to {end}")
        } else if end == start + 1 {
            format!("{start}, {end}")
        } else {
            start.to_string()
        });
        index += 1;
    }
    parts.join(", ")
}

/// A comment fits the key list.
fn check_comment(comment: &str) -> Result<(), KeyError> {
    if comment.chars().count() > MAX_COMMENT_CHARS {
        return Err(KeyError::Comment);
    }
    Ok(())
}

/// A usage limit is within range.
fn check_usage_limit(limit: Option<u64>) -> Result<(), KeyError> {
    match limit {
        Some(limit) if !(1..=MAX_USAGE_LIMIT).contains(&limit) => Err(KeyError::UsageLimit),
        _ => Ok(()),
    }
}

/// What a new key carries beside its kind, value and comment: its lifetime, usage limit and
/// folder. The default is none of them, as keys were before they had any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyTerms {
    /// Its lifetime and usage limit.
    pub limits: claim::Limits,
    /// Where devices enrolled with it land.
    pub folder: Option<Folder>,
}

impl KeyTerms {
    /// The terms a creation request names: `usage_limit` is only on mass-deployment keys.
    fn of(request: &CreateKeys) -> Self {
        let (not_before, expires_at, usage_limit, folder) = match request {
            CreateKeys::OneTime {
                not_before,
                expires_at,
                folder,
                ..
            }
            | CreateKeys::DeviceBound {
                not_before,
                expires_at,
                folder,
                ..
            } => (not_before, expires_at, None, folder),
            CreateKeys::Mass {
                not_before,
                expires_at,
                usage_limit,
                folder,
                ..
            } => (not_before, expires_at, *usage_limit, folder),
        };
        Self {
            limits: claim::Limits {
                not_before: *not_before,
                expires_at: *expires_at,
                usage_limit,
            },
            folder: folder.clone(),
        }
    }
}

/// Key operations over one store and the vault of the UMS ID.
///
/// Everything that shows a key in the clear (a shown list or key, a reveal, an export) is audited
/// here, before the value is handed out, as the operations' actor ([`KeyAdmin::acting_as`];
/// `cli` unless told otherwise): every surface (the admin API, the Web App, the local command
/// line) leaves the same line, and a reveal that cannot be recorded is not made.
#[derive(Debug, Clone)]
pub struct KeyAdmin {
    store: Arc<dyn Store>,
    vault: Arc<KeyVault>,
    in_sync: bool,
    actor: Actor,
    /// The server's notion of now, which key lifetimes are judged by.
    clock: crate::rig::clock::Clock,
}

impl KeyAdmin {
    /// Operations on `store`, protecting values with `vault`, by the local command line.
    pub fn new(store: Arc<dyn Store>, vault: Arc<KeyVault>) -> Self {
        Self {
            store,
            vault,
            in_sync: true,
            actor: Actor::cli(),
            clock: crate::rig::clock::Clock::system(),
        }
    }

    /// The same operations, judging key lifetimes by `clock` (the server's, which a rig may move).
    pub fn with_clock(mut self, clock: crate::rig::clock::Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The same operations on behalf of `actor`, whom the audit lines of reveals and exports name.
    pub fn acting_as(mut self, actor: &Actor) -> Self {
        self.actor = actor.clone();
        self
    }

    /// Audits that the keys `ids` are about to be shown in the clear (`keys.reveal`) or written to
    /// a key file (`keys.export`, `how` saying how many and in what form).
    async fn audit_shown(&self, event: &str, ids: &[KeyId], how: &str) -> Result<(), KeyError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut entry = store::AuditEntry::new(event, &self.actor);
        entry.detail = if how.is_empty() {
            format!("key(s) {}", id_ranges(ids))
        } else {
            format!("{how}: {}", id_ranges(ids))
        };
        if let [only] = ids {
            entry.key_id = Some(*only);
        }
        Ok(self.store.record(entry).await?)
    }

    /// Operations that refuse every key read and write ([`KeyError::NotInSync`]): for a server
    /// whose vault is not its cluster's.
    pub fn refusing(mut self) -> Self {
        self.in_sync = false;
        self
    }

    fn usable(&self) -> Result<(), KeyError> {
        if self.in_sync {
            Ok(())
        } else {
            Err(KeyError::NotInSync)
        }
    }

    fn new_key(
        vault: &KeyVault,
        kind: KeyKind,
        key: &FirstAuthKey,
        unit_id: Option<UnitId>,
        comment: &str,
        generated: bool,
        terms: &KeyTerms,
    ) -> NewKey {
        let lookup = vault.lookup(key);
        NewKey {
            kind,
            sealed: vault.seal(key, &lookup),
            lookup,
            unit_id,
            comment: comment.to_owned(),
            generated,
            limits: terms.limits,
            folder: terms.folder.clone(),
        }
    }

    fn generated(
        vault: &KeyVault,
        kind: KeyKind,
        unit_id: Option<UnitId>,
        comment: &str,
        terms: &KeyTerms,
    ) -> NewKey {
        let key = FirstAuthKey::new(random::key_digits()).expect("17 digits are a key");
        Self::new_key(vault, kind, &key, unit_id, comment, true, terms)
    }

    /// Creates the keys `request` asks for, with the lifetime, usage limit and folder it names;
    /// the new IDs. A usage limit is only on mass-deployment keys (the request cannot name one
    /// for another kind).
    pub async fn create(
        &self,
        request: &CreateKeys,
        progress: Progress,
        actor: &Actor,
    ) -> Result<Vec<KeyId>, KeyError> {
        let terms = KeyTerms::of(request);
        Ok(match request {
            CreateKeys::OneTime {
                quantity, comment, ..
            } => {
                self.one_time(*quantity, comment, &terms, progress, actor)
                    .await?
            }
            CreateKeys::DeviceBound {
                unit_ids, comment, ..
            } => {
                self.device_bound(unit_ids, comment, &terms, progress, actor)
                    .await?
            }
            CreateKeys::Mass {
                password, comment, ..
            } => {
                vec![
                    self.mass(password.as_deref(), comment, &terms, actor)
                        .await?
                        .0,
                ]
            }
        })
    }

    /// Creates `quantity` one-time keys.
    pub async fn create_one_time(
        &self,
        quantity: usize,
        comment: &str,
        progress: Progress,
        actor: &Actor,
    ) -> Result<Vec<KeyId>, KeyError> {
        self.one_time(quantity, comment, &KeyTerms::default(), progress, actor)
            .await
    }

    async fn one_time(
        &self,
        quantity: usize,
        comment: &str,
        terms: &KeyTerms,
        progress: Progress,
        actor: &Actor,
    ) -> Result<Vec<KeyId>, KeyError> {
        self.usable()?;
        if quantity == 0 || quantity > MAX_QUANTITY {
            return Err(KeyError::Quantity);
        }
        check_comment(comment)?;
        let (vault, comment, terms) = (self.vault.clone(), comment.to_owned(), terms.clone());
        let make =
            Box::new(move |_| Self::generated(&vault, KeyKind::OneTime, None, &comment, &terms));
        Ok(self
            .store
            .insert_keys(quantity, make, progress, actor)
            .await?)
    }

    /// Creates one device-bound key per unit ID.
    pub async fn create_device_bound(
        &self,
        unit_ids: &[UnitId],
        comment: &str,
        progress: Progress,
        actor: &Actor,
    ) -> Result<Vec<KeyId>, KeyError> {
        self.device_bound(unit_ids, comment, &KeyTerms::default(), progress, actor)
            .await
    }

    async fn device_bound(
        &self,
        unit_ids: &[UnitId],
        comment: &str,
        terms: &KeyTerms,
        progress: Progress,
        actor: &Actor,
    ) -> Result<Vec<KeyId>, KeyError> {
        self.usable()?;
        if unit_ids.is_empty() {
            return Err(KeyError::NoUnitIds);
        }
        if unit_ids.len() > MAX_QUANTITY {
            return Err(KeyError::Quantity);
        }
        check_comment(comment)?;
        let (vault, comment, units) = (self.vault.clone(), comment.to_owned(), unit_ids.to_vec());
        let terms = terms.clone();
        let make = Box::new(move |index: usize| {
            Self::generated(
                &vault,
                KeyKind::DeviceBound,
                Some(units[index].clone()),
                &comment,
                &terms,
            )
        });
        Ok(self
            .store
            .insert_keys(unit_ids.len(), make, progress, actor)
            .await?)
    }

    /// Creates a mass-deployment key, random unless a password is given; a typed one must meet
    /// [`crate::mass_key_floor`]. Returns its ID and value.
    pub async fn create_mass(
        &self,
        password: Option<&str>,
        comment: &str,
        actor: &Actor,
    ) -> Result<(KeyId, FirstAuthKey), KeyError> {
        self.mass(password, comment, &KeyTerms::default(), actor)
            .await
    }

    async fn mass(
        &self,
        password: Option<&str>,
        comment: &str,
        terms: &KeyTerms,
        actor: &Actor,
    ) -> Result<(KeyId, FirstAuthKey), KeyError> {
        self.usable()?;
        check_comment(comment)?;
        check_usage_limit(terms.limits.usage_limit)?;
        let typed = password.map(FirstAuthKey::new).transpose()?;
        if let Some(typed) = &typed {
            crate::mass_key_floor::check(typed.expose_secret())?;
        }
        let (vault, comment, terms) = (self.vault.clone(), comment.to_owned(), terms.clone());
        let make = Box::new(move |_| match &typed {
            Some(key) => Self::new_key(
                &vault,
                KeyKind::MassDeployment,
                key,
                None,
                &comment,
                false,
                &terms,
            ),
            None => Self::generated(&vault, KeyKind::MassDeployment, None, &comment, &terms),
        });
        let ids = self
            .store
            .insert_keys(1, make, Box::new(|_| {}), actor)
            .await?;
        let id = ids[0];
        // Read back what was stored: a generated value may have been redrawn on a clash.
        let stored = self.one(id).await?;
        Ok((id, self.vault.open(&stored.sealed, &stored.lookup)?))
    }

    async fn one(&self, id: KeyId) -> Result<StoredKey, KeyError> {
        let filter = KeyFilter {
            ids: Some(vec![id]),
            ..KeyFilter::default()
        };
        self.store
            .keys(&filter, &PageRequest::first(1))
            .await?
            .pop()
            .ok_or(KeyError::Store(StoreError::NotFound(Missing::Keys(vec![
                id,
            ]))))
    }

    /// The view of a stored key at `now`: its value unsealed, then masked unless `show`; its
    /// status as [`claim::status`] decides it at `now`.
    fn view(
        &self,
        stored: StoredKey,
        show: bool,
        now: OffsetDateTime,
    ) -> Result<KeyView, KeyError> {
        let key = self.vault.open(&stored.sealed, &stored.lookup)?;
        Ok(KeyView {
            status: claim::status(
                stored.kind,
                stored.active,
                stored.usage_count,
                stored.limits,
                now,
            ),
            expires_at: stored.limits.expires_at,
            not_before: stored.limits.not_before,
            usage_limit: stored.limits.usage_limit,
            folder: stored.folder,
            key: if show {
                key.expose_secret().to_owned()
            } else {
                key.masked()
            },
            shown: show,
            id: stored.id,
            kind: stored.kind,
            unit_id: stored.unit_id,
            usage_count: stored.usage_count,
            usage_date: stored.usage_date,
            comment: stored.comment,
            created_at: stored.created_at,
        })
    }

    /// One page of the keys matching `filter`, masked unless `show`.
    pub async fn list(
        &self,
        filter: &KeyFilter,
        page: &PageRequest<KeyId>,
        show: bool,
    ) -> Result<Page<KeyView>, KeyError> {
        self.usable()?;
        // One instant for the filter and the statuses shown, so a key on a boundary agrees.
        let now = filter.at.unwrap_or_else(|| self.clock.now());
        let filter = KeyFilter {
            at: Some(now),
            ..filter.clone()
        };
        let rows = self.store.keys(&filter, &page.probe()).await?;
        let listed = store::paged(
            rows,
            page.limit,
            |key| key.id,
            |key| self.view(key, show, now),
        )?;
        if show {
            let ids: Vec<KeyId> = listed.items.iter().map(|key| key.id).collect();
            self.audit_shown("keys.reveal", &ids, "").await?;
        }
        Ok(listed)
    }

    /// One key, masked unless `show` (audited as a reveal).
    pub async fn get(&self, id: KeyId, show: bool) -> Result<KeyView, KeyError> {
        self.usable()?;
        let stored = self.one(id).await?;
        let view = self.view(stored, show, self.clock.now())?;
        if show {
            self.audit_shown("keys.reveal", &[id], "").await?;
        }
        Ok(view)
    }

    /// The keys named, in the clear: all of them, or [`StoreError::NotFound`] naming those that do
    /// not exist. Audited before they are returned.
    pub async fn reveal(&self, ids: &[KeyId]) -> Result<Vec<KeyView>, KeyError> {
        self.usable()?;
        let filter = KeyFilter {
            ids: Some(ids.to_vec()),
            ..KeyFilter::default()
        };
        let stored = self.store.keys(&filter, &PageRequest::all()).await?;
        let missing: Vec<KeyId> = ids
            .iter()
            .copied()
            .filter(|id| !stored.iter().any(|key| key.id == *id))
            .collect();
        if !missing.is_empty() {
            return Err(StoreError::NotFound(Missing::Keys(missing)).into());
        }
        let now = self.clock.now();
        let shown = stored
            .into_iter()
            .map(|key| self.view(key, true, now))
            .collect::<Result<Vec<_>, _>>()?;
        self.audit_shown("keys.reveal", ids, "").await?;
        Ok(shown)
    }

    /// How many keys match `filter`.
    pub async fn count(&self, filter: &KeyFilter) -> Result<u64, KeyError> {
        self.usable()?;
        Ok(self.store.count_keys(filter).await?)
    }

    /// Sets a key's comment.
    pub async fn edit_comment(
        &self,
        id: KeyId,
        comment: &str,
        actor: &Actor,
    ) -> Result<(), KeyError> {
        self.usable()?;
        check_comment(comment)?;
        Ok(self.store.set_comment(id, comment, actor).await?)
    }

    /// Edits a key as `edit` says (its comment, lifetime, usage limit, folder; what it leaves
    /// out stays), in one transaction. A usage limit is refused on a key that is not a
    /// mass-deployment key, naming the field.
    pub async fn edit(&self, id: KeyId, edit: &EditKey, actor: &Actor) -> Result<(), KeyError> {
        self.usable()?;
        if let Some(comment) = &edit.comment {
            check_comment(comment)?;
        }
        if let Some(limit) = edit.usage_limit {
            check_usage_limit(limit)?;
            // A key's kind never changes: read before the transaction, it still holds in it.
            let kind = self.one(id).await?.kind;
            if limit.is_some() && !claim::may_limit_usage(kind) {
                return Err(KeyError::UsageLimitKind(id, kind));
            }
        }
        let patch = KeyPatch {
            comment: edit.comment.clone(),
            not_before: edit.not_before,
            expires_at: edit.expires_at,
            usage_limit: edit.usage_limit,
            folder: edit.folder.clone(),
        };
        Ok(self.store.edit_key(id, patch, actor).await?)
    }

    /// Activates keys (a Used one-time key stays Used).
    pub async fn activate(&self, ids: &[KeyId], actor: &Actor) -> Result<(), KeyError> {
        self.usable()?;
        Ok(self.store.set_active(ids, true, actor).await?)
    }

    /// Deactivates keys.
    pub async fn deactivate(&self, ids: &[KeyId], actor: &Actor) -> Result<(), KeyError> {
        self.usable()?;
        Ok(self.store.set_active(ids, false, actor).await?)
    }

    /// Deletes keys.
    pub async fn delete(&self, ids: &[KeyId], actor: &Actor) -> Result<(), KeyError> {
        self.usable()?;
        Ok(self.store.delete_keys(ids, actor).await?)
    }

    /// The key file for the keys named by `ids` (all must be exportable), or for all exportable
    /// keys when `ids` is empty.
    pub async fn export(
        &self,
        ids: &[KeyId],
        servers: Vec<Server>,
        ums_id: Fingerprint,
    ) -> Result<KeyFile, KeyError> {
        Ok(self.export_listed(ids, servers, ums_id).await?.0)
    }

    /// [`KeyAdmin::export`], with the IDs of the keys the file holds, in its order. Audited before
    /// the file is returned.
    pub async fn export_listed(
        &self,
        ids: &[KeyId],
        servers: Vec<Server>,
        ums_id: Fingerprint,
    ) -> Result<(KeyFile, Vec<KeyId>), KeyError> {
        self.usable()?;
        let now = self.clock.now();
        let mut stored = Vec::new();
        if ids.is_empty() {
            // Every key of each status the claim rule lets onto a stick, in key order.
            for status in KeyStatus::ALL.into_iter().filter(|s| claim::exportable(*s)) {
                let filter = KeyFilter {
                    status: Some(status),
                    at: Some(now),
                    ..KeyFilter::default()
                };
                stored.extend(self.store.keys(&filter, &PageRequest::all()).await?);
            }
            stored.sort_unstable_by_key(|key| key.id);
        } else {
            let filter = KeyFilter {
                ids: Some(ids.to_vec()),
                ..KeyFilter::default()
            };
            stored = self.store.keys(&filter, &PageRequest::all()).await?;
        }
        if !ids.is_empty() {
            let missing: Vec<KeyId> = ids
                .iter()
                .copied()
                .filter(|id| !stored.iter().any(|k| k.id == *id))
                .collect();
            if !missing.is_empty() {
                return Err(StoreError::NotFound(Missing::Keys(missing)).into());
            }
        }
        self.file_of(stored, servers, ums_id).await
    }

    /// The key file of `stored` (all exportable, at least one), audited before it is returned;
    /// with the IDs of its keys, in its order.
    async fn file_of(
        &self,
        stored: Vec<StoredKey>,
        servers: Vec<Server>,
        ums_id: Fingerprint,
    ) -> Result<(KeyFile, Vec<KeyId>), KeyError> {
        let now = self.clock.now();
        let status_now = |k: &StoredKey| k.status_at(now);
        if let Some(bad) = stored.iter().find(|k| !claim::exportable(status_now(k))) {
            return Err(KeyError::NotExportable {
                id: bad.id,
                status: status_now(bad),
            });
        }
        if stored.is_empty() {
            return Err(KeyError::NothingToExport);
        }
        let mut entries = Vec::with_capacity(stored.len());
        let listed: Vec<KeyId> = stored.iter().map(|key| key.id).collect();
        for key in stored {
            let value = self.vault.open(&key.sealed, &key.lookup)?;
            entries.push(match key.unit_id {
                Some(unit_id) => KeyEntry::device_bound(value, unit_id),
                None if key.kind == KeyKind::MassDeployment => KeyEntry::mass(value),
                None => KeyEntry::one_time(value),
            });
        }
        let now = self.clock.now().replace_nanosecond(0).ok();
        let how = format!("{} key(s) to a key file", listed.len());
        self.audit_shown("keys.export", &listed, &how).await?;
        Ok((KeyFile::new(servers, ums_id, entries, now), listed))
    }
}

/// What an export of some keys would hold, checked before it is made ([`KeyAdmin::export_check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportKeysCheck {
    /// Each key named, in order, with whether it can go on a stick (empty when none is named).
    pub keys: Vec<onboard_protocol::admin::ExportKeyCheck>,
    /// How many keys the file would hold.
    pub exportable: u64,
    /// How many keys named cannot be exported.
    pub refused: u64,
}

impl KeyAdmin {
    /// What [`KeyAdmin::export`] of `ids` (none: every active key) would hold, by the same rule
    /// ([`claim::exportable`]), without opening, showing or auditing any key: IDs and statuses
    /// only, as the key list shows them. An ID no key has is refused as the export refuses it.
    pub async fn export_check(&self, ids: &[KeyId]) -> Result<ExportKeysCheck, KeyError> {
        use onboard_protocol::admin::ExportKeyCheck;
        self.usable()?;
        let now = self.clock.now();
        if ids.is_empty() {
            // Every key of each status the claim rule lets onto a stick, as the export takes them.
            let mut exportable = 0;
            for status in KeyStatus::ALL.into_iter().filter(|s| claim::exportable(*s)) {
                let filter = KeyFilter {
                    status: Some(status),
                    at: Some(now),
                    ..KeyFilter::default()
                };
                exportable += self.store.count_keys(&filter).await?;
            }
            return Ok(ExportKeysCheck {
                keys: Vec::new(),
                exportable,
                refused: 0,
            });
        }
        let filter = KeyFilter {
            ids: Some(ids.to_vec()),
            ..KeyFilter::default()
        };
        let stored = self.store.keys(&filter, &PageRequest::all()).await?;
        // An ID no key has is refused as the export refuses it (404, naming them).
        let missing: Vec<KeyId> = ids
            .iter()
            .copied()
            .filter(|id| !stored.iter().any(|key| key.id == *id))
            .collect();
        if !missing.is_empty() {
            return Err(StoreError::NotFound(Missing::Keys(missing)).into());
        }
        let mut seen = std::collections::HashSet::new();
        let keys: Vec<ExportKeyCheck> = ids
            .iter()
            .filter(|id| seen.insert(**id))
            .filter_map(|id| stored.iter().find(|key| key.id == *id))
            .map(|key| {
                let status = key.status_at(now);
                let exportable = claim::exportable(status);
                ExportKeyCheck {
                    id: key.id,
                    status,
                    exportable,
                    reason: (!exportable)
                        .then(|| format!("the key is {status}: only active keys go on a stick")),
                }
            })
            .collect();
        let exportable = keys.iter().filter(|key| key.exportable).count() as u64;
        Ok(ExportKeysCheck {
            refused: keys.len() as u64 - exportable,
            exportable,
            keys,
        })
    }
}

/// The Web App's key table: sorted, offset-paged lists, and changes to every key a filter
/// matches, each saying what it did.
impl KeyAdmin {
    /// `offset` rows into the keys `listing` matches, at most `limit`, masked.
    pub async fn listing(
        &self,
        listing: &KeyListing,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<KeyView>, KeyError> {
        self.usable()?;
        let now = self.clock.now();
        self.store
            .key_listing(listing, offset, limit)
            .await?
            .into_iter()
            .map(|key| self.view(key, false, now))
            .collect()
    }

    /// How many keys `listing` matches.
    pub async fn count_listing(&self, listing: &KeyListing) -> Result<u64, KeyError> {
        self.usable()?;
        Ok(self.store.count_key_listing(listing).await?)
    }

    /// The IDs of every key `listing` matches, in its order.
    pub async fn matching(&self, listing: &KeyListing) -> Result<Vec<KeyId>, KeyError> {
        self.usable()?;
        Ok(self
            .store
            .key_listing(listing, 0, usize::MAX)
            .await?
            .into_iter()
            .map(|key| key.id)
            .collect())
    }

    /// The key file of every key `listing` matches (all must be exportable, and at least one),
    /// read once: for "export every key matching the filter", however many.
    pub async fn export_matching(
        &self,
        listing: &KeyListing,
        servers: Vec<Server>,
        ums_id: Fingerprint,
    ) -> Result<KeyFile, KeyError> {
        self.usable()?;
        let stored = self.store.key_listing(listing, 0, usize::MAX).await?;
        Ok(self.file_of(stored, servers, ums_id).await?.0)
    }

    /// Applies `action` to the keys `ids` (all of them, or none when one is unknown) and says
    /// what it did ([`crate::key_changes::summarize`]).
    pub async fn change(
        &self,
        action: KeyAction,
        ids: &[KeyId],
        actor: &Actor,
    ) -> Result<KeysChanged, KeyError> {
        self.usable()?;
        let before = self.statuses(ids).await?;
        if !ids.is_empty() {
            match action {
                KeyAction::Activate => self.activate(ids, actor).await?,
                KeyAction::Deactivate => self.deactivate(ids, actor).await?,
                KeyAction::Delete => self.delete(ids, actor).await?,
            }
        }
        // A deletion removes every key named or fails: none is left to read back.
        let after = match action {
            KeyAction::Delete => std::collections::HashMap::new(),
            KeyAction::Activate | KeyAction::Deactivate => self.statuses(ids).await?,
        };
        Ok(crate::key_changes::summarize(action, &before, &after))
    }

    async fn statuses(
        &self,
        ids: &[KeyId],
    ) -> Result<std::collections::HashMap<KeyId, KeyStatus>, KeyError> {
        if ids.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        let now = self.clock.now();
        let filter = KeyFilter {
            ids: Some(ids.to_vec()),
            ..KeyFilter::default()
        };
        Ok(self
            .store
            .keys(&filter, &PageRequest::all())
            .await?
            .into_iter()
            .map(|key| (key.id, key.status_at(now)))
            .collect())
    }
}

/// `HOST`, `HOST:PORT` or `[IPV6]:PORT`.
pub fn parse_server(text: &str) -> Result<Server, KeyError> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| KeyError::Server("an IPv6 address in [ ] lacks its ]".to_owned()))?;
        (host, after.strip_prefix(':'))
    } else if text.matches(':').count() == 1 {
        let (host, port) = text.split_once(':').unwrap_or((text, ""));
        (host, Some(port))
    } else {
        (text, None)
    };
    let port = match port {
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => {
                return Err(KeyError::Server(
                    "the port is not a number from 1 to 65535".to_owned(),
                ));
            }
        },
        None => onboard_protocol::routes::DEFAULT_PORT,
    };
    Server::new(host, port).map_err(|error| KeyError::Server(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_ranges_join_runs() {
        let table: &[(&[KeyId], &str)] = &[
            (&[], ""),
            (&[3], "3"),
            (&[1, 2, 3, 4], "1 to 4"),
            (&[1, 2], "1, 2"),
            (&[9, 1, 2, 3, 4, 7], "1 to 4, 7, 9"),
            (&[5, 5, 6], "5, 6"),
        ];
        for (ids, shown) in table {
            assert_eq!(id_ranges(ids), *shown, "{ids:?}");
        }
    }
}
