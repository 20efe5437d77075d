//! The row operations of a PostgreSQL transaction ([`Tx`]) for the flows of `apply.rs`.

use std::collections::HashMap;

use onboard_protocol::admin::{KeyId, KeyStatus};
use onboard_protocol::{Folder, UnitId};
use time::OffsetDateTime;

use super::{PostgresStore, audit_in, count};
use crate::ca::IssuedCertificate;
use crate::claim::Limits;
use crate::store::error::StoreError;
use crate::store::query::DEVICE_COLUMNS;
use crate::store::rows::{AuditEntry, DeviceRecord};
use crate::store::tx::{KeyChange, KeyForChange, KeyForClaim, KeyInsert, Seen, Tx};
use crate::vault::LookupDigest;

/// The columns of a key's terms, in the order [`PgTx::terms`] reads them.
const TERMS: &str = "not_before, expires_at, usage_limit, folder";

/// A count (a usage limit) as stored: PostgreSQL's BIGINT is signed.
fn stored_count(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// The row operations of an open PostgreSQL transaction for the flows of `apply.rs`: every row
/// read for a change is locked (`FOR UPDATE`) until the commit, unless the transaction only reads.
pub(super) struct PgTx<'t, 'c> {
    pub(super) tx: &'t deadpool_postgres::Transaction<'c>,
    pub(super) store: &'t PostgresStore,
    /// Whether rows read for a change are locked: false in a read-only transaction (a check of
    /// keys), where `FOR UPDATE` is refused and no change follows.
    pub(super) locks: bool,
}

impl PgTx<'_, '_> {
    /// `sql`, a read of a row for a change ending in ` FOR UPDATE`, as this transaction runs it:
    /// without the lock when it only reads.
    fn for_change<'s>(&self, sql: &'s str) -> &'s str {
        if self.locks {
            sql
        } else {
            sql.strip_suffix(" FOR UPDATE").unwrap_or(sql)
        }
    }
}

impl PgTx<'_, '_> {
    /// A key's terms, from the four columns of [`TERMS`] starting at `first`.
    fn terms(
        &self,
        row: &tokio_postgres::Row,
        first: usize,
    ) -> Result<(Limits, Option<Folder>), StoreError> {
        let store = self.store;
        let time = |seconds: Option<i64>| seconds.map(|at| store.time(at)).transpose();
        let limits = Limits {
            not_before: time(row.get(first))?,
            expires_at: time(row.get(first + 1))?,
            usage_limit: row.get::<_, Option<i64>>(first + 2).map(count),
        };
        Ok((limits, store.folder(row.get(first + 3))?))
    }
}

impl Tx for PgTx<'_, '_> {
    fn corrupt(&self, reason: String) -> StoreError {
        self.store.corrupt(reason)
    }

    async fn key_for_claim(
        &mut self,
        lookup: &LookupDigest,
    ) -> Result<Option<KeyForClaim>, StoreError> {
        let store = self.store;
        let sql = format!(
            "SELECT id, kind, unit_id, active, usage_count, {TERMS} FROM keys
             WHERE lookup = $1 FOR UPDATE"
        );
        let row = self
            .tx
            .query_opt(self.for_change(&sql), &[&lookup.to_vec()])
            .await
            .map_err(|e| store.db(e))?;
        row.map(|row| {
            let id: KeyId = row.get(0);
            let (limits, folder) = self.terms(&row, 5)?;
            Ok(KeyForClaim {
                id,
                kind: store.kind(id, row.get(1))?,
                bound_to: row
                    .get::<_, Option<String>>(2)
                    .map(|text| text.parse::<UnitId>())
                    .transpose()
                    .map_err(|_| store.corrupt(format!("key {id} with a malformed unit ID")))?,
                active: row.get(3),
                usage_count: count(row.get(4)),
                limits,
                folder,
            })
        })
        .transpose()
    }

    async fn device_for_update(
        &mut self,
        unit_id: &UnitId,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        let store = self.store;
        self.tx
            .query_opt(
                self.for_change(&format!(
                    "SELECT {DEVICE_COLUMNS}, online_server FROM devices WHERE unit_id = $1 FOR UPDATE"
                )),
                &[&unit_id.as_str()],
            )
            .await
            .map_err(|e| store.db(e))?
            .map(|row| store.device_from_row(&row))
            .transpose()
    }

