//! The SQLite store, the embedded default: one file in the data directory, WAL mode so the CLI and
//! a running server can share it, numbered migrations applied at open.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use onboard_protocol::{KeyKind, ProblemCode, UnitId};
use rusqlite::{
    Connection, OptionalExtension, Transaction, TransactionBehavior, params, params_from_iter,
};
use time::OffsetDateTime;

use super::{
    AuditEntry, DeviceRecord, EnrollAttempt, EnrollOutcome, IssueCertificate, IssueOnce, KeyFilter,
    KeyId, MakeKey, Progress, Store, StoreError, StoredKey,
};

/// Migrations, applied in order; a database records the highest it has.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE keys (
        id          INTEGER PRIMARY KEY,
        kind        TEXT    NOT NULL CHECK (kind IN ('one-time', 'device-bound', 'mass')),
        lookup      BLOB    NOT NULL UNIQUE CHECK (length(lookup) = 32),
        sealed      BLOB    NOT NULL,
        unit_id     TEXT    CHECK ((kind = 'device-bound') = (unit_id IS NOT NULL)),
        active      INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
        usage_count INTEGER NOT NULL DEFAULT 0 CHECK (usage_count >= 0),
        usage_date  INTEGER,
        comment     TEXT    NOT NULL DEFAULT '',
        created_at  INTEGER NOT NULL
     );
     CREATE INDEX keys_unit_id ON keys (unit_id) WHERE unit_id IS NOT NULL;
     CREATE INDEX keys_kind ON keys (kind);",
    ),
    (
        2,
        "CREATE TABLE devices (
        unit_id     TEXT    PRIMARY KEY,
        public_key  BLOB    NOT NULL,
        certificate BLOB    NOT NULL,
        serial      TEXT    NOT NULL UNIQUE,
        not_after   INTEGER NOT NULL,
        key_id      INTEGER REFERENCES keys (id) ON DELETE SET NULL,
        key_kind    TEXT    NOT NULL,
        enrolled_at INTEGER NOT NULL,
        last_seen   INTEGER NOT NULL,
        inventory   TEXT
     );
     CREATE TABLE audit (
        id       INTEGER PRIMARY KEY,
        at       INTEGER NOT NULL,
        event    TEXT    NOT NULL,
        unit_id  TEXT,
        key_id   INTEGER,
        source   TEXT    NOT NULL,
        outcome  TEXT    NOT NULL,
        detail   TEXT    NOT NULL DEFAULT ''
     );
     CREATE INDEX audit_at ON audit (at);",
    ),
];

/// The status as SQL, matching [`StoredKey::status`].
const STATUS_SQL: &str = "CASE WHEN kind <> 'mass' AND usage_count > 0 THEN 'used' \
                          WHEN active = 1 THEN 'active' ELSE 'inactive' END";

/// How many times a generated value is redrawn on a clash.
const GENERATE_ATTEMPTS: usize = 16;

/// A SQLite database file.
pub struct SqliteStore {
    path: PathBuf,
    connection: Mutex<Connection>,
    /// The enrollment writer thread, started at the first enrollment.
    enroller: std::sync::OnceLock<std::sync::mpsc::Sender<EnrollJob>>,
}

/// One enrollment attempt waiting for the writer thread.
struct EnrollJob {
    attempt: EnrollAttempt,
    issue: IssueOnce,
    reply: std::sync::mpsc::SyncSender<Result<EnrollOutcome, StoreError>>,
}

