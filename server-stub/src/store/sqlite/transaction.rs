//! The row operations of a SQLite transaction ([`Tx`]) for the flows of `apply.rs`.

use onboard_protocol::admin::{KeyId, KeyStatus};
use onboard_protocol::{Folder, UnitId};
use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;

use super::{DEVICE_BY_UNIT_ID, audit_in, backend_error, count, device_from_row, stored_count};
use crate::ca::IssuedCertificate;
use crate::claim::Limits;
use crate::store::error::StoreError;
use crate::store::query::DEVICE_COLUMNS;
use crate::store::rows::{AuditEntry, DeviceRecord};
use crate::store::tx::{KeyChange, KeyForChange, KeyForClaim, KeyInsert, Seen, Tx};
use crate::vault::LookupDigest;

/// The row operations of an open SQLite transaction (or savepoint) for the flows of `apply.rs`.
/// SQLite locks the whole database for a write transaction (IMMEDIATE), so no row is locked
/// apart; every statement is prepared once per connection (parsing SQL was a visible share of an
/// enrollment's CPU).
pub(super) struct SqliteTx<'a> {
    connection: &'a Connection,
    shown: &'a str,
}

/// The columns of a key's terms, in the order [`SqliteTx::terms`] reads them.
const TERMS: &str = "not_before, expires_at, usage_limit, folder";

impl<'a> SqliteTx<'a> {
    /// The row operations of the transaction open on `connection`, on the database `shown`.
    pub(super) fn new(connection: &'a Connection, shown: &'a str) -> Self {
        Self { connection, shown }
    }

    fn db(&self, source: rusqlite::Error) -> StoreError {
        backend_error(self.shown, source)
    }

    /// A key's terms, from the four columns of [`TERMS`] starting at `first`.
    fn terms(
        &self,
        id: KeyId,
        row: &rusqlite::Row<'_>,
        first: usize,
    ) -> Result<(Limits, Option<Folder>), StoreError> {
        let get = |e| self.db(e);
        let time = |seconds: Option<i64>| {
            seconds
                .map(OffsetDateTime::from_unix_timestamp)
                .transpose()
                .map_err(|_| self.corrupt(format!("key {id} with a bad time")))
        };
        let limits = Limits {
            not_before: time(row.get(first).map_err(get)?)?,
            expires_at: time(row.get(first + 1).map_err(get)?)?,
            usage_limit: row
                .get::<_, Option<i64>>(first + 2)
                .map_err(get)?
                .map(count),
        };
        let folder = row
            .get::<_, Option<String>>(first + 3)
            .map_err(get)?
            .map(|text| text.parse::<Folder>())
            .transpose()
            .map_err(|_| self.corrupt(format!("key {id} with a malformed folder")))?;
        Ok((limits, folder))
    }

    fn execute(&self, sql: &str, values: impl rusqlite::Params) -> Result<usize, StoreError> {
        self.connection
            .prepare_cached(sql)
            .and_then(|mut statement| statement.execute(values))
            .map_err(|e| self.db(e))
    }
}

