//! Key management: the operations the command line runs and the admin API will reuse.
//!
//! Each takes the store and the vault; values are generated here from the OS CSPRNG, sealed before
//! they reach the store, and unsealed only for `--show` and exports.

use onboard_protocol::{Fingerprint, FirstAuthKey, KeyEntry, KeyFile, KeyKind, Server, UnitId};
use time::OffsetDateTime;

use crate::random;
use crate::store::{KeyFilter, KeyId, KeyStatus, NewKey, Progress, Store, StoreError, StoredKey};
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
    /// A typed password that cannot be a key value.
    #[error("the password cannot be a key: {0}")]
    Password(#[from] onboard_protocol::KeyValueError),
    /// Keys named for export that cannot go on a stick.
    #[error("key {id} is {status}; only active keys can be exported")]
    NotExportable {
        /// The key.
        id: KeyId,
        /// Its status.
        status: KeyStatus,
    },
    /// Nothing to export.
    #[error("no key to export: there are no active, unused keys (create some, or name IDs)")]
    NothingToExport,
}

/// A key as the key list shows it, with its value unsealed (masked unless the caller shows it).
#[derive(Debug, Clone)]
pub struct KeyView {
    /// Its number.
    pub id: KeyId,
    /// Its kind.
    pub kind: KeyKind,
    /// Its value; `Display` masks it.
    pub key: FirstAuthKey,
    /// The unit ID a device-bound key names.
    pub unit_id: Option<UnitId>,
    /// Active, Inactive or Used.
    pub status: KeyStatus,
    /// Successful enrollments with it.
    pub usage_count: u64,
    /// The last of them.
    pub usage_date: Option<OffsetDateTime>,
    /// The administrator's comment.
    pub comment: String,
}

/// Key operations over one store and the vault of the UMS ID.
pub struct KeyAdmin<'a> {
    store: &'a dyn Store,
    vault: &'a KeyVault,
}

impl<'a> KeyAdmin<'a> {
    /// Operations on `store`, protecting values with `vault`.
    pub fn new(store: &'a dyn Store, vault: &'a KeyVault) -> Self {
        Self { store, vault }
    }

    fn new_key(
        &self,
        kind: KeyKind,
        key: &FirstAuthKey,
        unit_id: Option<UnitId>,
        comment: &str,
        generated: bool,
    ) -> NewKey {
        let lookup = self.vault.lookup(key);
        NewKey {
            kind,
            sealed: self.vault.seal(key, &lookup),
            lookup,
            unit_id,
            comment: comment.to_owned(),
            generated,
        }
    }

    fn generated(&self, kind: KeyKind, unit_id: Option<UnitId>, comment: &str) -> NewKey {
        let key = FirstAuthKey::new(random::key_digits()).expect("17 digits are a key");
        self.new_key(kind, &key, unit_id, comment, true)
    }

    /// Creates `quantity` one-time keys.
    pub fn create_one_time(
        &self,
        quantity: usize,
        comment: &str,
        progress: Progress<'_>,
    ) -> Result<Vec<KeyId>, KeyError> {
        if quantity == 0 || quantity > MAX_QUANTITY {
            return Err(KeyError::Quantity);
        }
        Ok(self.store.insert_keys(
            quantity,
            &mut |_| self.generated(KeyKind::OneTime, None, comment),
            progress,
        )?)
    }

    /// Creates one device-bound key per unit ID.
    pub fn create_device_bound(
        &self,
        unit_ids: &[UnitId],
        comment: &str,
        progress: Progress<'_>,
    ) -> Result<Vec<KeyId>, KeyError> {
        Ok(self.store.insert_keys(
            unit_ids.len(),
            &mut |index| {
                self.generated(KeyKind::DeviceBound, Some(unit_ids[index].clone()), comment)
            },
            progress,
        )?)
    }

