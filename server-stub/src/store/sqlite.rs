//! The SQLite store, the embedded default: one file in the data directory, WAL mode so the CLI and
//! a running server can share it, numbered migrations (`sqlite/migrations/*.sql`) applied at open.
//!
//! rusqlite is blocking, so every call crosses one bridge ([`SqliteStore::call`]) onto tokio's
//! blocking pool. Enrollments go to one writer thread (`sqlite/writer.rs`) that applies every
//! attempt waiting in one transaction (group commit): one fsync is shared by many devices. The
//! flows that apply a decision are the store's own (`apply.rs`), run over this backend's row
//! operations (`sqlite/transaction.rs`), which never wait ([`ready`]).

mod accounts;
mod transaction;
mod writer;

use transaction::SqliteTx;
use writer::{WriterJob, writer};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use onboard_protocol::admin::{KeyId, KeyStatus};
use onboard_protocol::{Fingerprint, Folder, KeyKind, UnitId};
use rusqlite::{
    Connection, OptionalExtension, Transaction, TransactionBehavior, params, params_from_iter,
};
use time::OffsetDateTime;

use super::apply::{self, KeyEdit};
use super::error::StoreError;
use super::interface::Store;
use super::query::{
    self, AuditFilter, DeviceFilter, Dialect, KeyFilter, KeyListing, PageRequest, Value,
    device_select,
};
use super::rows::{
    AccountChange, AccountRow, Actor, AuditEntry, CheckedKey, DeviceRecord, EnrollAttempt,
    EnrollOutcome, KeyCheck, KeyPatch, MakeKey, Progress, RenewOutcome, RenewalRequest, RowSealer,
    ServerBeat, ServerRow, SessionRef, SessionRow, StoredKey, TokenRow, UnsealedRows,
};
use super::tx::ready;
use crate::ca::IssueOnce;
use crate::claim;
use crate::cluster::MainUmsId;
use crate::rig::clock::Clock;
use crate::vault::LookupDigest;

/// The migration that added row MACs ([`crate::row_mac`]).
const ROW_MAC_MIGRATION: i64 = 8;

/// Migrations, applied in order; a database records the highest it has.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("sqlite/migrations/0001_keys.sql")),
    (2, include_str!("sqlite/migrations/0002_devices_audit.sql")),
    (
        3,
        include_str!("sqlite/migrations/0003_status_actor_ums_id.sql"),
    ),
    (
        4,
        include_str!("sqlite/migrations/0004_previous_serial.sql"),
    ),
    (5, include_str!("sqlite/migrations/0005_accounts.sql")),
    (6, include_str!("sqlite/migrations/0006_cluster.sql")),
    (7, include_str!("sqlite/migrations/0007_connector.sql")),
    (
        8,
        include_str!("sqlite/migrations/0008_row_macs_keys_export.sql"),
    ),
    (
        9,
        include_str!("sqlite/migrations/0009_key_limits_folders.sql"),
    ),
];

/// The `store_meta` row naming the UMS ID the database belongs to.
const META_UMS_ID: &str = "ums_id_fingerprint";

/// A device by its unit ID.
const DEVICE_BY_UNIT_ID: &str = concat!(device_select!(), " WHERE unit_id = ?1");

/// A SQLite database file.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
    /// Whether this open applied the row-MAC migration ([`Store::migrated_row_macs_now`]).
    migrated_row_macs: bool,
}

struct Inner {
    path: PathBuf,
    /// The path as messages show it.
    shown: String,
    connection: Mutex<Connection>,
    /// The writer thread for enrollments and audit lines, started at the first of them.
    writer: OnceLock<std::sync::mpsc::Sender<WriterJob>>,
    /// How many times the writer has synced the WAL file after a batch.
    wal_syncs: Arc<AtomicU64>,
    /// The server's notion of now: the machine's clock, moved only in test-rig mode.
    clock: Clock,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SqliteStore({})", self.inner.path.display())
    }
}