/// The most attempts decided in one transaction.
const GROUP_COMMIT_MAX: usize = 128;

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SqliteStore({})", self.path.display())
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let connection = connect(path)?;
        restrict_permissions(path);
        let store = Self {
            path: path.to_owned(),
            connection: Mutex::new(connection),
            enroller: std::sync::OnceLock::new(),
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut connection = self.lock();
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.db(e))?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
            .map_err(|e| self.db(e))?;
        let current: i64 = tx
            .query_row(
                "SELECT coalesce(max(version), 0) FROM schema_migrations",
                [],
                |row| row.get(0),
            )
            .map_err(|e| self.db(e))?;
        let known = MIGRATIONS.last().map_or(0, |(version, _)| *version);
        if current > known {
            return Err(StoreError::Corrupt {
                path: self.shown(),
                reason: format!(
                    "schema version {current} is newer than this ums-stub knows ({known}); upgrade ums-stub"
                ),
            });
        }
        for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > current) {
            tx.execute_batch(sql).map_err(|e| self.db(e))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                params![version, now()],
            )
            .map_err(|e| self.db(e))?;
        }
        tx.commit().map_err(|e| self.db(e))
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.lock()
            .query_row("SELECT max(version) FROM schema_migrations", [], |row| {
                row.get(0)
            })
            .map_err(|e| self.db(e))
    }

    /// Runs SQLite's integrity check; `Ok(())` when it reports "ok".
    pub fn integrity_check(&self) -> Result<(), StoreError> {
        let report: String = self
            .lock()
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .map_err(|e| self.db(e))?;
        if report == "ok" {
            Ok(())
        } else {
            Err(StoreError::Corrupt {
                path: self.shown(),
                reason: report,
            })
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable: SQLite rolls back.
        self.connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn shown(&self) -> String {
        self.path.display().to_string()
    }

    fn db(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Database {
            path: self.shown(),
            source,
        }
    }

    /// Runs `sql` (with `?1` the key ID) for each of `ids` in one transaction, and audits it as
    /// `event`: all of them, or none when one ID is unknown.
    fn change_each(&self, ids: &[KeyId], sql: &str, event: &str) -> Result<(), StoreError> {
        let mut connection = self.lock();
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.db(e))?;
        self.require_existing(&tx, ids)?;
        {
            let mut statement = tx.prepare_cached(sql).map_err(|e| self.db(e))?;
            for id in ids {
                statement.execute([id]).map_err(|e| self.db(e))?;
            }
        }
        audit_in(&tx, &cli_audit(event, ids, id_list(ids))).map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))
    }

    /// Fails with the IDs among `ids` that do not exist.
    fn require_existing(&self, tx: &Transaction<'_>, ids: &[KeyId]) -> Result<(), StoreError> {
        let mut statement = tx
            .prepare_cached("SELECT 1 FROM keys WHERE id = ?1")
            .map_err(|e| self.db(e))?;
        let mut missing = Vec::new();
        for id in ids {
            if statement
                .query_row([id], |_| Ok(()))
                .optional()
                .map_err(|e| self.db(e))?
                .is_none()
            {
                missing.push(*id);
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(StoreError::NotFound(missing))
        }
    }
}

/// Opens a connection with the pragmas every connection of this store uses.
fn connect(path: &Path) -> Result<Connection, StoreError> {
    let shown = path.display().to_string();
    let db = |source| StoreError::Database {
        path: shown.clone(),
        source,
    };
    let connection = Connection::open(path).map_err(db)?;
    // Another process (the server, or a second CLI) may hold a write lock for a moment.
    connection
        .busy_timeout(Duration::from_secs(30))
        .map_err(db)?;
    let mode: String = connection
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(db)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt {
            path: shown,
            reason: format!("cannot switch to WAL mode (got {mode})"),
        });
    }
    // FULL: a committed enrollment survives a power cut, not only a killed process. The cost, one
    // fsync per transaction, is shared by concurrent enrollments through group commit.
    connection
        .execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .map_err(db)?;
    Ok(connection)
}