    async fn consume_key(
        &mut self,
        id: KeyId,
        status: KeyStatus,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let consumed = self
            .tx
            .execute(
                // The guard repeats claim::decide (second line of defence): active, unused
                // unless mass, within its lifetime, below its usage limit.
                "UPDATE keys SET usage_count = usage_count + 1, usage_date = $1, status = $2
                 WHERE id = $3 AND active AND (kind = 'mass' OR usage_count = 0)
                   AND (expires_at IS NULL OR expires_at > $1)
                   AND (not_before IS NULL OR not_before <= $1)
                   AND (usage_limit IS NULL OR usage_count < usage_limit)",
                &[&at.unix_timestamp(), &status.as_str(), &id],
            )
            .await
            .map_err(|e| self.store.db(e))?;
        Ok(consumed == 1)
    }

    async fn put_device(&mut self, device: &DeviceRecord) -> Result<(), StoreError> {
        self.tx
            .execute(
                &format!(
                    "INSERT INTO devices ({DEVICE_COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL, $10)
                     ON CONFLICT (unit_id) DO UPDATE SET public_key = excluded.public_key,
                       certificate = excluded.certificate, serial = excluded.serial,
                       not_after = excluded.not_after, key_id = excluded.key_id,
                       key_kind = excluded.key_kind, enrolled_at = excluded.enrolled_at,
                       last_seen = excluded.last_seen, inventory = NULL, previous_serial = NULL,
                       folder = excluded.folder"
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
                    &device.folder.as_ref().map(Folder::as_str),
                ],
            )
            .await
            .map(drop)
            .map_err(|e| self.store.db(e))
    }

    async fn replace_certificate(
        &mut self,
        unit_id: &UnitId,
        public_key: &[u8],
        issued: &IssuedCertificate,
        previous_serial: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.tx
            .execute(
                "UPDATE devices SET public_key = $1, certificate = $2, serial = $3, not_after = $4,
                   last_seen = $5, previous_serial = $6
                 WHERE unit_id = $7",
                &[
                    &public_key,
                    &issued.der,
                    &issued.serial,
                    &issued.not_after.unix_timestamp(),
                    &at.unix_timestamp(),
                    &previous_serial,
                    &unit_id.as_str(),
                ],
            )
            .await
            .map(drop)
            .map_err(|e| self.store.db(e))
    }

    async fn seen(&mut self, unit_id: &UnitId, seen: Seen<'_>) -> Result<(), StoreError> {
        self.tx
            .execute(
                "UPDATE devices SET last_seen = $1, inventory = coalesce($2, inventory),
                   previous_serial = CASE WHEN $3 THEN NULL ELSE previous_serial END,
                   online_server = coalesce($5, online_server),
                   online_session = coalesce($6, online_session)
                 WHERE unit_id = $4",
                &[
                    &seen.at.unix_timestamp(),
                    &seen.inventory,
                    &seen.forget_previous,
                    &unit_id.as_str(),
                    &seen.session.map(|session| session.server),
                    &seen.session.map(|session| session.id),
                ],
            )
            .await
            .map(drop)
            .map_err(|e| self.store.db(e))
    }