impl SqliteStore {
    /// Opens (creating if needed, mode 0600) the database at `path` and applies pending
    /// migrations. Blocks: call it where blocking is allowed.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_clock(path, Clock::system())
    }

    /// [`SqliteStore::open`], measuring expiries, heartbeats and the times it records by `clock`
    /// (the server's, which a rig may move) rather than the machine's own.
    pub fn open_with_clock(path: &Path, clock: Clock) -> Result<Self, StoreError> {
        create_private(path)?;
        let connection = connect(path)?;
        restrict_permissions(path);
        let inner = Inner {
            path: path.to_owned(),
            shown: path.display().to_string(),
            connection: Mutex::new(connection),
            writer: OnceLock::new(),
            wal_syncs: Arc::default(),
            clock,
        };
        let migrated_row_macs = inner.migrate()?;
        Ok(Self {
            inner: Arc::new(inner),
            migrated_row_macs,
        })
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        let inner = &self.inner;
        inner
            .lock()
            .query_row("SELECT max(version) FROM schema_migrations", [], |row| {
                row.get(0)
            })
            .map_err(|e| inner.db(e))
    }

    /// Runs SQLite's integrity check; `Ok(())` when it reports "ok".
    pub fn integrity_check(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        let report: String = inner
            .lock()
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .map_err(|e| inner.db(e))?;
        if report == "ok" {
            Ok(())
        } else {
            Err(inner.corrupt(format!("damage: {report}")))
        }
    }

    /// The count a `SELECT count(*)` (its text and values, [`query`]) gives.
    async fn count_of(&self, (sql, values): (String, Vec<Value>)) -> Result<u64, StoreError> {
        self.call(move |inner| {
            let counted: i64 = inner
                .lock()
                .prepare_cached(&sql)
                .map_err(|e| inner.db(e))?
                .query_row(params_from_iter(bind(values)), |row| row.get(0))
                .map_err(|e| inner.db(e))?;
            Ok(count(counted))
        })
        .await
    }

    /// The rows a `SELECT` (its text and values, [`query`]) gives, each read by `read`.
    pub(super) async fn select<T: Send + 'static>(
        &self,
        (sql, values): (String, Vec<Value>),
        read: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        self.call(move |inner| {
            let connection = inner.lock();
            let mut statement = connection.prepare_cached(&sql).map_err(|e| inner.db(e))?;
            let rows = statement
                .query_map(params_from_iter(bind(values)), read)
                .map_err(|e| inner.db(e))?;
            rows.collect::<Result<_, _>>().map_err(|e| inner.db(e))
        })
        .await
    }

    /// Applies `edit` to the keys `ids` in one transaction ([`apply::change_keys`]).
    async fn change_keys(
        &self,
        ids: Vec<KeyId>,
        edit: KeyEdit,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let actor = actor.clone();
        self.call(move |inner| {
            inner.write(|tx| ready(apply::change_keys(&mut inner.tx(tx), &ids, &edit, &actor)))
        })
        .await
    }

    /// How many times the writer has flushed the WAL file after a batch that held a write which
    /// must be on the disk before it is answered ([`Durability::Synced`](super::Durability::Synced)); for tests and
    /// benchmarks.
    pub fn wal_syncs(&self) -> u64 {
        self.inner.wal_syncs.load(Ordering::Relaxed)
    }

    /// Hands `job` to the writer thread, starting it at the first job.
    fn send(&self, job: WriterJob) -> Result<(), StoreError> {
        let inner = &self.inner;
        let jobs = inner.writer.get_or_init(|| {
            let (sender, receiver) = std::sync::mpsc::channel();
            let path = inner.path.clone();
            let syncs = inner.wal_syncs.clone();
            let clock = inner.clock.clone();
            std::thread::Builder::new()
                .name("ums-stub-writer".to_owned())
                .spawn(move || writer(path, receiver, syncs, clock))
                .expect("cannot start the database writer thread");
            sender
        });
        jobs.send(job).map_err(|_| writer_stopped())
    }

    /// The bridge from async callers to the blocking connection: runs `work` on tokio's blocking
    /// pool.
    async fn call<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|error| StoreError::Backend {
                database: self.inner.shown(),
                source: Box::new(error),
            })?
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable: SQLite rolls back.
        self.connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn shown(&self) -> String {
        self.shown.clone()
    }

    /// Now by the server's clock, whole seconds since the epoch, as rows store times.
    fn now(&self) -> i64 {
        self.clock.now().unix_timestamp()
    }

    /// The row operations of the transaction `tx` opened on this database.
    fn tx<'a>(&'a self, tx: &'a Connection) -> SqliteTx<'a> {
        SqliteTx::new(tx, &self.shown)
    }

    fn db(&self, source: rusqlite::Error) -> StoreError {
        backend_error(&self.shown, source)
    }

    /// Runs `work` in one IMMEDIATE transaction and commits it: all of it, or nothing when `work`
    /// fails.
    fn write<T>(
        &self,
        work: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut connection = self.lock();
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.db(e))?;
        let out = work(&tx)?;
        tx.commit().map_err(|e| self.db(e))?;
        Ok(out)
    }

    fn corrupt(&self, reason: String) -> StoreError {
        StoreError::Corrupt {
            database: self.shown(),
            reason,
        }
    }

    /// Applies pending migrations in one transaction; says whether the row-MAC one was among
    /// them.
    fn migrate(&self) -> Result<bool, StoreError> {
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
            return Err(StoreError::SchemaTooNew {
                database: self.shown(),
                found: current,
                known,
            });
        }
        for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > current) {
            tx.execute_batch(sql).map_err(|e| self.db(e))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                params![version, self.now()],
            )
            .map_err(|e| self.db(e))?;
        }
        self.fill_statuses(&tx)?;
        tx.commit().map_err(|e| self.db(e))?;
        Ok(current < ROW_MAC_MIGRATION)
    }

    /// Gives keys from before the status column the status [`claim::status`] decides.
    fn fill_statuses(&self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        let rows: Vec<(KeyId, String, bool, i64)> = {
            let mut select = tx
                .prepare("SELECT id, kind, active, usage_count FROM keys WHERE status IS NULL")
                .map_err(|e| self.db(e))?;
            select
                .query_map([], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })
                .map_err(|e| self.db(e))?
                .collect::<Result<_, _>>()
                .map_err(|e| self.db(e))?
        };
        let mut update = tx
            .prepare("UPDATE keys SET status = ?1 WHERE id = ?2")
            .map_err(|e| self.db(e))?;
        for (id, kind, active, usage_count) in rows {
            let kind = self.kind(id, &kind)?;
            let status = claim::stored_status(kind, active, count(usage_count));
            update
                .execute(params![status.as_str(), id])
                .map_err(|e| self.db(e))?;
        }
        Ok(())
    }

    fn kind(&self, id: KeyId, text: &str) -> Result<KeyKind, StoreError> {
        text.parse()
            .map_err(|_| self.corrupt(format!("key {id} with an unknown kind")))
    }

    fn key_from_row(&self, row: &rusqlite::Row<'_>) -> Result<StoredKey, StoreError> {
        let get = |e| self.db(e);
        let id: KeyId = row.get(0).map_err(get)?;
        let kind = self.kind(id, &row.get::<_, String>(1).map_err(get)?)?;
        let lookup: [u8; 32] = row
            .get::<_, Vec<u8>>(2)
            .map_err(get)?
            .try_into()
            .map_err(|_| self.corrupt(format!("key {id} with a malformed digest")))?;
        let unit_id = row
            .get::<_, Option<String>>(4)
            .map_err(get)?
            .map(|text| text.parse::<UnitId>())
            .transpose()
            .map_err(|_| self.corrupt(format!("key {id} with a malformed unit ID")))?;
        // Every write sets the status, and opening fills any a bug left empty.
        let status = match row.get::<_, Option<String>>(6).map_err(get)? {
            Some(text) => text
                .parse::<KeyStatus>()
                .map_err(|_| self.corrupt(format!("key {id} with an unknown status {text:?}")))?,
            None => return Err(self.corrupt(format!("key {id} with no status"))),
        };
        let time = |seconds: i64| {
            OffsetDateTime::from_unix_timestamp(seconds)
                .map_err(|_| self.corrupt(format!("key {id} with a bad time")))
        };
        Ok(StoredKey {
            id,
            kind,
            lookup,
            sealed: row.get(3).map_err(get)?,
            unit_id,
            active: row.get(5).map_err(get)?,
            status,
            usage_count: count(row.get(7).map_err(get)?),
            usage_date: row
                .get::<_, Option<i64>>(8)
                .map_err(get)?
                .map(time)
                .transpose()?,
            comment: row.get(9).map_err(get)?,
            created_at: time(row.get(10).map_err(get)?)?,
            limits: claim::Limits {
                not_before: row
                    .get::<_, Option<i64>>(11)
                    .map_err(get)?
                    .map(time)
                    .transpose()?,
                expires_at: row
                    .get::<_, Option<i64>>(12)
                    .map_err(get)?
                    .map(time)
                    .transpose()?,
                usage_limit: row.get::<_, Option<i64>>(13).map_err(get)?.map(count),
            },
            folder: row
                .get::<_, Option<String>>(14)
                .map_err(get)?
                .map(|text| text.parse::<Folder>())
                .transpose()
                .map_err(|_| self.corrupt(format!("key {id} with a malformed folder")))?,
        })
    }
}