impl Tx for SqliteTx<'_> {
    fn corrupt(&self, reason: String) -> StoreError {
        StoreError::Corrupt {
            database: self.shown.to_owned(),
            reason,
        }
    }

    async fn key_for_claim(
        &mut self,
        lookup: &LookupDigest,
    ) -> Result<Option<KeyForClaim>, StoreError> {
        let mut select = self
            .connection
            .prepare_cached(&format!(
                "SELECT id, kind, unit_id, active, usage_count, {TERMS} FROM keys WHERE lookup = ?1"
            ))
            .map_err(|e| self.db(e))?;
        let mut rows = select.query([&lookup[..]]).map_err(|e| self.db(e))?;
        let Some(row) = rows.next().map_err(|e| self.db(e))? else {
            return Ok(None);
        };
        let get = |e| self.db(e);
        let id: KeyId = row.get(0).map_err(get)?;
        let kind: String = row.get(1).map_err(get)?;
        let bound_to: Option<String> = row.get(2).map_err(get)?;
        let (limits, folder) = self.terms(id, row, 5)?;
        Ok(Some(KeyForClaim {
            id,
            kind: kind
                .parse()
                .map_err(|_| self.corrupt(format!("key {id} with an unknown kind")))?,
            bound_to: bound_to
                .map(|text| text.parse::<UnitId>())
                .transpose()
                .map_err(|_| self.corrupt(format!("key {id} with a malformed unit ID")))?,
            active: row.get(3).map_err(get)?,
            usage_count: count(row.get(4).map_err(get)?),
            limits,
            folder,
        }))
    }

    async fn device_for_update(
        &mut self,
        unit_id: &UnitId,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        self.connection
            .prepare_cached(DEVICE_BY_UNIT_ID)
            .and_then(|mut select| {
                select
                    .query_row([unit_id.as_str()], device_from_row)
                    .optional()
            })
            .map_err(|e| self.db(e))
    }

    async fn consume_key(
        &mut self,
        id: KeyId,
        status: KeyStatus,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        // The guard repeats claim::decide (second line of defence): active, unused unless mass,
        // within its lifetime, below its usage limit.
        let consumed = self.execute(
            "UPDATE keys SET usage_count = usage_count + 1, usage_date = ?1, status = ?2
             WHERE id = ?3 AND active = 1 AND (kind = 'mass' OR usage_count = 0)
               AND (expires_at IS NULL OR expires_at > ?1)
               AND (not_before IS NULL OR not_before <= ?1)
               AND (usage_limit IS NULL OR usage_count < usage_limit)",
            params![at.unix_timestamp(), status.as_str(), id],
        )?;
        Ok(consumed == 1)
    }

    async fn put_device(&mut self, device: &DeviceRecord) -> Result<(), StoreError> {
        self.execute(
            &format!(
                "INSERT INTO devices ({DEVICE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, NULL, ?10)
                 ON CONFLICT (unit_id) DO UPDATE SET public_key = excluded.public_key,
                   certificate = excluded.certificate, serial = excluded.serial,
                   not_after = excluded.not_after, key_id = excluded.key_id,
                   key_kind = excluded.key_kind, enrolled_at = excluded.enrolled_at,
                   last_seen = excluded.last_seen, inventory = NULL, previous_serial = NULL,
                   folder = excluded.folder"
            ),
            params![
                device.unit_id.as_str(),
                device.public_key,
                device.certificate,
                device.serial,
                device.not_after.unix_timestamp(),
                device.key_id,
                device.key_kind.as_str(),
                device.enrolled_at.unix_timestamp(),
                device.last_seen.unix_timestamp(),
                device.folder.as_ref().map(Folder::as_str),
            ],
        )
        .map(drop)
    }

    async fn replace_certificate(
        &mut self,
        unit_id: &UnitId,
        public_key: &[u8],
        issued: &IssuedCertificate,
        previous_serial: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.execute(
            "UPDATE devices SET public_key = ?1, certificate = ?2, serial = ?3, not_after = ?4,
               last_seen = ?5, previous_serial = ?6
             WHERE unit_id = ?7",
            params![
                public_key,
                issued.der,
                issued.serial,
                issued.not_after.unix_timestamp(),
                at.unix_timestamp(),
                previous_serial,
                unit_id.as_str()
            ],
        )
        .map(drop)
    }

    async fn seen(&mut self, unit_id: &UnitId, seen: Seen<'_>) -> Result<(), StoreError> {
        self.execute(
            "UPDATE devices SET last_seen = ?1, inventory = coalesce(?2, inventory),
               previous_serial = CASE WHEN ?3 THEN NULL ELSE previous_serial END,
               online_server = coalesce(?5, online_server),
               online_session = coalesce(?6, online_session)
             WHERE unit_id = ?4",
            params![
                seen.at.unix_timestamp(),
                seen.inventory,
                seen.forget_previous,
                unit_id.as_str(),
                seen.session.map(|session| session.server),
                seen.session.map(|session| session.id)
            ],
        )
        .map(drop)
    }

    async fn insert_keys(
        &mut self,
        keys: &[KeyInsert],
        created_at: OffsetDateTime,
    ) -> Result<Vec<Option<KeyId>>, StoreError> {
        let mut insert = self
            .connection
            .prepare_cached(
                "INSERT INTO keys (kind, lookup, sealed, unit_id, comment, created_at, status,
                   not_before, expires_at, usage_limit, folder)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (lookup) DO NOTHING",
            )
            .map_err(|e| self.db(e))?;
        keys.iter()
            .map(|KeyInsert { key, status }| {
                let inserted = insert
                    .execute(params![
                        key.kind.as_str(),
                        &key.lookup[..],
                        key.sealed,
                        key.unit_id.as_ref().map(UnitId::as_str),
                        key.comment,
                        created_at.unix_timestamp(),
                        status.as_str(),
                        key.limits.not_before.map(OffsetDateTime::unix_timestamp),
                        key.limits.expires_at.map(OffsetDateTime::unix_timestamp),
                        key.limits.usage_limit.map(stored_count),
                        key.folder.as_ref().map(Folder::as_str),
                    ])
                    .map_err(|e| self.db(e))?;
                Ok((inserted == 1).then(|| self.connection.last_insert_rowid()))
            })
            .collect()
    }

    async fn audit(&mut self, entry: &AuditEntry) -> Result<(), StoreError> {
        audit_in(self.connection, entry).map_err(|e| self.db(e))
    }

    async fn delete_device(
        &mut self,
        unit_id: &UnitId,
    ) -> Result<Option<Option<String>>, StoreError> {
        self.connection
            .prepare_cached("DELETE FROM devices WHERE unit_id = ?1 RETURNING online_server")
            .and_then(|mut delete| {
                delete
                    .query_row([unit_id.as_str()], |row| row.get(0))
                    .optional()
            })
            .map_err(|e| self.db(e))
    }

    async fn queue_command(
        &mut self,
        server: &str,
        unit_id: &UnitId,
        command: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO device_commands (server, unit_id, command, queued_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![server, unit_id.as_str(), command, at.unix_timestamp()],
        )
        .map(drop)
    }

    async fn keys_for_change(&mut self, ids: &[KeyId]) -> Result<Vec<KeyForChange>, StoreError> {
        let mut select = self
            .connection
            .prepare_cached(&format!(
                "SELECT kind, usage_count, {TERMS} FROM keys WHERE id = ?1"
            ))
            .map_err(|e| self.db(e))?;
        let mut found = Vec::with_capacity(ids.len());
        for &id in ids {
            let mut rows = select.query([id]).map_err(|e| self.db(e))?;
            if let Some(row) = rows.next().map_err(|e| self.db(e))? {
                let kind: String = row.get(0).map_err(|e| self.db(e))?;
                let usage_count: i64 = row.get(1).map_err(|e| self.db(e))?;
                let (limits, folder) = self.terms(id, row, 2)?;
                found.push(KeyForChange {
                    id,
                    kind: kind
                        .parse()
                        .map_err(|_| self.corrupt(format!("key {id} with an unknown kind")))?,
                    usage_count: count(usage_count),
                    limits,
                    folder,
                });
            }
        }
        Ok(found)
    }

    async fn change_key(&mut self, id: KeyId, change: KeyChange<'_>) -> Result<(), StoreError> {
        match change {
            KeyChange::Comment(comment) => self.execute(
                "UPDATE keys SET comment = ?1 WHERE id = ?2",
                params![comment, id],
            ),
            KeyChange::Active { active, status } => self.execute(
                "UPDATE keys SET active = ?1, status = ?2 WHERE id = ?3",
                params![active, status.as_str(), id],
            ),
            KeyChange::Terms { limits, folder } => self.execute(
                "UPDATE keys SET not_before = ?1, expires_at = ?2, usage_limit = ?3, folder = ?4
                 WHERE id = ?5",
                params![
                    limits.not_before.map(OffsetDateTime::unix_timestamp),
                    limits.expires_at.map(OffsetDateTime::unix_timestamp),
                    limits.usage_limit.map(stored_count),
                    folder.map(Folder::as_str),
                    id
                ],
            ),
            KeyChange::Delete => self.execute("DELETE FROM keys WHERE id = ?1", [id]),
        }
        .map(drop)
    }
}
