//! The opened server state the commands and routes work on: settings, UMS ID, store and vault,
//! and the use cases over them ([`Stub::keys`], [`Stub::devices`], [`Stub::audit_log`]).

use std::sync::Arc;

use anyhow::Context;
use onboard_protocol::admin::UmsIdView;

use crate::accounts::AccountAdmin;
use crate::audit::AuditLog;
use crate::cluster::{self, ClusterSecret, SyncStatus};
use crate::config::Settings;
use crate::devices::DeviceAdmin;
use crate::files;
use crate::keys::KeyAdmin;
use crate::row_mac::{self, RowKey, Sealing};
use crate::store::Database;
use crate::store::{self, Actor, KeyFilter, PageRequest, Store};
use crate::ums_id::UmsId;
use crate::vault::KeyVault;

/// An opened data directory.
#[derive(Debug)]
pub struct Stub {
    /// The settings it was opened with.
    pub settings: Settings,
    /// The UMS ID this server uses: the Main UMS ID of its database (its own on SQLite, or
    /// when it could not adopt the Main one).
    pub ums_id: UmsId,
    /// The fingerprint of its Local UMS ID, the one in its data directory.
    pub local_fingerprint: onboard_protocol::Fingerprint,
    /// Where it stands towards the Main UMS ID.
    pub sync: SyncStatus,
    /// The store, whichever backend the settings chose.
    pub store: Arc<dyn Store>,
    /// Keys derived from the UMS ID that protect key values.
    pub vault: Arc<KeyVault>,
    /// The key derived from the UMS ID that account, token and session rows carry MACs under.
    pub rows: Arc<RowKey>,
    /// The server's notion of now (the system clock, moved only in test-rig mode).
    pub clock: crate::rig::clock::Clock,
}

impl Stub {
    /// Opens the data directory, creating it, the UMS ID and the database at first use. Refuses
    /// a database made under another UMS ID.
    pub async fn open(settings: Settings) -> anyhow::Result<Self> {
        files::create_private_dir(&settings.data_dir)?;
        let data_dir = settings.data_dir.clone();
        let (local, _created) =
            tokio::task::spawn_blocking(move || UmsId::load_or_create(&data_dir))
                .await?
                .context("UMS ID")?;
        let local_fingerprint = local.fingerprint();
        let clock = crate::rig::clock::Clock::system();
        let store = store::open(
            &settings.database,
            &settings.database_file(),
            settings.database_ca.as_deref(),
            &clock,
        )
        .await?;
        let (ums_id, sync) = adopt(&*store, local, &settings).await?;
        let vault = Arc::new(KeyVault::derive(&ums_id.secret_material()));
        let rows = Arc::new(RowKey::derive(&ums_id.secret_material()));
        if sync != SyncStatus::NotInSync {
            bind(&*store, &ums_id, &vault, &settings).await?;
        }
        seal_at_upgrade(&*store, &rows, sync).await?;
        Ok(Self {
            settings,
            ums_id,
            local_fingerprint,
            sync,
            store,
            vault,
            rows,
            clock,
        })
    }

    /// Key operations.
    pub fn keys(&self) -> KeyAdmin {
        let keys =
            KeyAdmin::new(self.store.clone(), self.vault.clone()).with_clock(self.clock.clone());
        if self.sync == SyncStatus::NotInSync {
            keys.refusing()
        } else {
            keys
        }
    }

    /// Administrator accounts, tokens and sessions.
    pub fn accounts(&self) -> AccountAdmin {
        let accounts = AccountAdmin::new(
            self.store.clone(),
            self.settings.session_lifetime,
            self.rows.clone(),
        );
        if self.sync == SyncStatus::NotInSync {
            accounts.refusing()
        } else {
            accounts
        }
    }

    /// Enrolled devices.
    pub fn devices(&self) -> DeviceAdmin {
        DeviceAdmin::new(self.store.clone()).with_clock(self.clock.clone())
    }

    /// The audit log.
    pub fn audit_log(&self) -> AuditLog {
        AuditLog::new(self.store.clone())
    }

    /// Logs one WARN when account or token rows carry no MAC: they grant nothing until an
    /// administrator on this machine seals them. Names how many and the command, nothing else.
    pub async fn warn_unsealed_rows(&self) -> anyhow::Result<()> {
        let unsealed = self.store.unsealed_admin_rows().await?;
        if !unsealed.is_empty() {
            tracing::warn!(
                accounts = unsealed.accounts.len(),
                tokens = unsealed.tokens.len(),
                "account or token rows without a MAC grant nothing (rows from before row MACs \
                 that were not sealed at the upgrade, or rows written outside the server): check \
                 them with `ums-stub admins seal --dry-run` and seal them with `ums-stub admins \
                 seal`, or delete them"
            );
        }
        Ok(())
    }