/// The enrollment writer: takes the attempts waiting, decides them all in one transaction (each in
/// a savepoint, so one failure rolls back only itself), commits once, then answers each.
fn enroll_writer(path: PathBuf, jobs: std::sync::mpsc::Receiver<EnrollJob>) {
    let shown = path.display().to_string();
    let mut connection: Option<Connection> = None;
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < GROUP_COMMIT_MAX {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // (Re)open the connection for each batch until it works: a passing fault must not leave
        // enrollments failing until a restart.
        if connection.is_none() {
            match connect(&path) {
                Ok(opened) => connection = Some(opened),
                Err(error) => {
                    tracing::error!("enrollment writer cannot open the database: {error}")
                }
            }
        }
        let Some(connection) = connection.as_mut() else {
            for job in batch {
                let _ = job.reply.send(Err(StoreError::Corrupt {
                    path: shown.clone(),
                    reason: "the enrollment writer could not open the database".into(),
                }));
            }
            continue;
        };
        let db = |source| StoreError::Database {
            path: shown.clone(),
            source,
        };
        let mut outcomes: Vec<Result<EnrollOutcome, StoreError>> = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        let committed = (|| -> Result<(), StoreError> {
            let mut tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            for job in batch {
                replies.push(job.reply);
                let mut savepoint = tx.savepoint().map_err(db)?;
                let outcome = decide(&mut savepoint, &job.attempt, job.issue, &shown);
                if outcome.is_ok() {
                    savepoint.commit().map_err(db)?;
                } else {
                    savepoint.rollback().map_err(db)?;
                    drop(savepoint);
                }
                outcomes.push(outcome);
            }
            tx.commit().map_err(db)
        })();
        match committed {
            Ok(()) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(error) => {
                tracing::error!("enrollment transaction failed: {error}");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Corrupt {
                        path: shown.clone(),
                        reason: format!("the enrollment transaction failed: {error}"),
                    }));
                }
            }
        }
    }
}

