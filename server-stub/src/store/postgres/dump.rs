//! Copying a whole store into an empty PostgreSQL database (`ums-stub cluster copy`): every
//! row, numbers kept, in one transaction.

use onboard_protocol::Fingerprint;
use time::OffsetDateTime;

use super::{META_UMS_ID, PostgresStore, audit_in};
use crate::cluster::MainUmsId;
use crate::store::apply::INSERT_CHUNK;
use crate::store::error::StoreError;
use crate::store::query::{
    ACCOUNT_COLUMNS, AUDIT_COLUMNS, DEVICE_COLUMNS, KEY_COLUMNS, TOKEN_COLUMNS,
};
use crate::store::rows::{
    AccountRow, Actor, AuditEntry, DeviceRecord, Progress, StoredKey, TokenRow, rights_text,
};

/// Everything a store holds, for [`PostgresStore::import`]: keys stay sealed.
#[derive(Debug, Default)]
pub struct Dump {
    /// The UMS ID the keys were sealed under (the source's binding).
    pub ums_id: Option<Fingerprint>,
    /// The Main UMS ID to record.
    pub main: Option<MainUmsId>,
    /// Every key.
    pub keys: Vec<StoredKey>,
    /// Every enrolled device.
    pub devices: Vec<DeviceRecord>,
    /// The whole audit log.
    pub audit: Vec<AuditEntry>,
    /// Every account.
    pub accounts: Vec<AccountRow>,
    /// Every API token.
    pub tokens: Vec<TokenRow>,
}