fn backend_error(database: &str, source: rusqlite::Error) -> StoreError {
    let busy = matches!(
        source.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    if busy {
        StoreError::Unavailable(format!("{database} is locked by another process"))
    } else {
        StoreError::Backend {
            database: database.to_owned(),
            source: Box::new(source),
        }
    }
}

fn writer_stopped() -> StoreError {
    StoreError::Unavailable("the database writer stopped".to_owned())
}

/// Creates the database file mode 0600 before SQLite opens it, so it is never readable by others,
/// not even for a moment.
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(StoreError::Backend {
            database: path.display().to_string(),
            source: Box::new(error),
        }),
    }
}

/// Opens a connection with the pragmas every connection of this store uses.
fn connect(path: &Path) -> Result<Connection, StoreError> {
    let shown = path.display().to_string();
    let db = |source| backend_error(&shown, source);
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
            database: shown,
            reason: format!("a journal that cannot switch to WAL mode (got {mode})"),
        });
    }
    // FULL: a committed write survives a power cut, not only a killed process (the writer
    // thread lowers it and syncs itself, see `writer`). A page cache of 512 KiB a connection
    // rather than SQLite's 2 MiB: the operating system caches the file anyway, and the server's
    // memory target is 16 MiB (a million keys filled both connections' caches).
    connection
        .execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA cache_size = -512;",
        )
        .map_err(db)?;
    Ok(connection)
}