/// Decides one attempt inside `tx`: refusals are audited, a good key is consumed and the device
/// recorded with a fresh certificate.
fn decide(
    tx: &mut rusqlite::Savepoint<'_>,
    attempt: &EnrollAttempt,
    issue: IssueOnce,
    shown: &str,
) -> Result<EnrollOutcome, StoreError> {
    let db = |source| StoreError::Database {
        path: shown.to_owned(),
        source,
    };
    let now = OffsetDateTime::now_utc();
    let mut audit = AuditEntry {
        at: now,
        event: "enroll".to_owned(),
        unit_id: Some(attempt.unit_id.to_string()),
        key_id: None,
        source: attempt.source.clone(),
        outcome: "ok".to_owned(),
        detail: String::new(),
    };
    let key: Option<(KeyId, String, Option<String>, bool, i64)> = tx
        .prepare_cached("SELECT id, kind, unit_id, active, usage_count FROM keys WHERE lookup = ?1")
        .map_err(db)?
        .query_row([&attempt.lookup[..]], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })
        .optional()
        .map_err(db)?;
    let device = tx
        .prepare_cached(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE unit_id = ?1"
        ))
        .map_err(db)?
        .query_row([attempt.unit_id.as_str()], device_from_row)
        .optional()
        .map_err(db)?;
    let refuse = |tx: &rusqlite::Savepoint<'_>, mut audit: AuditEntry, code: ProblemCode| {
        audit.outcome = code.as_str().to_owned();
        audit_in(tx, &audit).map_err(db)?;
        Ok(EnrollOutcome::Refused(code))
    };
    let Some((key_id, kind, bound_to, active, usage_count)) = key else {
        return refuse(tx, audit, ProblemCode::KeyUnknown);
    };
    audit.key_id = Some(key_id);
    let kind = kind_from_sql(&kind).ok_or_else(|| StoreError::Corrupt {
        path: shown.to_owned(),
        reason: format!("key {key_id} has an unknown kind"),
    })?;
    // A device already enrolled with this key pair retrying (its answer was lost) gets its stored
    // certificate and nothing is counted again. With the key it enrolled with (or one deleted
    // since) that is all; with another key, that key must pass the checks below first.
    let mut repeat = None;
    if let Some(device) = device {
        if device.public_key != attempt.public_key {
            return refuse(tx, audit, ProblemCode::UnitIdConflict);
        }
        if device.key_id.is_none_or(|id| id == key_id) {
            audit.detail = format!("repeated answer, certificate {}", device.serial);
            audit_in(tx, &audit).map_err(db)?;
            return Ok(EnrollOutcome::Issued {
                device,
                repeated: true,
            });
        }
        repeat = Some(device);
    }
    if !active {
        return refuse(tx, audit, ProblemCode::KeyInactive);
    }
    if kind == KeyKind::DeviceBound && bound_to.as_deref() != Some(attempt.unit_id.as_str()) {
        return refuse(tx, audit, ProblemCode::KeyBoundToOtherDevice);
    }
    if kind != KeyKind::MassDeployment && usage_count > 0 {
        return refuse(tx, audit, ProblemCode::KeyUsed);
    }
    if let Some(device) = repeat {
        audit.detail = format!("repeated answer, certificate {}", device.serial);
        audit_in(tx, &audit).map_err(db)?;
        return Ok(EnrollOutcome::Issued {
            device,
            repeated: true,
        });
    }
    let issued = issue().map_err(StoreError::Issue)?;
    // The guard the database enforces: a one-time key goes from unused to used once.
    let consumed = tx
        .execute(
            "UPDATE keys SET usage_count = usage_count + 1, usage_date = ?1
             WHERE id = ?2 AND active = 1 AND (kind = 'mass' OR usage_count = 0)",
            params![now.unix_timestamp(), key_id],
        )
        .map_err(db)?;
    if consumed != 1 {
        return refuse(tx, audit, ProblemCode::KeyUsed);
    }
    let device = DeviceRecord {
        unit_id: attempt.unit_id.clone(),
        public_key: attempt.public_key.clone(),
        certificate: issued.der,
        serial: issued.serial,
        not_after: issued.not_after,
        key_id: Some(key_id),
        key_kind: kind,
        enrolled_at: now,
        last_seen: now,
        inventory: None,
    };
    tx.execute(
        &format!("INSERT INTO devices ({DEVICE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
        params![
            device.unit_id.as_str(),
            device.public_key,
            device.certificate,
            device.serial,
            device.not_after.unix_timestamp(),
            key_id,
            kind.as_str(),
            now.unix_timestamp(),
            now.unix_timestamp(),
            device.inventory
        ],
    )
    .map_err(db)?;
    audit.detail = format!("certificate {}", device.serial);
    audit_in(tx, &audit).map_err(db)?;
    Ok(EnrollOutcome::Issued {
        device,
        repeated: false,
    })
}

/// Appends an audit line inside `tx`.
fn audit_in(tx: &Connection, entry: &AuditEntry) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO audit (at, event, unit_id, key_id, source, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        entry.at.unix_timestamp(),
        entry.event,
        entry.unit_id,
        entry.key_id,
        entry.source,
        entry.outcome,
        entry.detail
    ])?;
    Ok(())
}

/// An audit line for a command-line key operation.
fn cli_audit(event: &str, ids: &[KeyId], detail: String) -> AuditEntry {
    AuditEntry {
        at: OffsetDateTime::now_utc(),
        event: event.to_owned(),
        unit_id: None,
        key_id: if ids.len() == 1 { Some(ids[0]) } else { None },
        source: "cli".to_owned(),
        outcome: "ok".to_owned(),
        detail,
    }
}

