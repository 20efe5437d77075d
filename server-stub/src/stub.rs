//! The opened server state the commands and routes work on: settings, UMS ID, store and vault,
//! and the use cases over them ([`Stub::keys`], [`Stub::devices`], [`Stub::audit_log`]).

use std::sync::Arc;

use anyhow::Context;
use onboard_protocol::admin::UmsIdView;

use crate::accounts::AccountAdmin;
use crate::audit::AuditLog;
use crate::config::Settings;
use crate::devices::DeviceAdmin;
use crate::files;
use crate::keys::KeyAdmin;
use crate::store::{self, KeyFilter, PageRequest, Store};
use crate::ums_id::UmsId;
use crate::vault::KeyVault;

/// An opened data directory.
#[derive(Debug)]
pub struct Stub {
    /// The settings it was opened with.
    pub settings: Settings,
    /// The server's identity.
    pub ums_id: UmsId,
    /// The store, whichever backend the settings chose.
    pub store: Arc<dyn Store>,
    /// Keys derived from the UMS ID that protect key values.
    pub vault: Arc<KeyVault>,
}

impl Stub {
    /// Opens the data directory, creating it, the UMS ID and the database at first use. Refuses
    /// a database made under another UMS ID.
    pub async fn open(settings: Settings) -> anyhow::Result<Self> {
        files::create_private_dir(&settings.data_dir)?;
        let data_dir = settings.data_dir.clone();
        let (ums_id, _created) =
            tokio::task::spawn_blocking(move || UmsId::load_or_create(&data_dir))
                .await?
                .context("UMS ID")?;
        let store = store::open(&settings).await?;
        let vault = Arc::new(KeyVault::derive(&ums_id.secret_material()));
        bind(&*store, &ums_id, &vault, &settings).await?;
        Ok(Self {
            settings,
            ums_id,
            store,
            vault,
        })
    }

    /// Key operations.
    pub fn keys(&self) -> KeyAdmin {
        KeyAdmin::new(self.store.clone(), self.vault.clone())
    }

    /// Administrator accounts, tokens and sessions.
    pub fn accounts(&self) -> AccountAdmin {
        AccountAdmin::new(self.store.clone(), self.settings.session_lifetime)
    }

    /// Enrolled devices.
    pub fn devices(&self) -> DeviceAdmin {
        DeviceAdmin::new(self.store.clone())
    }

    /// The audit log.
    pub fn audit_log(&self) -> AuditLog {
        AuditLog::new(self.store.clone())
    }

    /// The UMS ID as the UMS ID page shows it.
    pub fn ums_id_view(&self) -> UmsIdView {
        UmsIdView::new(self.ums_id.fingerprint(), self.ums_id.created_at())
    }
}

/// Binds `store` to `ums_id`. A database that records no UMS ID yet (new, or made before the
/// store recorded it) is bound only if its keys open under this UMS ID: one made under another
/// would otherwise be bound to the wrong one for good.
async fn bind(
    store: &dyn Store,
    ums_id: &UmsId,
    vault: &KeyVault,
    settings: &Settings,
) -> anyhow::Result<()> {
    let ours = ums_id.fingerprint();
    if store.ums_id().await?.is_none() {
        let sample = store
            .keys(&KeyFilter::default(), &PageRequest::first(1))
            .await?;
        if let Some(key) = sample.first()
            && vault.open(&key.sealed, &key.lookup).is_err()
        {
            anyhow::bail!(
                "the keys in the database {} do not open under this server's UMS ID {ours}: it was \
                 made under another UMS ID; restore that one (ums-stub ums-id restore BACKUP \
                 --force), or use a data directory of its own for this UMS ID",
                settings.database_file().display()
            );
        }
    }
    store.bind_ums_id(&ours).await?;
    Ok(())
}