    /// The UMS ID as the UMS ID page shows it.
    pub fn ums_id_view(&self) -> UmsIdView {
        UmsIdView::new(self.ums_id.fingerprint(), self.ums_id.created_at())
    }
}

/// The UMS ID a server uses, by [`cluster::start`]: on SQLite without a cluster secret its own;
/// otherwise the Main UMS ID of the database, which the first server offers.
async fn adopt(
    store: &dyn Store,
    local: UmsId,
    settings: &Settings,
) -> anyhow::Result<(UmsId, SyncStatus)> {
    if settings.database == Database::Sqlite && settings.cluster_secret.is_none() {
        return Ok((local, SyncStatus::Main));
    }
    let secret = settings
        .cluster_secret
        .as_deref()
        .map(ClusterSecret::load)
        .transpose()?;
    let main = store.main_ums_id().await?;
    let opened = match (&main, &secret) {
        (Some(main), Some(secret)) => secret.open(main).ok(),
        _ => None,
    };
    let found = cluster::Found {
        main_exists: main.is_some(),
        main_is_local: main
            .as_ref()
            .is_some_and(|main| main.fingerprint == local.fingerprint()),
        has_secret: secret.is_some(),
        secret_opens: opened.is_some(),
    };
    match cluster::start(found) {
        cluster::Start::Offer => {
            let secret = secret.expect("the rule offers only with a secret");
            // Only a UMS ID the database's keys are sealed under may become its Main UMS ID.
            if let Some(bound) = store.ums_id().await?
                && bound != local.fingerprint()
            {
                anyhow::bail!(
                    "the database's keys are sealed under UMS ID {bound}, but it records no Main \
                     UMS ID and this server's is {}: restore that UMS ID on one server with the \
                     cluster secret (ums-stub ums-id restore BACKUP --force --cluster-secret FILE)",
                    local.fingerprint()
                );
            }
            let recorded = store.offer_main_ums_id(&secret.seal(&local)).await?;
            if recorded.fingerprint == local.fingerprint() {
                tracing::info!(ums_id = %local.fingerprint().short(), "this server's UMS ID is the Main UMS ID");
                return Ok((local, SyncStatus::Main));
            }
            // Another server offered first.
            match secret.open(&recorded) {
                Ok(main) => Ok((main, SyncStatus::InSync)),
                Err(error) => {
                    tracing::error!(
                        "{error}; enrollments are refused until a restart with the right secret"
                    );
                    Ok((local, SyncStatus::NotInSync))
                }
            }
        }
        cluster::Start::Adopt(status) => {
            let main = opened.expect("the rule adopts only an opened Main UMS ID");
            tracing::info!(ums_id = %main.fingerprint().short(), status = status.label(), "using the Main UMS ID");
            Ok((main, status))
        }
        cluster::Start::Refuse => {
            tracing::error!(
                "this server cannot adopt the Main UMS ID of its database ({}): not in sync, \
                 enrollments are refused; restart it with the cluster's secret (--cluster-secret FILE)",
                if secret.is_some() {
                    "its cluster secret does not open it"
                } else {
                    "it has no cluster secret"
                }
            );
            Ok((local, SyncStatus::NotInSync))
        }
        cluster::Start::NeedSecret => anyhow::bail!(
            "the database has no Main UMS ID yet, and this server has no cluster secret to seal \
             its UMS ID as the Main one: make one with ums-stub cluster-secret create --out FILE, \
             give it to every server sharing the database (mode 0600), and name it with \
             --cluster-secret FILE or cluster_secret_file in the config"
        ),
    }
}

/// Seals the account and token rows from before row MACs when [`row_mac::sealing`] says so: only
/// in the open that applied the row-MAC migration, with the key at hand.
async fn seal_at_upgrade(
    store: &dyn Store,
    rows: &Arc<RowKey>,
    sync: SyncStatus,
) -> anyhow::Result<()> {
    let sealing = row_mac::sealing(store.migrated_row_macs_now(), sync != SyncStatus::NotInSync);
    if sealing == Sealing::Seal {
        let sealed = store
            .seal_admin_rows(rows.clone(), "at the upgrade to row MACs", &Actor::cli())
            .await?;
        if !sealed.is_empty() {
            tracing::info!(
                accounts = sealed.accounts.len(),
                tokens = sealed.tokens.len(),
                "sealed the account and token rows from before row MACs"
            );
        }
    }
    Ok(())
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
            let database = match &settings.database {
                Database::Sqlite => settings.database_file().display().to_string(),
                Database::Postgres(url) => url.to_string(),
            };
            anyhow::bail!(
                "the keys in the database {database} do not open under this server's UMS ID \
                 {ours}: it was made under another UMS ID; restore that one (ums-stub ums-id \
                 restore BACKUP --force), or use a data directory of its own for this UMS ID"
            );
        }
    }
    store.bind_ums_id(&ours).await?;
    Ok(())
}
