//! The opened server state the commands work on: settings, UMS ID, store and vault.

use anyhow::Context;

use crate::config::Settings;
use crate::files;
use crate::keys::KeyAdmin;
use crate::store::SqliteStore;
use crate::ums_id::UmsId;
use crate::vault::KeyVault;

/// An opened data directory.
#[derive(Debug)]
pub struct Stub {
    /// The settings it was opened with.
    pub settings: Settings,
    /// The server's identity.
    pub ums_id: UmsId,
    /// The key store.
    pub store: SqliteStore,
    /// Keys derived from the UMS ID that protect key values.
    pub vault: KeyVault,
}

impl Stub {
    /// Opens the data directory, creating it, the UMS ID and the database at first use.
    pub fn open(settings: Settings) -> anyhow::Result<Self> {
        files::create_private_dir(&settings.data_dir)?;
        let (ums_id, _created) = UmsId::load_or_create(&settings.data_dir).context("UMS ID")?;
        let store = SqliteStore::open(&settings.database())?;
        let vault = KeyVault::derive(&ums_id.secret_material());
        Ok(Self {
            settings,
            ums_id,
            store,
            vault,
        })
    }

    /// Key operations on this store.
    pub fn keys(&self) -> KeyAdmin<'_> {
        KeyAdmin::new(&self.store, &self.vault)
    }
}