    /// Creates a mass-deployment key, random unless a password is given. Returns its ID and value.
    pub fn create_mass(
        &self,
        password: Option<&str>,
        comment: &str,
    ) -> Result<(KeyId, FirstAuthKey), KeyError> {
        let typed = password.map(FirstAuthKey::new).transpose()?;
        let ids = self.store.insert_keys(
            1,
            &mut |_| match &typed {
                Some(key) => self.new_key(KeyKind::MassDeployment, key, None, comment, false),
                None => self.generated(KeyKind::MassDeployment, None, comment),
            },
            &|_| {},
        )?;
        let id = ids[0];
        // Read back what was stored: a generated value may have been redrawn on a clash.
        let stored = self.view(self.one(id)?)?;
        Ok((id, stored.key))
    }

    fn one(&self, id: KeyId) -> Result<StoredKey, KeyError> {
        let filter = KeyFilter {
            ids: Some(vec![id]),
            ..KeyFilter::default()
        };
        self.store
            .keys(&filter)?
            .pop()
            .ok_or(KeyError::Store(StoreError::NotFound(vec![id])))
    }

    fn view(&self, stored: StoredKey) -> Result<KeyView, KeyError> {
        Ok(KeyView {
            key: self.vault.open(&stored.sealed, &stored.lookup)?,
            status: stored.status(),
            id: stored.id,
            kind: stored.kind,
            unit_id: stored.unit_id,
            usage_count: stored.usage_count,
            usage_date: stored.usage_date,
            comment: stored.comment,
        })
    }

    /// The keys matching `filter`.
    pub fn list(&self, filter: &KeyFilter) -> Result<Vec<KeyView>, KeyError> {
        self.store
            .keys(filter)?
            .into_iter()
            .map(|stored| self.view(stored))
            .collect()
    }

    /// Sets a key's comment.
    pub fn edit_comment(&self, id: KeyId, comment: &str) -> Result<(), KeyError> {
        Ok(self.store.set_comment(id, comment)?)
    }

    /// Activates keys (a Used one-time key stays Used).
    pub fn activate(&self, ids: &[KeyId]) -> Result<(), KeyError> {
        Ok(self.store.set_active(ids, true)?)
    }

    /// Deactivates keys.
    pub fn deactivate(&self, ids: &[KeyId]) -> Result<(), KeyError> {
        Ok(self.store.set_active(ids, false)?)
    }

    /// Deletes keys.
    pub fn delete(&self, ids: &[KeyId]) -> Result<(), KeyError> {
        Ok(self.store.delete_keys(ids)?)
    }

    /// The key file for the keys named by `ids` (all must be active), or for all active keys when
    /// `ids` is empty.
    pub fn export(
        &self,
        ids: &[KeyId],
        servers: Vec<Server>,
        ums_id: Fingerprint,
    ) -> Result<KeyFile, KeyError> {
        let filter = if ids.is_empty() {
            KeyFilter {
                status: Some(KeyStatus::Active),
                ..KeyFilter::default()
            }
        } else {
            KeyFilter {
                ids: Some(ids.to_vec()),
                ..KeyFilter::default()
            }
        };
        let stored = self.store.keys(&filter)?;
        if !ids.is_empty() {
            let missing: Vec<KeyId> = ids
                .iter()
                .copied()
                .filter(|id| !stored.iter().any(|k| k.id == *id))
                .collect();
            if !missing.is_empty() {
                return Err(StoreError::NotFound(missing).into());
            }
            if let Some(bad) = stored.iter().find(|k| k.status() != KeyStatus::Active) {
                return Err(KeyError::NotExportable {
                    id: bad.id,
                    status: bad.status(),
                });
            }
        }
        if stored.is_empty() {
            return Err(KeyError::NothingToExport);
        }
        let mut entries = Vec::with_capacity(stored.len());
        for key in stored {
            let view = self.view(key)?;
            entries.push(match view.unit_id {
                Some(unit_id) => KeyEntry::device_bound(view.key, unit_id),
                None if view.kind == KeyKind::MassDeployment => KeyEntry::mass(view.key),
                None => KeyEntry::one_time(view.key),
            });
        }
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).ok();
        Ok(KeyFile::new(servers, ums_id, entries, now))
    }
}