fn id_list(ids: &[KeyId]) -> String {
    match ids {
        [] => String::new(),
        [first, .., last] if ids.len() > 8 => format!("{} keys, IDs {first} to {last}", ids.len()),
        _ => format!(
            "IDs {}",
            ids.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

const DEVICE_COLUMNS: &str = "unit_id, public_key, certificate, serial, not_after, key_id, key_kind, enrolled_at, last_seen, inventory";

fn device_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRecord> {
    let bad = |index, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Text,
            what.to_owned().into(),
        )
    };
    let time = |index: usize| -> rusqlite::Result<OffsetDateTime> {
        OffsetDateTime::from_unix_timestamp(row.get(index)?).map_err(|_| bad(index, "a bad time"))
    };
    Ok(DeviceRecord {
        unit_id: row
            .get::<_, String>(0)?
            .parse()
            .map_err(|_| bad(0, "a malformed unit ID"))?,
        public_key: row.get(1)?,
        certificate: row.get(2)?,
        serial: row.get(3)?,
        not_after: time(4)?,
        key_id: row.get(5)?,
        key_kind: kind_from_sql(&row.get::<_, String>(6)?)
            .ok_or_else(|| bad(6, "an unknown key kind"))?,
        enrolled_at: time(7)?,
        last_seen: time(8)?,
        inventory: row.get(9)?,
    })
}

/// The database and its WAL hold only sealed values, but there is no reason for others to read
/// them either.
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        let _ = std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600));
    }
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn kind_from_sql(text: &str) -> Option<KeyKind> {
    text.parse().ok()
}