/// Appends an audit line inside `tx`.
fn audit_in(tx: &Connection, entry: &AuditEntry) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO audit (at, event, actor, source, unit_id, key_id, outcome, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        entry.at.unix_timestamp(),
        entry.event,
        entry.actor,
        entry.source,
        entry.unit_id,
        entry.key_id,
        entry.outcome,
        entry.stored_detail()
    ])?;
    Ok(())
}

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
        key_kind: row
            .get::<_, String>(6)?
            .parse()
            .map_err(|_| bad(6, "an unknown key kind"))?,
        enrolled_at: time(7)?,
        last_seen: time(8)?,
        inventory: row.get(9)?,
        previous_serial: row.get(10)?,
        folder: row
            .get::<_, Option<String>>(11)?
            .map(|text| text.parse::<Folder>())
            .transpose()
            .map_err(|_| bad(11, "a malformed folder"))?,
        online_server: row.get(12)?,
    })
}

fn audit_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        id: row.get(0)?,
        at: OffsetDateTime::from_unix_timestamp(row.get(1)?).unwrap_or(OffsetDateTime::UNIX_EPOCH),
        event: row.get(2)?,
        actor: row.get(3)?,
        source: row.get(4)?,
        unit_id: row.get(5)?,
        key_id: row.get(6)?,
        outcome: row.get(7)?,
        detail: row.get(8)?,
        via: None,
    })
}