impl PostgresStore {
    /// Copies `dump` into this database, which must hold no key, device, account or audit line
    /// yet: all of it in one transaction, numbers kept, so an export made before the copy still
    /// names the same keys. `progress` is told how many rows are done.
    pub async fn import(&self, dump: &Dump, progress: &Progress) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        let used: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM keys) OR EXISTS (SELECT 1 FROM devices)
                   OR EXISTS (SELECT 1 FROM accounts) OR EXISTS (SELECT 1 FROM audit)
                   OR EXISTS (SELECT 1 FROM main_ums_id)",
                &[],
            )
            .await
            .map_err(|e| self.db(e))?
            .get(0);
        if used {
            return Err(StoreError::Conflict(format!(
                "the database {} is not empty: copy into a new database",
                self.shown
            )));
        }
        let mut done = 0u64;
        for chunk in dump.keys.chunks(INSERT_CHUNK) {
            let ids: Vec<i64> = chunk.iter().map(|key| key.id).collect();
            let kinds: Vec<&str> = chunk.iter().map(|key| key.kind.as_str()).collect();
            let lookups: Vec<Vec<u8>> = chunk.iter().map(|key| key.lookup.to_vec()).collect();
            let sealed: Vec<&[u8]> = chunk.iter().map(|key| key.sealed.as_slice()).collect();
            let units: Vec<Option<String>> = chunk
                .iter()
                .map(|key| key.unit_id.as_ref().map(ToString::to_string))
                .collect();
            let active: Vec<bool> = chunk.iter().map(|key| key.active).collect();
            let statuses: Vec<&str> = chunk.iter().map(|key| key.status.as_str()).collect();
            let counts: Vec<i64> = chunk
                .iter()
                .map(|key| i64::try_from(key.usage_count).unwrap_or(i64::MAX))
                .collect();
            let dates: Vec<Option<i64>> = chunk
                .iter()
                .map(|key| key.usage_date.map(OffsetDateTime::unix_timestamp))
                .collect();
            let comments: Vec<&str> = chunk.iter().map(|key| key.comment.as_str()).collect();
            let created: Vec<i64> = chunk
                .iter()
                .map(|key| key.created_at.unix_timestamp())
                .collect();
            let not_before: Vec<Option<i64>> = chunk
                .iter()
                .map(|key| key.limits.not_before.map(OffsetDateTime::unix_timestamp))
                .collect();
            let expires_at: Vec<Option<i64>> = chunk
                .iter()
                .map(|key| key.limits.expires_at.map(OffsetDateTime::unix_timestamp))
                .collect();
            let limits: Vec<Option<i64>> = chunk
                .iter()
                .map(|key| {
                    key.limits
                        .usage_limit
                        .map(|limit| i64::try_from(limit).unwrap_or(i64::MAX))
                })
                .collect();
            let folders: Vec<Option<&str>> = chunk
                .iter()
                .map(|key| key.folder.as_ref().map(onboard_protocol::Folder::as_str))
                .collect();
            tx.execute(
                &format!(
                    "INSERT INTO keys ({KEY_COLUMNS})
                     SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::bytea[],
                        $5::text[], $6::boolean[], $7::text[], $8::bigint[], $9::bigint[],
                        $10::text[], $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[],
                        $15::text[])"
                ),
                &[
                    &ids,
                    &kinds,
                    &lookups,
                    &sealed,
                    &units,
                    &active,
                    &statuses,
                    &counts,
                    &dates,
                    &comments,
                    &created,
                    &not_before,
                    &expires_at,
                    &limits,
                    &folders,
                ],
            )
            .await
            .map_err(|e| self.db(e))?;
            done += chunk.len() as u64;
            progress(done);
        }
        for device in &dump.devices {
            tx.execute(
                &format!(
                    "INSERT INTO devices ({DEVICE_COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                ),
                &[
                    &device.unit_id.as_str(),
                    &device.public_key,
                    &device.certificate,
                    &device.serial,
                    &device.not_after.unix_timestamp(),
                    &device.key_id,
                    &device.key_kind.as_str(),
                    &device.enrolled_at.unix_timestamp(),
                    &device.last_seen.unix_timestamp(),
                    &device.inventory,
                    &device.previous_serial,
                    &device.folder.as_ref().map(onboard_protocol::Folder::as_str),
                ],
            )
            .await
            .map_err(|e| self.db(e))?;
            done += 1;
        }
        progress(done);
        for entry in &dump.audit {
            tx.execute(
                &format!("INSERT INTO audit ({AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"),
                &[
                    &entry.id,
                    &entry.at.unix_timestamp(),
                    &entry.event,
                    &entry.actor,
                    &entry.source,
                    &entry.unit_id,
                    &entry.key_id,
                    &entry.outcome,
                    &entry.detail,
                ],
            )
            .await
            .map_err(|e| self.db(e))?;
            done += 1;
        }
        progress(done);
        for account in &dump.accounts {
            tx.execute(
                &format!(
                    "INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
                ),
                &[
                    &account.name,
                    &account.password_hash,
                    &rights_text(&account.rights),
                    &account.created_at.unix_timestamp(),
                    &account.changed_at.unix_timestamp(),
                    &account.mac.map(|mac| mac.to_vec()),
                ],
            )
            .await
            .map_err(|e| self.db(e))?;
        }
        for token in &dump.tokens {
            tx.execute(
                &format!(
                    "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                ),
                &[
                    &token.id,
                    &token.digest.to_vec(),
                    &token.account,
                    &token.name,
                    &rights_text(&token.rights),
                    &token.created_at.unix_timestamp(),
                    &token.expires_at.map(OffsetDateTime::unix_timestamp),
                    &token.mac.map(|mac| mac.to_vec()),
                ],
            )
            .await
            .map_err(|e| self.db(e))?;
        }
        // New rows are numbered after the copied ones.
        tx.batch_execute(
            "SELECT setval('keys_id_seq', coalesce((SELECT max(id) FROM keys), 0) + 1, false);
             SELECT setval('audit_id_seq', coalesce((SELECT max(id) FROM audit), 0) + 1, false);",
        )
        .await
        .map_err(|e| self.db(e))?;
        if let Some(ums_id) = dump.ums_id {
            tx.execute(
                "INSERT INTO store_meta (name, value) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                &[&META_UMS_ID, &ums_id.to_string()],
            )
            .await
            .map_err(|e| self.db(e))?;
        }
        if let Some(main) = &dump.main {
            tx.execute(
                "INSERT INTO main_ums_id (fingerprint, certificate_pem, sealed) VALUES ($1, $2, $3)",
                &[&main.fingerprint.to_string(), &main.certificate_pem, &main.sealed],
            )
            .await
            .map_err(|e| self.db(e))?;
        }
        let mut entry = AuditEntry::new("database.copy", &Actor::cli());
        entry.detail = format!(
            "{} keys, {} devices, {} audit lines, {} accounts, {} tokens copied in",
            dump.keys.len(),
            dump.devices.len(),
            dump.audit.len(),
            dump.accounts.len(),
            dump.tokens.len()
        );
        audit_in(&tx, &entry).await.map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))
    }
}