impl Store for SqliteStore {
    fn insert_keys(
        &self,
        count: usize,
        make: MakeKey<'_>,
        progress: Progress<'_>,
    ) -> Result<Vec<KeyId>, StoreError> {
        let mut connection = self.lock();
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.db(e))?;
        let mut ids = Vec::with_capacity(count);
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO keys (kind, lookup, sealed, unit_id, comment, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (lookup) DO NOTHING",
                )
                .map_err(|e| self.db(e))?;
            let created_at = now();
            for index in 0..count {
                let mut attempts = 0;
                loop {
                    let key = make(index);
                    let inserted = insert
                        .execute(params![
                            key.kind.as_str(),
                            &key.lookup[..],
                            key.sealed,
                            key.unit_id.as_ref().map(UnitId::as_str),
                            key.comment,
                            created_at
                        ])
                        .map_err(|e| self.db(e))?;
                    if inserted == 1 {
                        ids.push(tx.last_insert_rowid());
                        break;
                    }
                    if !key.generated {
                        return Err(StoreError::DuplicateKey);
                    }
                    attempts += 1;
                    if attempts >= GENERATE_ATTEMPTS {
                        return Err(StoreError::NoUniqueValue(attempts));
                    }
                }
                if index % 1024 == 1023 {
                    progress(index as u64 + 1);
                }
            }
        }
        audit_in(&tx, &cli_audit("keys.create", &ids, id_list(&ids))).map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))?;
        progress(count as u64);
        Ok(ids)
    }

    fn keys(&self, filter: &KeyFilter) -> Result<Vec<StoredKey>, StoreError> {
        let mut sql = String::from(
            "SELECT id, kind, lookup, sealed, unit_id, active, usage_count, usage_date, comment, created_at
             FROM keys WHERE 1 = 1",
        );
        let mut values: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(kind) = filter.kind {
            sql.push_str(" AND kind = ?");
            values.push(kind.as_str().to_owned().into());
        }
        if let Some(status) = filter.status {
            sql.push_str(&format!(" AND {STATUS_SQL} = ?"));
            values.push(status.as_str().to_owned().into());
        }
        if let Some(unit_id) = &filter.unit_id {
            sql.push_str(" AND unit_id = ?");
            values.push(unit_id.as_str().to_owned().into());
        }
        if let Some(ids) = &filter.ids {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            // Bound as a JSON array so any number of IDs is one parameter.
            sql.push_str(" AND id IN (SELECT value FROM json_each(?))");
            values.push(serde_json::to_string(ids).unwrap_or_default().into());
        }
        sql.push_str(" ORDER BY id");
        let connection = self.lock();
        let mut statement = connection.prepare(&sql).map_err(|e| self.db(e))?;
        let rows = statement
            .query_map(params_from_iter(values), |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, Vec<u8>>(2)?,
                    row.get::<_, Vec<u8>>(3)?,
                    row.get::<_, Option<String>>(4)?,
                    row.get::<_, bool>(5)?,
                    row.get::<_, i64>(6)?,
                    row.get::<_, Option<i64>>(7)?,
                    row.get::<_, String>(8)?,
                    row.get::<_, i64>(9)?,
                ))
            })
            .map_err(|e| self.db(e))?;
        let mut keys = Vec::new();
        for row in rows {
            let (
                id,
                kind,
                lookup,
                sealed,
                unit_id,
                active,
                usage_count,
                usage_date,
                comment,
                created_at,
            ) = row.map_err(|e| self.db(e))?;
            let corrupt = |reason: String| StoreError::Corrupt {
                path: self.shown(),
                reason,
            };
            let kind = kind_from_sql(&kind)
                .ok_or_else(|| corrupt(format!("key {id} has an unknown kind")))?;
            let lookup: [u8; 32] = lookup
                .try_into()
                .map_err(|_| corrupt(format!("key {id} has a malformed digest")))?;
            let unit_id = match unit_id {
                Some(text) => Some(
                    text.parse()
                        .map_err(|_| corrupt(format!("key {id} has a malformed unit ID")))?,
                ),
                None => None,
            };
            let time = |seconds: i64| {
                OffsetDateTime::from_unix_timestamp(seconds)
                    .map_err(|_| corrupt(format!("key {id} has a bad time")))
            };
            keys.push(StoredKey {
                id,
                kind,
                lookup,
                sealed,
                unit_id,
                active,
                usage_count: u64::try_from(usage_count).unwrap_or(0),
                usage_date: usage_date.map(time).transpose()?,
                comment,
                created_at: time(created_at)?,
            });
        }
        Ok(keys)
    }

    fn set_comment(&self, id: KeyId, comment: &str) -> Result<(), StoreError> {
        let mut connection = self.lock();
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.db(e))?;
        let changed = tx
            .execute(
                "UPDATE keys SET comment = ?1 WHERE id = ?2",
                params![comment, id],
            )
            .map_err(|e| self.db(e))?;
        if changed == 0 {
            return Err(StoreError::NotFound(vec![id]));
        }
        audit_in(&tx, &cli_audit("keys.edit", &[id], String::new())).map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))
    }

    fn set_active(&self, ids: &[KeyId], active: bool) -> Result<(), StoreError> {
        let (sql, event) = if active {
            ("UPDATE keys SET active = 1 WHERE id = ?1", "keys.activate")
        } else {
            (
                "UPDATE keys SET active = 0 WHERE id = ?1",
                "keys.deactivate",
            )
        };
        self.change_each(ids, sql, event)
    }

    fn delete_keys(&self, ids: &[KeyId]) -> Result<(), StoreError> {
        self.change_each(ids, "DELETE FROM keys WHERE id = ?1", "keys.delete")
    }

    fn enroll(
        &self,
        attempt: EnrollAttempt,
        issue: IssueOnce,
    ) -> Result<EnrollOutcome, StoreError> {
        let jobs = self.enroller.get_or_init(|| {
            let (sender, receiver) = std::sync::mpsc::channel();
            let path = self.path.clone();
            std::thread::Builder::new()
                .name("ums-stub-enroll".to_owned())
                .spawn(move || enroll_writer(path, receiver))
                .expect("cannot start the enrollment writer thread");
            sender
        });
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let stopped = || StoreError::Corrupt {
            path: self.shown(),
            reason: "the enrollment writer stopped".into(),
        };
        jobs.send(EnrollJob {
            attempt,
            issue,
            reply,
        })
        .map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
    }

    fn renew(
        &self,
        unit_id: &UnitId,
        serial: &str,
        public_key: &[u8],
        source: &str,
        issue: IssueCertificate<'_>,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        let mut connection = self.lock();
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.db(e))?;
        let device = tx
            .prepare_cached(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE unit_id = ?1 AND serial = ?2"
            ))
            .map_err(|e| self.db(e))?
            .query_row(params![unit_id.as_str(), serial], device_from_row)
            .optional()
            .map_err(|e| self.db(e))?;
        let Some(mut device) = device else {
            return Ok(None);
        };
        let issued = issue().map_err(StoreError::Issue)?;
        let now = OffsetDateTime::now_utc();
        tx.execute(
            "UPDATE devices SET public_key = ?1, certificate = ?2, serial = ?3, not_after = ?4, last_seen = ?5
             WHERE unit_id = ?6",
            params![public_key, issued.der, issued.serial, issued.not_after.unix_timestamp(), now.unix_timestamp(), unit_id.as_str()],
        )
        .map_err(|e| self.db(e))?;
        audit_in(
            &tx,
            &AuditEntry {
                at: now,
                event: "reenroll".to_owned(),
                unit_id: Some(unit_id.to_string()),
                key_id: None,
                source: source.to_owned(),
                outcome: "ok".to_owned(),
                detail: format!("certificate {} replaces {serial}", issued.serial),
            },
        )
        .map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))?;
        device.public_key = public_key.to_vec();
        device.certificate = issued.der;
        device.serial = issued.serial;
        device.not_after = issued.not_after;
        device.last_seen = now;
        Ok(Some(device))
    }

    fn touch_device(
        &self,
        unit_id: &UnitId,
        serial: &str,
        inventory: Option<&str>,
    ) -> Result<bool, StoreError> {
        let changed = self
            .lock()
            .execute(
                "UPDATE devices SET last_seen = ?1, inventory = coalesce(?2, inventory) WHERE unit_id = ?3 AND serial = ?4",
                params![now(), inventory, unit_id.as_str(), serial],
            )
            .map_err(|e| self.db(e))?;
        Ok(changed == 1)
    }

    fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices ORDER BY unit_id"
            ))
            .map_err(|e| self.db(e))?;
        let rows = statement
            .query_map([], device_from_row)
            .map_err(|e| self.db(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.db(e))
    }

    fn delete_device(&self, unit_id: &UnitId, source: &str) -> Result<(), StoreError> {
        let mut connection = self.lock();
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.db(e))?;
        let changed = tx
            .execute("DELETE FROM devices WHERE unit_id = ?1", [unit_id.as_str()])
            .map_err(|e| self.db(e))?;
        if changed == 0 {
            return Err(StoreError::DeviceNotFound(unit_id.clone()));
        }
        audit_in(
            &tx,
            &AuditEntry {
                at: OffsetDateTime::now_utc(),
                event: "devices.delete".to_owned(),
                unit_id: Some(unit_id.to_string()),
                key_id: None,
                source: source.to_owned(),
                outcome: "ok".to_owned(),
                detail: String::new(),
            },
        )
        .map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))
    }

    fn record(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let mut connection = self.lock();
        let tx = connection.transaction().map_err(|e| self.db(e))?;
        audit_in(&tx, entry).map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))
    }

    fn audit(&self, since: Option<OffsetDateTime>) -> Result<Vec<AuditEntry>, StoreError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare(
                "SELECT at, event, unit_id, key_id, source, outcome, detail FROM audit
                 WHERE at >= ?1 ORDER BY id",
            )
            .map_err(|e| self.db(e))?;
        let rows = statement
            .query_map(
                [since.map_or(i64::MIN, OffsetDateTime::unix_timestamp)],
                |row| {
                    Ok(AuditEntry {
                        at: OffsetDateTime::from_unix_timestamp(row.get(0)?)
                            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
                        event: row.get(1)?,
                        unit_id: row.get(2)?,
                        key_id: row.get(3)?,
                        source: row.get(4)?,
                        outcome: row.get(5)?,
                        detail: row.get(6)?,
                    })
                },
            )
            .map_err(|e| self.db(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.db(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{KeyStatus, NewKey};

    fn key(lookup: u8, kind: KeyKind, generated: bool) -> NewKey {
        NewKey {
            kind,
            lookup: [lookup; 32],
            sealed: vec![lookup],
            unit_id: (kind == KeyKind::DeviceBound).then(|| "00E0C5540B8B".parse().unwrap()),
            comment: String::new(),
            generated,
        }
    }

    #[test]
    fn migrates_once_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), 2);
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), 2);
        store.integrity_check().unwrap();
    }

    #[test]
    fn refuses_a_database_from_a_newer_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        drop(SqliteStore::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .execute("INSERT INTO schema_migrations VALUES (99, 0)", [])
            .unwrap();
        let error = SqliteStore::open(&path).unwrap_err().to_string();
        assert!(
            error.contains("schema version 99") && error.contains("db.sqlite"),
            "{error}"
        );
    }

    #[test]
    fn a_clash_redraws_generated_values_and_refuses_typed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        store
            .insert_keys(1, &mut |_| key(1, KeyKind::OneTime, true), &|_| {})
            .unwrap();
        // The first draw clashes with the existing digest, the second does not.
        let mut draws = [1u8, 2].into_iter();
        let ids = store
            .insert_keys(
                1,
                &mut |_| key(draws.next().unwrap(), KeyKind::OneTime, true),
                &|_| {},
            )
            .unwrap();
        assert_eq!(ids.len(), 1);
        let refused =
            store.insert_keys(1, &mut |_| key(2, KeyKind::MassDeployment, false), &|_| {});
        assert!(matches!(refused, Err(StoreError::DuplicateKey)));
        assert_eq!(store.keys(&KeyFilter::default()).unwrap().len(), 2);
    }

    #[test]
    fn batch_operations_are_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let ids = store
            .insert_keys(
                3,
                &mut |i| key(i as u8 + 10, KeyKind::OneTime, true),
                &|_| {},
            )
            .unwrap();
        let refused = store.set_active(&[ids[0], 999, ids[1]], false).unwrap_err();
        assert!(matches!(&refused, StoreError::NotFound(missing) if missing == &vec![999]));
        assert!(
            store
                .keys(&KeyFilter::default())
                .unwrap()
                .iter()
                .all(|k| k.active)
        );
        assert!(matches!(
            store.delete_keys(&[ids[2], 998]),
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(store.keys(&KeyFilter::default()).unwrap().len(), 3);
        // A batch that fails half-way leaves nothing behind.
        let partial = store.insert_keys(
            3,
            &mut |i| {
                if i == 2 {
                    key(10, KeyKind::MassDeployment, false)
                } else {
                    key(i as u8 + 50, KeyKind::OneTime, true)
                }
            },
            &|_| {},
        );
        assert!(partial.is_err());
        assert_eq!(store.keys(&KeyFilter::default()).unwrap().len(), 3);
    }

    #[test]
    fn status_filter_matches_the_derived_status() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let ids = store
            .insert_keys(
                3,
                &mut |i| {
                    key(
                        i as u8 + 1,
                        [
                            KeyKind::OneTime,
                            KeyKind::MassDeployment,
                            KeyKind::DeviceBound,
                        ][i],
                        true,
                    )
                },
                &|_| {},
            )
            .unwrap();
        store
            .lock()
            .execute(
                "UPDATE keys SET usage_count = 1 WHERE id IN (?1, ?2)",
                params![ids[0], ids[1]],
            )
            .unwrap();
        store.set_active(&[ids[0], ids[2]], false).unwrap();
        let status = |status| {
            store
                .keys(&KeyFilter {
                    status: Some(status),
                    ..KeyFilter::default()
                })
                .unwrap()
                .iter()
                .map(|k| (k.id, k.status()))
                .collect::<Vec<_>>()
        };
        // A used one-time key stays Used when deactivated; a used mass key stays Active.
        assert_eq!(status(KeyStatus::Used), vec![(ids[0], KeyStatus::Used)]);
        assert_eq!(status(KeyStatus::Active), vec![(ids[1], KeyStatus::Active)]);
        assert_eq!(
            status(KeyStatus::Inactive),
            vec![(ids[2], KeyStatus::Inactive)]
        );
    }
}