    async fn insert_keys(
        &mut self,
        keys: &[KeyInsert],
        created_at: OffsetDateTime,
    ) -> Result<Vec<Option<KeyId>>, StoreError> {
        let store = self.store;
        let statement = self
            .tx
            .prepare_cached(
                "INSERT INTO keys (kind, lookup, sealed, unit_id, comment, created_at, status,
                   not_before, expires_at, usage_limit, folder)
                 SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::text[], $5::text[],
                                      $6::bigint[], $7::text[], $8::bigint[], $9::bigint[],
                                      $10::bigint[], $11::text[])
                 ON CONFLICT (lookup) DO NOTHING RETURNING id, lookup",
            )
            .await
            .map_err(|e| store.db(e))?;
        let column =
            |f: &dyn Fn(&KeyInsert) -> String| -> Vec<String> { keys.iter().map(f).collect() };
        let kinds = column(&|insert| insert.key.kind.as_str().to_owned());
        let lookups: Vec<Vec<u8>> = keys
            .iter()
            .map(|insert| insert.key.lookup.to_vec())
            .collect();
        let sealed: Vec<&[u8]> = keys
            .iter()
            .map(|insert| insert.key.sealed.as_slice())
            .collect();
        let units: Vec<Option<String>> = keys
            .iter()
            .map(|insert| insert.key.unit_id.as_ref().map(ToString::to_string))
            .collect();
        let comments = column(&|insert| insert.key.comment.clone());
        let times = vec![created_at.unix_timestamp(); keys.len()];
        let statuses = column(&|insert| insert.status.as_str().to_owned());
        let time = |at: &dyn Fn(&Limits) -> Option<OffsetDateTime>| -> Vec<Option<i64>> {
            keys.iter()
                .map(|insert| at(&insert.key.limits).map(OffsetDateTime::unix_timestamp))
                .collect()
        };
        let not_before = time(&|limits| limits.not_before);
        let expires_at = time(&|limits| limits.expires_at);
        let usage_limits: Vec<Option<i64>> = keys
            .iter()
            .map(|insert| insert.key.limits.usage_limit.map(stored_count))
            .collect();
        let folders: Vec<Option<&str>> = keys
            .iter()
            .map(|insert| insert.key.folder.as_ref().map(Folder::as_str))
            .collect();
        let rows = self
            .tx
            .query(
                &statement,
                &[
                    &kinds,
                    &lookups,
                    &sealed,
                    &units,
                    &comments,
                    &times,
                    &statuses,
                    &not_before,
                    &expires_at,
                    &usage_limits,
                    &folders,
                ],
            )
            .await
            .map_err(|e| store.db(e))?;
        let mut inserted: HashMap<Vec<u8>, KeyId> = rows
            .iter()
            .map(|row| (row.get::<_, Vec<u8>>(1), row.get::<_, KeyId>(0)))
            .collect();
        // A digest twice in `keys`: the first has the row, the second clashed with it.
        Ok(lookups
            .iter()
            .map(|lookup| inserted.remove(lookup))
            .collect())
    }

    async fn audit(&mut self, entry: &AuditEntry) -> Result<(), StoreError> {
        audit_in(self.tx, entry).await.map_err(|e| self.store.db(e))
    }

    async fn delete_device(
        &mut self,
        unit_id: &UnitId,
    ) -> Result<Option<Option<String>>, StoreError> {
        Ok(self
            .tx
            .query_opt(
                "DELETE FROM devices WHERE unit_id = $1 RETURNING online_server",
                &[&unit_id.as_str()],
            )
            .await
            .map_err(|e| self.store.db(e))?
            .map(|row| row.get(0)))
    }

    async fn queue_command(
        &mut self,
        server: &str,
        unit_id: &UnitId,
        command: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.tx
            .execute(
                "INSERT INTO device_commands (server, unit_id, command, queued_at)
                 VALUES ($1, $2, $3, $4)",
                &[&server, &unit_id.as_str(), &command, &at.unix_timestamp()],
            )
            .await
            .map(drop)
            .map_err(|e| self.store.db(e))
    }

    async fn keys_for_change(&mut self, ids: &[KeyId]) -> Result<Vec<KeyForChange>, StoreError> {
        let store = self.store;
        let rows = self
            .tx
            .query(
                &format!(
                    "SELECT id, kind, usage_count, {TERMS} FROM keys WHERE id = ANY($1)
                     ORDER BY id FOR UPDATE"
                ),
                &[&ids],
            )
            .await
            .map_err(|e| store.db(e))?;
        rows.iter()
            .map(|row| {
                let id: KeyId = row.get(0);
                let (limits, folder) = self.terms(row, 3)?;
                Ok(KeyForChange {
                    id,
                    kind: store.kind(id, row.get(1))?,
                    usage_count: count(row.get(2)),
                    limits,
                    folder,
                })
            })
            .collect()
    }

    async fn change_key(&mut self, id: KeyId, change: KeyChange<'_>) -> Result<(), StoreError> {
        match change {
            KeyChange::Comment(comment) => {
                self.tx
                    .execute(
                        "UPDATE keys SET comment = $1 WHERE id = $2",
                        &[&comment, &id],
                    )
                    .await
            }
            KeyChange::Active { active, status } => {
                self.tx
                    .execute(
                        "UPDATE keys SET active = $1, status = $2 WHERE id = $3",
                        &[&active, &status.as_str(), &id],
                    )
                    .await
            }
            KeyChange::Terms { limits, folder } => {
                self.tx
                    .execute(
                        "UPDATE keys SET not_before = $1, expires_at = $2, usage_limit = $3,
                           folder = $4 WHERE id = $5",
                        &[
                            &limits.not_before.map(OffsetDateTime::unix_timestamp),
                            &limits.expires_at.map(OffsetDateTime::unix_timestamp),
                            &limits.usage_limit.map(stored_count),
                            &folder.map(Folder::as_str),
                            &id,
                        ],
                    )
                    .await
            }
            KeyChange::Delete => {
                self.tx
                    .execute("DELETE FROM keys WHERE id = $1", &[&id])
                    .await
            }
        }
        .map(drop)
        .map_err(|e| self.store.db(e))
    }
}