/// The values of a list's parameters as SQLite binds them (key numbers as a JSON array).
fn bind(values: Vec<Value>) -> Vec<rusqlite::types::Value> {
    values
        .into_iter()
        .map(|value| match value {
            Value::Int(number) => number.into(),
            Value::Text(text) => text.into(),
            Value::Ids(ids) => serde_json::to_string(&ids).unwrap_or_default().into(),
        })
        .collect()
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

/// A usage count as stored (never negative: the schema checks it).
fn count(stored: i64) -> u64 {
    u64::try_from(stored).unwrap_or(0)
}

/// A count (a usage limit) as stored: SQLite integers are signed.
fn stored_count(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn ums_id(&self) -> Result<Option<Fingerprint>, StoreError> {
        self.call(|inner| {
            let stored: Option<String> = inner
                .lock()
                .query_row(
                    "SELECT value FROM store_meta WHERE name = ?1",
                    [META_UMS_ID],
                    |row| row.get(0),
                )
                .optional()
                .map_err(|e| inner.db(e))?;
            stored
                .map(|text| {
                    text.parse().map_err(|_| {
                        inner.corrupt("a UMS ID fingerprint that cannot be read".to_owned())
                    })
                })
                .transpose()
        })
        .await
    }

    async fn bind_ums_id(&self, ums_id: &Fingerprint) -> Result<(), StoreError> {
        let ours = *ums_id;
        self.call(move |inner| {
            let mut connection = inner.lock();
            let tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| inner.db(e))?;
            let stored: Option<String> = tx
                .query_row(
                    "SELECT value FROM store_meta WHERE name = ?1",
                    [META_UMS_ID],
                    |row| row.get(0),
                )
                .optional()
                .map_err(|e| inner.db(e))?;
            match stored {
                None => {
                    tx.execute(
                        "INSERT INTO store_meta (name, value) VALUES (?1, ?2)",
                        params![META_UMS_ID, ours.to_string()],
                    )
                    .map_err(|e| inner.db(e))?;
                    tx.commit().map_err(|e| inner.db(e))
                }
                Some(text) => {
                    let stored: Fingerprint = text.parse().map_err(|_| {
                        inner.corrupt("a UMS ID fingerprint that cannot be read".to_owned())
                    })?;
                    if stored == ours {
                        Ok(())
                    } else {
                        Err(StoreError::OtherUmsId {
                            database: inner.shown(),
                            stored,
                            ours,
                        })
                    }
                }
            }
        })
        .await
    }

    async fn insert_keys(
        &self,
        count: usize,
        mut make: MakeKey,
        progress: Progress,
        actor: &Actor,
    ) -> Result<Vec<KeyId>, StoreError> {
        let actor = actor.clone();
        self.call(move |inner| {
            inner.write(|tx| {
                ready(apply::insert_keys(
                    &mut inner.tx(tx),
                    count,
                    &mut make,
                    &progress,
                    &actor,
                    inner.clock.now(),
                ))
            })
        })
        .await
    }

    async fn keys(
        &self,
        filter: &KeyFilter,
        page: &PageRequest<KeyId>,
    ) -> Result<Vec<StoredKey>, StoreError> {
        let (sql, values) = query::keys_page(Dialect::Sqlite, filter, page);
        self.call(move |inner| {
            let connection = inner.lock();
            let mut statement = connection.prepare_cached(&sql).map_err(|e| inner.db(e))?;
            let mut rows = statement
                .query(params_from_iter(bind(values)))
                .map_err(|e| inner.db(e))?;
            let mut keys = Vec::new();
            while let Some(row) = rows.next().map_err(|e| inner.db(e))? {
                keys.push(inner.key_from_row(row)?);
            }
            Ok(keys)
        })
        .await
    }

    async fn count_keys(&self, filter: &KeyFilter) -> Result<u64, StoreError> {
        self.count_of(query::keys_count(Dialect::Sqlite, filter))
            .await
    }

    async fn key_listing(
        &self,
        listing: &KeyListing,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<StoredKey>, StoreError> {
        let (sql, values) = query::key_listing_page(Dialect::Sqlite, listing, offset, limit);
        self.call(move |inner| {
            let connection = inner.lock();
            let mut statement = connection.prepare_cached(&sql).map_err(|e| inner.db(e))?;
            let mut rows = statement
                .query(params_from_iter(bind(values)))
                .map_err(|e| inner.db(e))?;
            let mut keys = Vec::new();
            while let Some(row) = rows.next().map_err(|e| inner.db(e))? {
                keys.push(inner.key_from_row(row)?);
            }
            Ok(keys)
        })
        .await
    }

    async fn count_key_listing(&self, listing: &KeyListing) -> Result<u64, StoreError> {
        self.count_of(query::key_listing_count(Dialect::Sqlite, listing))
            .await
    }

    async fn set_comment(&self, id: KeyId, comment: &str, actor: &Actor) -> Result<(), StoreError> {
        self.change_keys(vec![id], KeyEdit::Comment(comment.to_owned()), actor)
            .await
    }

    async fn edit_key(&self, id: KeyId, patch: KeyPatch, actor: &Actor) -> Result<(), StoreError> {
        self.change_keys(vec![id], KeyEdit::Patch(patch), actor)
            .await
    }

    async fn set_active(
        &self,
        ids: &[KeyId],
        active: bool,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        self.change_keys(ids.to_vec(), KeyEdit::Active(active), actor)
            .await
    }

    async fn delete_keys(&self, ids: &[KeyId], actor: &Actor) -> Result<(), StoreError> {
        self.change_keys(ids.to_vec(), KeyEdit::Delete, actor).await
    }

    async fn key_kind(&self, lookup: &LookupDigest) -> Result<Option<KeyKind>, StoreError> {
        let lookup = *lookup;
        self.call(move |inner| {
            let kind = inner
                .lock()
                .prepare_cached("SELECT kind FROM keys WHERE lookup = ?1")
                .map_err(|e| inner.db(e))?
                .query_row([&lookup[..]], |row| row.get::<_, String>(0))
                .optional()
                .map_err(|e| inner.db(e))?;
            kind.map(|text| {
                text.parse()
                    .map_err(|_| inner.corrupt(format!("a key of the unknown type {text:?}")))
            })
            .transpose()
        })
        .await
    }

    async fn known_keys(&self, lookups: &[LookupDigest]) -> Result<Vec<bool>, StoreError> {
        let lookups = lookups.to_vec();
        self.call(move |inner| {
            let mut connection = inner.lock();
            // One read transaction for all of them: one snapshot, and one WAL read lock taken
            // rather than one a key (a statement outside a transaction takes its own).
            let snapshot = connection.transaction().map_err(|e| inner.db(e))?;
            let found = {
                let mut statement = snapshot
                    .prepare_cached("SELECT 1 FROM keys WHERE lookup = ?1")
                    .map_err(|e| inner.db(e))?;
                lookups
                    .iter()
                    .map(|lookup| {
                        statement
                            .query_row([&lookup[..]], |_| Ok(()))
                            .optional()
                            .map(|found| found.is_some())
                            .map_err(|e| inner.db(e))
                    })
                    .collect::<Result<Vec<bool>, StoreError>>()?
            };
            snapshot.commit().map_err(|e| inner.db(e))?;
            Ok(found)
        })
        .await
    }

    async fn enroll(
        &self,
        attempt: EnrollAttempt,
        issue: IssueOnce,
    ) -> Result<EnrollOutcome, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(WriterJob::Enroll {
            attempt,
            issue,
            reply,
        })?;
        answer.await.map_err(|_| writer_stopped())?
    }

    async fn check_keys(&self, check: &KeyCheck) -> Result<Vec<CheckedKey>, StoreError> {
        let check = check.clone();
        self.call(move |inner| {
            let mut connection = inner.lock();
            // A read transaction (deferred, never upgraded: the check only reads): one snapshot
            // of the keys and the device, on the readers' connection, never the writer's.
            let snapshot = connection.transaction().map_err(|e| inner.db(e))?;
            let checked = ready(apply::check(
                &mut inner.tx(&snapshot),
                &check,
                inner.clock.now(),
            ))?;
            snapshot.commit().map_err(|e| inner.db(e))?;
            Ok(checked)
        })
        .await
    }

    async fn renew(
        &self,
        request: RenewalRequest,
        actor: &Actor,
        issue: IssueOnce,
    ) -> Result<RenewOutcome, StoreError> {
        let actor = actor.clone();
        self.call(move |inner| {
            inner.write(|tx| {
                ready(apply::renew(
                    &mut inner.tx(tx),
                    request,
                    &actor,
                    issue,
                    inner.clock.now(),
                ))
            })
        })
        .await
    }

    async fn touch_device(
        &self,
        unit_id: &UnitId,
        serial: &str,
        inventory: Option<&str>,
        session: Option<SessionRef<'_>>,
    ) -> Result<bool, StoreError> {
        let (unit_id, serial, inventory) = (
            unit_id.clone(),
            serial.to_owned(),
            inventory.map(str::to_owned),
        );
        let session = session.map(|session| (session.server.to_owned(), session.id));
        self.call(move |inner| {
            inner.write(|tx| {
                let session = session
                    .as_ref()
                    .map(|(server, id)| SessionRef { server, id: *id });
                ready(apply::touch(
                    &mut inner.tx(tx),
                    &unit_id,
                    &serial,
                    inventory.as_deref(),
                    session,
                    inner.clock.now(),
                ))
            })
        })
        .await
    }

    async fn devices_matching(
        &self,
        filter: &DeviceFilter,
        page: &PageRequest<UnitId>,
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        self.select(
            query::devices_page(Dialect::Sqlite, filter, page),
            device_from_row,
        )
        .await
    }

    async fn device(&self, unit_id: &UnitId) -> Result<Option<DeviceRecord>, StoreError> {
        let unit_id = unit_id.clone();
        self.call(move |inner| {
            inner
                .lock()
                .prepare_cached(DEVICE_BY_UNIT_ID)
                .map_err(|e| inner.db(e))?
                .query_row([unit_id.as_str()], device_from_row)
                .optional()
                .map_err(|e| inner.db(e))
        })
        .await
    }

    async fn count_devices_matching(&self, filter: &DeviceFilter) -> Result<u64, StoreError> {
        self.count_of(query::devices_count(Dialect::Sqlite, filter))
            .await
    }

    async fn device_offline(
        &self,
        unit_id: &UnitId,
        session: SessionRef<'_>,
    ) -> Result<(), StoreError> {
        let (unit_id, server, id) = (unit_id.clone(), session.server.to_owned(), session.id);
        self.call(move |inner| {
            inner.write(|tx| {
                tx.execute(
                    "UPDATE devices SET online_server = NULL, online_session = NULL, last_seen = ?1
                     WHERE unit_id = ?2 AND online_server = ?3 AND online_session = ?4",
                    params![inner.now(), unit_id.as_str(), server, id],
                )
                .map_err(|e| inner.db(e))?;
                Ok(())
            })
        })
        .await
    }

    async fn release_devices(&self, server: &str, seen_now: bool) -> Result<u64, StoreError> {
        let server = server.to_owned();
        self.call(move |inner| {
            inner.write(|tx| {
                let released = tx
                    .execute(
                        "UPDATE devices SET online_server = NULL, online_session = NULL,
                           last_seen = CASE WHEN ?2 THEN ?3 ELSE last_seen END
                         WHERE online_server = ?1",
                        params![server, seen_now, inner.now()],
                    )
                    .map_err(|e| inner.db(e))?;
                tx.execute("DELETE FROM device_commands WHERE server = ?1", [&server])
                    .map_err(|e| inner.db(e))?;
                Ok(released as u64)
            })
        })
        .await
    }

    async fn queue_command(
        &self,
        unit_id: &UnitId,
        command: &str,
        actor: &Actor,
    ) -> Result<Option<String>, StoreError> {
        let (unit_id, command, actor) = (unit_id.clone(), command.to_owned(), actor.clone());
        self.call(move |inner| {
            inner.write(|tx| {
                ready(apply::queue_command(
                    &mut inner.tx(tx),
                    &unit_id,
                    &command,
                    &actor,
                    inner.clock.now(),
                ))
            })
        })
        .await
    }

    async fn take_commands(&self, server: &str) -> Result<Vec<(UnitId, String)>, StoreError> {
        let server = server.to_owned();
        self.call(move |inner| {
            // Most polls find nothing: a read, without the write lock.
            let pending: i64 = inner
                .lock()
                .prepare_cached("SELECT count(*) FROM device_commands WHERE server = ?1")
                .and_then(|mut statement| statement.query_row([&server], |row| row.get(0)))
                .map_err(|e| inner.db(e))?;
            if pending == 0 {
                return Ok(Vec::new());
            }
            inner.write(|tx| {
                let mut statement = tx
                    .prepare(
                        "DELETE FROM device_commands WHERE server = ?1
                         RETURNING id, unit_id, command",
                    )
                    .map_err(|e| inner.db(e))?;
                let rows = statement
                    .query_map([&server], |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, String>(2)?,
                        ))
                    })
                    .map_err(|e| inner.db(e))?;
                let mut taken = rows
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| inner.db(e))?;
                taken.sort_by_key(|(id, _, _)| *id);
                Ok(taken
                    .into_iter()
                    .filter_map(|(_, unit, command)| Some((unit.parse().ok()?, command)))
                    .collect())
            })
        })
        .await
    }

    async fn delete_device(&self, unit_id: &UnitId, actor: &Actor) -> Result<(), StoreError> {
        let (unit_id, actor) = (unit_id.clone(), actor.clone());
        self.call(move |inner| {
            inner.write(|tx| {
                ready(apply::delete_device(
                    &mut inner.tx(tx),
                    &unit_id,
                    &actor,
                    inner.clock.now(),
                ))
            })
        })
        .await
    }

    async fn record(&self, entry: AuditEntry) -> Result<(), StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(WriterJob::Record { entry, reply })?;
        answer.await.map_err(|_| writer_stopped())?
    }

    async fn audit(
        &self,
        filter: &AuditFilter,
        page: &PageRequest<i64>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.select(
            query::audit_page(Dialect::Sqlite, filter, page),
            audit_from_row,
        )
        .await
    }

    async fn prune_audit(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        self.call(move |inner| {
            let deleted = inner
                .lock()
                .execute("DELETE FROM audit WHERE at < ?1", [before.unix_timestamp()])
                .map_err(|e| inner.db(e))?;
            Ok(deleted as u64)
        })
        .await
    }

    async fn count_audit(&self, filter: &AuditFilter) -> Result<u64, StoreError> {
        self.count_of(query::audit_count(Dialect::Sqlite, filter))
            .await
    }

    async fn create_account(&self, account: &AccountRow, actor: &Actor) -> Result<(), StoreError> {
        self.insert_account(account, actor).await
    }

    async fn accounts(&self, page: &PageRequest<String>) -> Result<Vec<AccountRow>, StoreError> {
        self.select_accounts(page).await
    }

    async fn count_accounts(&self) -> Result<u64, StoreError> {
        self.count_account_rows().await
    }

    async fn account(&self, name: &str) -> Result<Option<AccountRow>, StoreError> {
        self.select_account(name).await
    }

    async fn update_account(
        &self,
        name: &str,
        change: AccountChange,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        self.change_account(name, change, actor).await
    }

    async fn delete_account(&self, name: &str, actor: &Actor) -> Result<(), StoreError> {
        self.remove_account(name, actor).await
    }

    fn migrated_row_macs_now(&self) -> bool {
        self.migrated_row_macs
    }

    async fn unsealed_admin_rows(&self) -> Result<UnsealedRows, StoreError> {
        self.unsealed_rows().await
    }

    async fn seal_admin_rows(
        &self,
        key: Arc<dyn RowSealer>,
        why: &str,
        actor: &Actor,
    ) -> Result<UnsealedRows, StoreError> {
        self.seal_rows(key, why, actor).await
    }

    async fn create_token(&self, token: &TokenRow, actor: &Actor) -> Result<(), StoreError> {
        self.insert_token(token, actor).await
    }

    async fn tokens(
        &self,
        account: Option<&str>,
        page: &PageRequest<String>,
    ) -> Result<Vec<TokenRow>, StoreError> {
        self.select_tokens(account, page).await
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRow>, StoreError> {
        self.select_token(id).await
    }

    async fn revoke_token(&self, id: &str, actor: &Actor) -> Result<(), StoreError> {
        self.delete_token(id, actor).await
    }

    async fn create_session(
        &self,
        session: &SessionRow,
        verified: &str,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        self.insert_session(session, verified, actor).await
    }

    async fn session(&self, digest: &[u8; 32]) -> Result<Option<SessionRow>, StoreError> {
        self.select_session(digest).await
    }

    async fn end_session(&self, digest: &[u8; 32], actor: &Actor) -> Result<(), StoreError> {
        self.delete_session(digest, actor).await
    }

    async fn prune_sessions(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.delete_ended_sessions(now).await
    }

    async fn clock(&self) -> Result<OffsetDateTime, StoreError> {
        // One machine holds the file: its clock (as the server's clock moves it) is the
        // database's.
        Ok(OffsetDateTime::from_unix_timestamp(self.inner.now())
            .unwrap_or(OffsetDateTime::UNIX_EPOCH))
    }

    async fn main_ums_id(&self) -> Result<Option<MainUmsId>, StoreError> {
        self.select_main_ums_id().await
    }

    async fn offer_main_ums_id(&self, main: &MainUmsId) -> Result<MainUmsId, StoreError> {
        self.put_main_ums_id(main, None).await?;
        self.select_main_ums_id().await?.ok_or_else(|| {
            self.inner
                .corrupt("no Main UMS ID after offering one".to_owned())
        })
    }

    async fn replace_main_ums_id(&self, main: &MainUmsId, actor: &Actor) -> Result<(), StoreError> {
        self.put_main_ums_id(main, Some(actor)).await
    }

    async fn heartbeat(&self, beat: &ServerBeat) -> Result<(), StoreError> {
        self.put_heartbeat(beat).await
    }

    async fn servers(&self, within: std::time::Duration) -> Result<Vec<ServerRow>, StoreError> {
        self.select_servers(within).await
    }
}

#[cfg(test)]
mod tests;
