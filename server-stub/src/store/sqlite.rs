//! The SQLite store, the embedded default: one file in the data directory, WAL mode so the CLI and
//! a running server can share it, numbered migrations (`sqlite/migrations/*.sql`) applied at open.
//!
//! rusqlite is blocking, so every call crosses one bridge ([`SqliteStore::call`]) onto tokio's
//! blocking pool. Enrollments go to one writer thread that decides every attempt waiting in one
//! transaction (group commit): one fsync is shared by many devices.

mod accounts;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use onboard_protocol::admin::{KeyId, KeyStatus};
use onboard_protocol::{Fingerprint, KeyKind, ProblemCode, UnitId};
use rusqlite::{
    Connection, OptionalExtension, Transaction, TransactionBehavior, params, params_from_iter,
};
use time::OffsetDateTime;

use super::{
    AccountChange, AccountRow, Actor, AuditEntry, AuditFilter, DISCONNECT, DeviceRecord,
    Durability, EnrollAttempt, EnrollOutcome, IssueOnce, KeyFilter, MainUmsId, MakeKey, Missing,
    PageRequest, Progress, RenewOutcome, RenewalRequest, ServerBeat, ServerRow, SessionRef,
    SessionRow, Store, StoreError, StoredKey, TokenRow,
};
use crate::claim::{self, Decision};
use crate::renewal;
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
];

/// How many times a generated value is redrawn on a clash.
const GENERATE_ATTEMPTS: usize = 16;

/// The most attempts decided in one transaction.
const GROUP_COMMIT_MAX: usize = 128;

/// The `store_meta` row naming the UMS ID the database belongs to.
const META_UMS_ID: &str = "ums_id_fingerprint";

const KEY_COLUMNS: &str = "id, kind, lookup, sealed, unit_id, active, status, usage_count, usage_date, comment, created_at";

const DEVICE_COLUMNS: &str = "unit_id, public_key, certificate, serial, not_after, key_id, key_kind, enrolled_at, last_seen, inventory, previous_serial";

const AUDIT_COLUMNS: &str = "id, at, event, actor, source, unit_id, key_id, outcome, detail";

/// A SQLite database file.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
    /// Whether this open applied the row-MAC migration ([`Store::migrated_row_macs_now`]).
    migrated_row_macs: bool,
}

struct Inner {
    path: PathBuf,
    connection: Mutex<Connection>,
    /// The writer thread for enrollments and audit lines, started at the first of them.
    writer: OnceLock<std::sync::mpsc::Sender<WriterJob>>,
    /// How many times the writer has synced the WAL file after a batch.
    wal_syncs: Arc<AtomicU64>,
}

/// Work waiting for the writer thread, with where to send its answer.
enum WriterJob {
    /// An enrollment attempt.
    Enroll {
        attempt: EnrollAttempt,
        issue: IssueOnce,
        reply: tokio::sync::oneshot::Sender<Result<EnrollOutcome, StoreError>>,
    },
    /// An audit line (a refusal decided before the store was asked).
    Record {
        entry: AuditEntry,
        reply: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
    },
}

/// A job done inside the batch transaction, waiting for the commit before it is answered.
enum Done {
    Enroll(
        tokio::sync::oneshot::Sender<Result<EnrollOutcome, StoreError>>,
        Result<EnrollOutcome, StoreError>,
    ),
    Record(
        tokio::sync::oneshot::Sender<Result<(), StoreError>>,
        Result<(), StoreError>,
        Durability,
    ),
}

impl Done {
    /// What this job's write needs ([`Durability`]); a failed job wrote nothing.
    fn durability(&self) -> Durability {
        match self {
            Done::Enroll(_, Ok(outcome)) => outcome.durability(),
            Done::Record(_, Ok(()), durability) => *durability,
            Done::Enroll(_, Err(_)) | Done::Record(_, Err(_), _) => Durability::Deferred,
        }
    }

    fn answer(self) {
        match self {
            Done::Enroll(reply, outcome) => drop(reply.send(outcome)),
            Done::Record(reply, outcome, _) => drop(reply.send(outcome)),
        }
    }

    fn fail(self, error: impl Fn() -> StoreError) {
        match self {
            Done::Enroll(reply, _) => drop(reply.send(Err(error()))),
            Done::Record(reply, ..) => drop(reply.send(Err(error()))),
        }
    }
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
        create_private(path)?;
        let connection = connect(path)?;
        restrict_permissions(path);
        let inner = Inner {
            path: path.to_owned(),
            connection: Mutex::new(connection),
            writer: OnceLock::new(),
            wal_syncs: Arc::default(),
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

    /// How many rows of `table` match `filter` (a WHERE clause and its values).
    async fn count_rows(
        &self,
        table: &'static str,
        filter: (String, Vec<rusqlite::types::Value>),
    ) -> Result<u64, StoreError> {
        let (condition, values) = filter;
        let sql = format!("SELECT count(*) FROM {table}{condition}");
        self.call(move |inner| {
            let counted: i64 = inner
                .lock()
                .prepare_cached(&sql)
                .map_err(|e| inner.db(e))?
                .query_row(params_from_iter(values), |row| row.get(0))
                .map_err(|e| inner.db(e))?;
            Ok(count(counted))
        })
        .await
    }

    /// How many times the writer has flushed the WAL file after a batch that held a write which
    /// must be on the disk before it is answered ([`Durability::Synced`]); for tests and
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
            std::thread::Builder::new()
                .name("ums-stub-writer".to_owned())
                .spawn(move || writer(path, receiver, syncs))
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
        self.path.display().to_string()
    }

    fn db(&self, source: rusqlite::Error) -> StoreError {
        backend_error(&self.shown(), source)
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
                params![version, now()],
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
            let status = claim::status(kind, active, count(usage_count));
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

    /// Runs `change` (given the key's kind and usage count) for each of `ids` in one transaction,
    /// and audits it as `event` (listing the IDs when `list_ids`): all of them, or none when one ID
    /// is unknown.
    fn change_each(
        &self,
        ids: &[KeyId],
        actor: &Actor,
        event: &str,
        list_ids: bool,
        mut change: impl FnMut(&Transaction<'_>, KeyId, KeyKind, u64) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut connection = self.lock();
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.db(e))?;
        let mut missing = Vec::new();
        let mut found = Vec::with_capacity(ids.len());
        {
            let mut select = tx
                .prepare_cached("SELECT kind, usage_count FROM keys WHERE id = ?1")
                .map_err(|e| self.db(e))?;
            for &id in ids {
                let row: Option<(String, i64)> = select
                    .query_row([id], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
                    .map_err(|e| self.db(e))?;
                match row {
                    Some((kind, usage_count)) => {
                        found.push((id, self.kind(id, &kind)?, count(usage_count)))
                    }
                    None => missing.push(id),
                }
            }
        }
        if !missing.is_empty() {
            return Err(StoreError::NotFound(Missing::Keys(missing)));
        }
        for (id, kind, usage_count) in found {
            change(&tx, id, kind, usage_count)?;
        }
        let mut entry = AuditEntry::new(event, actor);
        entry.key_id = (ids.len() == 1).then(|| ids[0]);
        if list_ids {
            entry.detail = id_list(ids);
        }
        audit_in(&tx, &entry).map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))
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

/// The writer: takes the enrollment attempts and audit lines waiting, does them all in one
/// transaction (each in a savepoint, so one failure rolls back only itself), commits once, then
/// answers each.
///
/// Its connection commits with `synchronous = NORMAL`: a commit reaches the WAL file but is not
/// flushed. When the batch holds a write that must be on the disk before it is answered
/// ([`Durability::Synced`]: a key consumed, an export audited), the writer flushes the WAL file
/// itself before answering, which carries every commit before it too. A batch of refusals only is
/// answered without an fsync: refusals, whether decided here or before the store was asked, never
/// cost an fsync of their own. The first batch after the connection opens is synced whatever it
/// holds: commits of a process killed before its sync may still be only in the operating system's
/// cache, and a retry answered from them must not go out before they are on the disk.
fn writer(path: PathBuf, jobs: std::sync::mpsc::Receiver<WriterJob>, syncs: Arc<AtomicU64>) {
    let shown = path.display().to_string();
    let mut connection: Option<Connection> = None;
    // The WAL file SQLite writes (named from the database file it opened, a symbolic link
    // followed), known once the connection is open.
    let mut wal: Option<PathBuf> = None;
    // The WAL file's directory entry is flushed once, at the first sync.
    let mut directory_synced = false;
    // The WAL file may hold commits that are not on the disk: every batch syncs until one sync
    // succeeds, so that a retry answered from the stored device never goes out unsynced. True
    // after a sync failed once its batch had committed, and whenever the connection is (re)opened:
    // a process killed between a commit and its sync left that commit in the operating system's
    // cache, readable and not yet on the disk, and this writer cannot tell.
    let mut unsynced = false;
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
            match connect(&path).and_then(|opened| {
                opened
                    .execute_batch("PRAGMA synchronous = NORMAL")
                    .map_err(|e| backend_error(&shown, e))?;
                Ok(opened)
            }) {
                Ok(opened) => {
                    wal = Some(wal_file(opened.path().map_or(path.as_path(), Path::new)));
                    connection = Some(opened);
                    unsynced = true;
                }
                Err(error) => {
                    tracing::error!("the database writer cannot open the database: {error}")
                }
            }
        }
        let unavailable = || StoreError::Unavailable(format!("the writer cannot open {shown}"));
        let Some(connection) = connection.as_mut() else {
            for job in batch {
                match job {
                    WriterJob::Enroll { reply, .. } => drop(reply.send(Err(unavailable()))),
                    WriterJob::Record { reply, .. } => drop(reply.send(Err(unavailable()))),
                }
            }
            continue;
        };
        let db = |source| backend_error(&shown, source);
        let mut queue: std::collections::VecDeque<WriterJob> = batch.into();
        let mut done: Vec<Done> = Vec::with_capacity(queue.len());
        let committed = (|| -> Result<(), StoreError> {
            let mut tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            while let Some(job) = queue.pop_front() {
                let mut savepoint = match tx.savepoint() {
                    Ok(savepoint) => savepoint,
                    Err(error) => {
                        queue.push_front(job);
                        return Err(db(error));
                    }
                };
                let (finished, ok) = match job {
                    WriterJob::Enroll {
                        attempt,
                        issue,
                        reply,
                    } => {
                        let outcome = enroll_keys(&mut savepoint, &attempt, issue, &shown);
                        let ok = outcome.is_ok();
                        (Done::Enroll(reply, outcome), ok)
                    }
                    WriterJob::Record { entry, reply } => {
                        let outcome = audit_in(&savepoint, &entry).map_err(db);
                        let ok = outcome.is_ok();
                        (Done::Record(reply, outcome, entry.durability()), ok)
                    }
                };
                // Kept before anything else can fail, so that every job is answered.
                done.push(finished);
                if ok {
                    savepoint.commit().map_err(db)?;
                } else {
                    savepoint.rollback().map_err(db)?;
                    drop(savepoint);
                }
            }
            tx.commit().map_err(db)?;
            if unsynced
                || Durability::of_all(done.iter().map(Done::durability)) == Durability::Synced
            {
                let wal = wal.as_deref().unwrap_or(path.as_path());
                let directory = if directory_synced {
                    Directory::Synced
                } else {
                    Directory::ToSync
                };
                if let Err(source) = sync_wal(wal, directory) {
                    unsynced = true;
                    return Err(StoreError::Backend {
                        database: shown.clone(),
                        source: format!(
                            "committed, but {} could not be flushed to the disk: {source}",
                            wal.display()
                        )
                        .into(),
                    });
                }
                unsynced = false;
                directory_synced = true;
                syncs.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })();
        match committed {
            Ok(()) => done.into_iter().for_each(Done::answer),
            Err(error) => {
                tracing::error!("the writer's batch failed: {error:#}");
                let busy = matches!(error, StoreError::Unavailable(_));
                let cause = std::error::Error::source(&error)
                    .map_or_else(|| error.to_string(), ToString::to_string);
                let failure = || {
                    if busy {
                        StoreError::Unavailable(format!("{shown} is locked by another process"))
                    } else {
                        StoreError::Backend {
                            database: shown.clone(),
                            source: format!("the batch failed: {cause}").into(),
                        }
                    }
                };
                for job in done {
                    job.fail(failure);
                }
                // Jobs the failure came before: answered too, never left waiting.
                for job in queue {
                    match job {
                        WriterJob::Enroll { reply, .. } => drop(reply.send(Err(failure()))),
                        WriterJob::Record { reply, .. } => drop(reply.send(Err(failure()))),
                    }
                }
            }
        }
    }
}

/// The WAL file SQLite keeps beside the database at `path`.
fn wal_file(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Whether [`sync_wal`] also flushes the directory holding the WAL file (its entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Directory {
    /// Flushed before: only the file.
    Synced,
    /// Not yet: the file and its directory.
    ToSync,
}

/// Flushes the WAL file `wal` (and its directory when `directory` says so) to the disk: every
/// commit written to it so far survives a power cut.
fn sync_wal(wal: &Path, directory: Directory) -> std::io::Result<()> {
    std::fs::File::open(wal)?.sync_data()?;
    if directory == Directory::ToSync
        && let Some(parent) = wal.parent()
    {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Tries the keys of `attempt` in order inside `tx` ([`super::KeyTries`]).
fn enroll_keys(
    tx: &mut rusqlite::Savepoint<'_>,
    attempt: &EnrollAttempt,
    issue: IssueOnce,
    shown: &str,
) -> Result<EnrollOutcome, StoreError> {
    let mut issue = Some(issue);
    let (mut tries, lookups) = super::KeyTries::new(attempt);
    for (index, lookup) in lookups {
        let outcome = enroll_in(tx, attempt, lookup, &mut issue, shown)?;
        if let Some(done) = tries.take(index, outcome) {
            return Ok(done);
        }
    }
    Ok(tries.finish())
}

/// Reads the rows of the key `lookup` and of the attempt's device inside `tx`, asks
/// [`claim::decide`], and applies the decision: a refusal is audited, a repeat answered from the
/// device row, a consumption counts one use and records the device with a fresh certificate
/// (taken from `issue`).
fn enroll_in(
    tx: &mut rusqlite::Savepoint<'_>,
    attempt: &EnrollAttempt,
    lookup: &LookupDigest,
    issue: &mut Option<IssueOnce>,
    shown: &str,
) -> Result<EnrollOutcome, StoreError> {
    let db = |source| backend_error(shown, source);
    let corrupt = |reason: String| StoreError::Corrupt {
        database: shown.to_owned(),
        reason,
    };
    let now = OffsetDateTime::now_utc();
    let mut audit = AuditEntry::new("enroll", &Actor::device(&attempt.unit_id, &attempt.source));
    audit.at = now;
    audit.unit_id = Some(attempt.unit_id.to_string());
    let key: Option<(KeyId, String, Option<String>, bool, i64)> = tx
        .prepare_cached("SELECT id, kind, unit_id, active, usage_count FROM keys WHERE lookup = ?1")
        .map_err(db)?
        .query_row([&lookup[..]], |row| {
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
    let key = match key {
        Some((id, kind, bound_to, active, usage_count)) => {
            let kind: KeyKind = kind
                .parse()
                .map_err(|_| corrupt(format!("key {id} with an unknown kind")))?;
            let bound_to = bound_to
                .map(|text| text.parse::<UnitId>())
                .transpose()
                .map_err(|_| corrupt(format!("key {id} with a malformed unit ID")))?;
            Some((id, kind, bound_to, active, count(usage_count)))
        }
        None => None,
    };
    let device = tx
        .prepare_cached(&format!(
            "SELECT {DEVICE_COLUMNS}, online_server FROM devices WHERE unit_id = ?1"
        ))
        .map_err(db)?
        .query_row([attempt.unit_id.as_str()], device_from_row)
        .optional()
        .map_err(db)?;
    let decision = claim::decide(
        claim::Attempt {
            unit_id: &attempt.unit_id,
            public_key: &attempt.public_key,
        },
        key.as_ref()
            .map(|(id, kind, bound_to, active, usage_count)| claim::KeyRow {
                id: *id,
                kind: *kind,
                bound_to: bound_to.as_ref(),
                active: *active,
                usage_count: *usage_count,
            }),
        device.as_ref().map(|device| claim::DeviceRow {
            public_key: &device.public_key,
            key_id: device.key_id,
            lapsed: device.not_after < attempt.lapsed_before,
        }),
    );
    audit.key_id = key.as_ref().map(|(id, ..)| *id);
    match decision {
        Decision::Refuse(code) => {
            audit.outcome = code.as_str().to_owned();
            audit_in(tx, &audit).map_err(db)?;
            Ok(EnrollOutcome::Refused(code))
        }
        Decision::Repeat => {
            let device = device.ok_or_else(|| corrupt("a repeat with no device".to_owned()))?;
            audit.detail = format!("repeated answer, certificate {}", device.serial);
            audit_in(tx, &audit).map_err(db)?;
            Ok(EnrollOutcome::Issued {
                device: Box::new(device),
                repeated: true,
                key: 0,
                refused: Vec::new(),
            })
        }
        Decision::Consume => {
            let Some((key_id, kind, _, active, usage_count)) = key else {
                return Err(corrupt("a consumption with no key".to_owned()));
            };
            let status = claim::status(kind, active, usage_count + 1);
            // Second line of defence behind claim::decide: a one-time or device-bound key goes
            // from unused to used once, and an inactive key is never consumed, whatever a bug
            // above may have let through.
            // Prepared once per connection, as every statement of an enrollment: parsing SQL was a
            // visible share of an enrollment's CPU.
            let consumed = tx
                .prepare_cached(
                    "UPDATE keys SET usage_count = usage_count + 1, usage_date = ?1, status = ?2
                     WHERE id = ?3 AND active = 1 AND (kind = 'mass' OR usage_count = 0)",
                )
                .and_then(|mut update| {
                    update.execute(params![now.unix_timestamp(), status.as_str(), key_id])
                })
                .map_err(db)?;
            if consumed != 1 {
                tracing::error!(
                    key_id,
                    "the consume guard refused a key the claim rule allowed; refusing it as used"
                );
                audit.outcome = ProblemCode::KeyUsed.as_str().to_owned();
                audit_in(tx, &audit).map_err(db)?;
                return Ok(EnrollOutcome::Refused(ProblemCode::KeyUsed));
            }
            // Signed only once the key is consumed: a guard refusal leaves the certificate to
            // the next key of the attempt.
            let issue = issue
                .take()
                .ok_or_else(|| corrupt("a second consumption in one attempt".to_owned()))?;
            let issued = issue().map_err(StoreError::Issue)?;
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
                previous_serial: None,
                online_server: None,
            };
            // A lapsed record of the unit ID (claim.rs let the attempt through) is replaced whole.
            tx.prepare_cached(&format!(
                "INSERT INTO devices ({DEVICE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL)
                 ON CONFLICT (unit_id) DO UPDATE SET public_key = excluded.public_key,
                   certificate = excluded.certificate, serial = excluded.serial,
                   not_after = excluded.not_after, key_id = excluded.key_id,
                   key_kind = excluded.key_kind, enrolled_at = excluded.enrolled_at,
                   last_seen = excluded.last_seen, inventory = NULL, previous_serial = NULL"
            ))
            .and_then(|mut insert| insert.execute(params![
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
                ]))
            .map_err(db)?;
            audit.detail = format!("certificate {}", device.serial);
            audit_in(tx, &audit).map_err(db)?;
            Ok(EnrollOutcome::Issued {
                device: Box::new(device),
                repeated: false,
                key: 0,
                refused: Vec::new(),
            })
        }
    }
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
        online_server: row.get(11)?,
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

/// The WHERE clause and values of a key filter.
fn key_where(filter: &KeyFilter) -> (String, Vec<rusqlite::types::Value>) {
    let mut sql = String::from(" WHERE 1 = 1");
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(kind) = filter.kind {
        sql.push_str(" AND kind = ?");
        values.push(kind.as_str().to_owned().into());
    }
    if let Some(status) = filter.status {
        sql.push_str(" AND status = ?");
        values.push(status.as_str().to_owned().into());
    }
    if let Some(unit_id) = &filter.unit_id {
        sql.push_str(" AND unit_id = ?");
        values.push(unit_id.as_str().to_owned().into());
    }
    if let Some(text) = &filter.comment {
        sql.push_str(" AND instr(lower(comment), lower(?)) > 0");
        values.push(text.clone().into());
    }
    if let Some(ids) = &filter.ids {
        // Bound as a JSON array so any number of IDs is one parameter.
        sql.push_str(" AND id IN (SELECT value FROM json_each(?))");
        values.push(serde_json::to_string(ids).unwrap_or_default().into());
    }
    (sql, values)
}

/// The WHERE clause and values of an audit filter.
fn audit_where(filter: &AuditFilter) -> (String, Vec<rusqlite::types::Value>) {
    let mut sql = String::from(" WHERE 1 = 1");
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(since) = filter.since {
        sql.push_str(" AND at >= ?");
        values.push(since.unix_timestamp().into());
    }
    if let Some(unit_id) = &filter.unit_id {
        sql.push_str(" AND unit_id = ?");
        values.push(unit_id.as_str().to_owned().into());
    }
    if let Some(outcome) = &filter.outcome {
        sql.push_str(" AND outcome = ?");
        values.push(outcome.clone().into());
    }
    if let Some(actor) = &filter.actor {
        sql.push_str(" AND actor = ?");
        values.push(actor.clone().into());
    }
    (sql, values)
}

/// One page of `table` by `id`: the rows `filter` (a WHERE clause and its values) matches after
/// `page.after` (before it when `descending`), at most `page.limit` of them.
fn keyset_select(
    columns: &str,
    table: &str,
    filter: (String, Vec<rusqlite::types::Value>),
    page: &PageRequest<i64>,
    descending: bool,
) -> (String, Vec<rusqlite::types::Value>) {
    let (mut condition, mut values) = filter;
    if let Some(after) = page.after {
        condition.push_str(if descending {
            " AND id < ?"
        } else {
            " AND id > ?"
        });
        values.push(after.into());
    }
    let sql = format!(
        "SELECT {columns} FROM {table}{condition} ORDER BY id{} LIMIT {}",
        if descending { " DESC" } else { "" },
        limit(page.limit)
    );
    (sql, values)
}

/// A page size as SQL's LIMIT (-1: no limit).
fn limit(page_limit: usize) -> i64 {
    i64::try_from(page_limit).unwrap_or(-1)
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

/// A usage count as stored (never negative: the schema checks it).
fn count(stored: i64) -> u64 {
    u64::try_from(stored).unwrap_or(0)
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
            let mut connection = inner.lock();
            let tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| inner.db(e))?;
            let mut ids = Vec::with_capacity(count);
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO keys (kind, lookup, sealed, unit_id, comment, created_at, status)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (lookup) DO NOTHING",
                    )
                    .map_err(|e| inner.db(e))?;
                let created_at = now();
                for index in 0..count {
                    let mut attempts = 0;
                    loop {
                        let key = make(index);
                        let status = claim::status(key.kind, true, 0);
                        let inserted = insert
                            .execute(params![
                                key.kind.as_str(),
                                &key.lookup[..],
                                key.sealed,
                                key.unit_id.as_ref().map(UnitId::as_str),
                                key.comment,
                                created_at,
                                status.as_str(),
                            ])
                            .map_err(|e| inner.db(e))?;
                        if inserted == 1 {
                            ids.push(tx.last_insert_rowid());
                            break;
                        }
                        if !key.generated {
                            return Err(StoreError::Conflict(
                                "another key already has this value; two keys cannot share a password"
                                    .to_owned(),
                            ));
                        }
                        attempts += 1;
                        if attempts >= GENERATE_ATTEMPTS {
                            return Err(StoreError::Conflict(format!(
                                "could not generate a unique key value after {attempts} attempts"
                            )));
                        }
                    }
                    if index % 1024 == 1023 {
                        progress(index as u64 + 1);
                    }
                }
            }
            let mut entry = AuditEntry::new("keys.create", &actor);
            entry.key_id = (ids.len() == 1).then(|| ids[0]);
            entry.detail = id_list(&ids);
            audit_in(&tx, &entry).map_err(|e| inner.db(e))?;
            tx.commit().map_err(|e| inner.db(e))?;
            progress(count as u64);
            Ok(ids)
        })
        .await
    }

    async fn keys(
        &self,
        filter: &KeyFilter,
        page: &PageRequest<KeyId>,
    ) -> Result<Vec<StoredKey>, StoreError> {
        let (sql, values) = keyset_select(KEY_COLUMNS, "keys", key_where(filter), page, false);
        self.call(move |inner| {
            let connection = inner.lock();
            let mut statement = connection.prepare_cached(&sql).map_err(|e| inner.db(e))?;
            let mut rows = statement
                .query(params_from_iter(values))
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
        self.count_rows("keys", key_where(filter)).await
    }

    async fn set_comment(&self, id: KeyId, comment: &str, actor: &Actor) -> Result<(), StoreError> {
        let comment = comment.to_owned();
        let actor = actor.clone();
        self.call(move |inner| {
            inner.change_each(&[id], &actor, "keys.edit", false, |tx, id, _, _| {
                tx.execute(
                    "UPDATE keys SET comment = ?1 WHERE id = ?2",
                    params![comment, id],
                )
                .map(drop)
                .map_err(|e| inner.db(e))
            })
        })
        .await
    }

    async fn set_active(
        &self,
        ids: &[KeyId],
        active: bool,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let ids = ids.to_vec();
        let actor = actor.clone();
        let event = if active {
            "keys.activate"
        } else {
            "keys.deactivate"
        };
        self.call(move |inner| {
            inner.change_each(&ids, &actor, event, true, |tx, id, kind, usage_count| {
                let status = claim::status(kind, active, usage_count);
                tx.prepare_cached("UPDATE keys SET active = ?1, status = ?2 WHERE id = ?3")
                    .and_then(|mut update| update.execute(params![active, status.as_str(), id]))
                    .map(drop)
                    .map_err(|e| inner.db(e))
            })
        })
        .await
    }

    async fn delete_keys(&self, ids: &[KeyId], actor: &Actor) -> Result<(), StoreError> {
        let ids = ids.to_vec();
        let actor = actor.clone();
        self.call(move |inner| {
            inner.change_each(&ids, &actor, "keys.delete", true, |tx, id, _, _| {
                tx.prepare_cached("DELETE FROM keys WHERE id = ?1")
                    .and_then(|mut delete| delete.execute([id]))
                    .map(drop)
                    .map_err(|e| inner.db(e))
            })
        })
        .await
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

    async fn renew(
        &self,
        request: RenewalRequest,
        actor: &Actor,
        issue: IssueOnce,
    ) -> Result<RenewOutcome, StoreError> {
        let actor = actor.clone();
        self.call(move |inner| {
            let mut connection = inner.lock();
            let tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| inner.db(e))?;
            let device = tx
                .prepare_cached(&format!(
                    "SELECT {DEVICE_COLUMNS}, online_server FROM devices WHERE unit_id = ?1"
                ))
                .map_err(|e| inner.db(e))?
                .query_row([request.unit_id.as_str()], device_from_row)
                .optional()
                .map_err(|e| inner.db(e))?;
            let Some(mut device) = device else {
                return Ok(RenewOutcome::Refused(renewal::Refusal::NotCurrent));
            };
            let now = OffsetDateTime::now_utc();
            let decision = renewal::decide(
                renewal::Presented {
                    serial: &request.serial,
                    not_after: request.not_after,
                },
                &request.public_key,
                &renewal::Record {
                    serial: &device.serial,
                    previous_serial: device.previous_serial.as_deref(),
                    public_key: &device.public_key,
                },
                request.grace,
                now,
            );
            let previous = match decision {
                renewal::Renewal::Refuse(refusal) => return Ok(RenewOutcome::Refused(refusal)),
                renewal::Renewal::Repeat => {
                    let mut entry = AuditEntry::new("reenroll", &actor);
                    entry.at = now;
                    entry.unit_id = Some(request.unit_id.to_string());
                    entry.detail = format!(
                        "repeated answer, certificate {} (presented {})",
                        device.serial, request.serial
                    );
                    audit_in(&tx, &entry).map_err(|e| inner.db(e))?;
                    tx.commit().map_err(|e| inner.db(e))?;
                    return Ok(RenewOutcome::Repeated(device));
                }
                renewal::Renewal::Issue { previous } => previous,
            };
            let issued = issue().map_err(StoreError::Issue)?;
            tx.execute(
                "UPDATE devices SET public_key = ?1, certificate = ?2, serial = ?3, not_after = ?4,
                   last_seen = ?5, previous_serial = ?6
                 WHERE unit_id = ?7",
                params![
                    request.public_key,
                    issued.der,
                    issued.serial,
                    issued.not_after.unix_timestamp(),
                    now.unix_timestamp(),
                    previous,
                    request.unit_id.as_str()
                ],
            )
            .map_err(|e| inner.db(e))?;
            let mut entry = AuditEntry::new("reenroll", &actor);
            entry.at = now;
            entry.unit_id = Some(request.unit_id.to_string());
            entry.detail = format!(
                "certificate {} replaces {} (presented {})",
                issued.serial, device.serial, request.serial
            );
            audit_in(&tx, &entry).map_err(|e| inner.db(e))?;
            tx.commit().map_err(|e| inner.db(e))?;
            device.public_key = request.public_key;
            device.certificate = issued.der;
            device.serial = issued.serial;
            device.not_after = issued.not_after;
            device.previous_serial = Some(previous);
            device.last_seen = now;
            Ok(RenewOutcome::Renewed(device))
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
        let (server, session) = (
            session.map(|session| session.server.to_owned()),
            session.map(|session| session.id),
        );
        self.call(move |inner| {
            let mut connection = inner.lock();
            let tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| inner.db(e))?;
            let row: Option<(String, Option<String>)> = tx
                .query_row(
                    "SELECT serial, previous_serial FROM devices WHERE unit_id = ?1",
                    [unit_id.as_str()],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(|e| inner.db(e))?;
            let Some((current, previous)) = row else {
                return Ok(false);
            };
            let record = renewal::Record {
                serial: &current,
                previous_serial: previous.as_deref(),
                public_key: &[],
            };
            let forget_previous = match renewal::held(&serial, &record) {
                renewal::Held::Current => true,
                renewal::Held::Previous => false,
                renewal::Held::Neither => return Ok(false),
            };
            tx.execute(
                "UPDATE devices SET last_seen = ?1, inventory = coalesce(?2, inventory),
                   previous_serial = CASE WHEN ?3 THEN NULL ELSE previous_serial END,
                   online_server = coalesce(?5, online_server),
                   online_session = coalesce(?6, online_session)
                 WHERE unit_id = ?4",
                params![
                    now(),
                    inventory,
                    forget_previous,
                    unit_id.as_str(),
                    server,
                    session
                ],
            )
            .map_err(|e| inner.db(e))?;
            tx.commit().map_err(|e| inner.db(e))?;
            Ok(true)
        })
        .await
    }

    async fn devices(&self, page: &PageRequest<UnitId>) -> Result<Vec<DeviceRecord>, StoreError> {
        // The condition is there only with a start, so the planner seeks the primary key to it.
        let (condition, values): (&str, Vec<String>) = match &page.after {
            Some(unit) => (" WHERE unit_id > ?1", vec![unit.as_str().to_owned()]),
            None => ("", Vec::new()),
        };
        let sql = format!(
            "SELECT {DEVICE_COLUMNS}, online_server FROM devices{condition} ORDER BY unit_id LIMIT {}",
            limit(page.limit)
        );
        self.call(move |inner| {
            let connection = inner.lock();
            let mut statement = connection.prepare_cached(&sql).map_err(|e| inner.db(e))?;
            let rows = statement
                .query_map(params_from_iter(values), device_from_row)
                .map_err(|e| inner.db(e))?;
            rows.collect::<Result<_, _>>().map_err(|e| inner.db(e))
        })
        .await
    }

    async fn device(&self, unit_id: &UnitId) -> Result<Option<DeviceRecord>, StoreError> {
        let unit_id = unit_id.clone();
        self.call(move |inner| {
            inner
                .lock()
                .prepare_cached(&format!(
                    "SELECT {DEVICE_COLUMNS}, online_server FROM devices WHERE unit_id = ?1"
                ))
                .map_err(|e| inner.db(e))?
                .query_row([unit_id.as_str()], device_from_row)
                .optional()
                .map_err(|e| inner.db(e))
        })
        .await
    }

    async fn count_devices(&self) -> Result<u64, StoreError> {
        self.call(|inner| {
            let counted: i64 = inner
                .lock()
                .query_row("SELECT count(*) FROM devices", [], |row| row.get(0))
                .map_err(|e| inner.db(e))?;
            Ok(count(counted))
        })
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
                    params![now(), unit_id.as_str(), server, id],
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
                        params![server, seen_now, now()],
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
                let online: Option<Option<String>> = tx
                    .query_row(
                        "SELECT online_server FROM devices WHERE unit_id = ?1",
                        [unit_id.as_str()],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(|e| inner.db(e))?;
                let Some(online) = online else {
                    return Err(StoreError::NotFound(Missing::Device(unit_id.clone())));
                };
                if let Some(server) = &online {
                    tx.execute(
                        "INSERT INTO device_commands (server, unit_id, command, queued_at)
                         VALUES (?1, ?2, ?3, ?4)",
                        params![server, unit_id.as_str(), command, now()],
                    )
                    .map_err(|e| inner.db(e))?;
                }
                let mut entry = AuditEntry::new("devices.command", &actor);
                entry.unit_id = Some(unit_id.to_string());
                if online.is_none() {
                    "offline".clone_into(&mut entry.outcome);
                }
                entry.detail = command.clone();
                audit_in(tx, &entry).map_err(|e| inner.db(e))?;
                Ok(online)
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
            let mut connection = inner.lock();
            let tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| inner.db(e))?;
            let online: Option<Option<String>> = tx
                .query_row(
                    "DELETE FROM devices WHERE unit_id = ?1 RETURNING online_server",
                    [unit_id.as_str()],
                    |row| row.get(0),
                )
                .optional()
                .map_err(|e| inner.db(e))?;
            let Some(online) = online else {
                return Err(StoreError::NotFound(Missing::Device(unit_id)));
            };
            // The session of a deleted device is closed by the server holding it.
            if let Some(server) = online {
                tx.execute(
                    "INSERT INTO device_commands (server, unit_id, command, queued_at)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![server, unit_id.as_str(), DISCONNECT, now()],
                )
                .map_err(|e| inner.db(e))?;
            }
            let mut entry = AuditEntry::new("devices.delete", &actor);
            entry.unit_id = Some(unit_id.to_string());
            audit_in(&tx, &entry).map_err(|e| inner.db(e))?;
            tx.commit().map_err(|e| inner.db(e))
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
        let (sql, values) = keyset_select(
            AUDIT_COLUMNS,
            "audit",
            audit_where(filter),
            page,
            filter.newest_first,
        );
        self.call(move |inner| {
            let connection = inner.lock();
            let mut statement = connection.prepare_cached(&sql).map_err(|e| inner.db(e))?;
            let rows = statement
                .query_map(params_from_iter(values), audit_from_row)
                .map_err(|e| inner.db(e))?;
            rows.collect::<Result<_, _>>().map_err(|e| inner.db(e))
        })
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
        self.count_rows("audit", audit_where(filter)).await
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

    async fn unsealed_admin_rows(&self) -> Result<super::UnsealedRows, StoreError> {
        self.unsealed_rows().await
    }

    async fn seal_admin_rows(
        &self,
        key: Arc<crate::row_mac::RowKey>,
        why: &str,
        actor: &Actor,
    ) -> Result<super::UnsealedRows, StoreError> {
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
        // One machine holds the file: its clock is the database's.
        Ok(OffsetDateTime::from_unix_timestamp(now()).unwrap_or(OffsetDateTime::UNIX_EPOCH))
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
mod tests {
    use super::*;

    fn key(lookup: u8, kind: KeyKind, generated: bool) -> super::super::NewKey {
        super::super::NewKey {
            kind,
            lookup: [lookup; 32],
            sealed: vec![lookup],
            unit_id: (kind == KeyKind::DeviceBound).then(|| "00E0C5540B8B".parse().unwrap()),
            comment: String::new(),
            generated,
        }
    }

    fn all(store: &SqliteStore) -> Vec<StoredKey> {
        block(store.keys(&KeyFilter::default(), &PageRequest::all()))
    }

    /// Runs a store future to completion on a runtime of its own.
    fn try_block<T>(
        future: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    /// The same, for a call that must succeed.
    fn block<T>(future: impl std::future::Future<Output = Result<T, StoreError>>) -> T {
        try_block(future).unwrap()
    }

    fn insert(store: &SqliteStore, count: usize, make: MakeKey) -> Result<Vec<KeyId>, StoreError> {
        try_block(store.insert_keys(count, make, Box::new(|_| {}), &Actor::cli()))
    }

    #[test]
    fn migrates_once_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), 8);
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), 8);
        store.integrity_check().unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
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
            error.contains("schema version 99")
                && error.contains("db.sqlite")
                && error.contains("upgrade ums-stub"),
            "{error}"
        );
    }

    #[test]
    fn an_older_database_gets_the_statuses_the_claim_rule_decides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        {
            // A database at schema version 2, as an earlier ums-stub left it.
            let connection = Connection::open(&path).unwrap();
            connection
                .execute_batch(
                    "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL);
                     INSERT INTO schema_migrations VALUES (1, 0), (2, 0);",
                )
                .unwrap();
            connection.execute_batch(MIGRATIONS[0].1).unwrap();
            connection.execute_batch(MIGRATIONS[1].1).unwrap();
            connection
                .execute_batch(
                    "INSERT INTO keys (id, kind, lookup, sealed, active, usage_count, created_at) VALUES
                       (1, 'one-time', zeroblob(32), x'00', 1, 1, 0),
                       (2, 'mass', randomblob(32), x'00', 1, 3, 0),
                       (3, 'one-time', randomblob(32), x'00', 0, 0, 0);
                     INSERT INTO audit (at, event, unit_id, source, outcome) VALUES
                       (0, 'keys.create', NULL, 'cli', 'ok'),
                       (0, 'enroll', '00E0C5540B8B', '127.0.0.1', 'ok');",
                )
                .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let statuses: Vec<_> = all(&store).iter().map(|k| k.status).collect();
        assert_eq!(
            statuses,
            [KeyStatus::Used, KeyStatus::Active, KeyStatus::Inactive]
        );
        let log = block(store.audit(&AuditFilter::default(), &PageRequest::all()));
        assert_eq!(
            log.iter()
                .map(|e| (e.actor.as_str(), e.source.as_str()))
                .collect::<Vec<_>>(),
            [("cli", "local"), ("00E0C5540B8B", "127.0.0.1")]
        );
    }

    #[test]
    fn accounts_that_could_export_still_can_and_the_migrating_open_may_seal_old_rows() {
        use onboard_protocol::admin::Right;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        {
            // A database at schema version 7, as the release before keys:export left it.
            let connection = Connection::open(&path).unwrap();
            connection
                .execute_batch(
                    "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL);
                     INSERT INTO schema_migrations VALUES (1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (6, 0), (7, 0);",
                )
                .unwrap();
            for (_, migration) in &MIGRATIONS[..7] {
                connection.execute_batch(migration).unwrap();
            }
            connection
                .execute_batch(
                    "INSERT INTO accounts VALUES ('writer', '$argon2id$w', 'keys:read,keys:write', 0, 0),
                                                 ('reader', '$argon2id$r', 'keys:read', 0, 0);
                     INSERT INTO tokens VALUES ('0123456789ab', zeroblob(32), 'writer', 'rig', 'keys:write', 0, NULL);
                     INSERT INTO sessions VALUES (zeroblob(32), 'reader', 0, 4102444800);",
                )
                .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let writer = block(store.account("writer")).unwrap();
        assert_eq!(
            writer.rights,
            [Right::KeysRead, Right::KeysWrite, Right::KeysExport]
        );
        assert_eq!(writer.mac, None);
        assert_eq!(
            block(store.account("reader")).unwrap().rights,
            [Right::KeysRead]
        );
        assert_eq!(
            block(store.token("0123456789ab")).unwrap().rights,
            [Right::KeysWrite, Right::KeysExport]
        );
        assert_eq!(block(store.session(&[0; 32])), None, "sessions end");
        let audit = block(store.audit(&AuditFilter::default(), &PageRequest::all()));
        assert_eq!(audit.len(), 1, "{audit:?}");
        assert!(audit[0].detail.contains("account writer"), "{audit:?}");

        // This open applied the row-MAC migration: it may seal them, and seals them all.
        assert!(store.migrated_row_macs_now());
        let key = Arc::new(crate::row_mac::RowKey::derive(b"this UMS ID"));
        let sealed = block(store.seal_admin_rows(key.clone(), "at the upgrade", &Actor::cli()));
        assert_eq!((sealed.accounts.len(), sealed.tokens.len()), (2, 1));
        assert!(key.account_ok(&block(store.account("writer")).unwrap()));
        assert!(key.token_ok(&block(store.token("0123456789ab")).unwrap()));
        // Any later open did not migrate: it seals nothing on its own.
        drop(store);
        assert!(!SqliteStore::open(&path).unwrap().migrated_row_macs_now());
    }

    #[test]
    fn a_clash_redraws_generated_values_and_refuses_typed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        insert(&store, 1, Box::new(|_| key(1, KeyKind::OneTime, true))).unwrap();
        // The first draw clashes with the existing digest, the second does not.
        let mut draws = [1u8, 2].into_iter();
        let ids = insert(
            &store,
            1,
            Box::new(move |_| key(draws.next().unwrap(), KeyKind::OneTime, true)),
        )
        .unwrap();
        assert_eq!(ids.len(), 1);
        let refused = insert(
            &store,
            1,
            Box::new(|_| key(2, KeyKind::MassDeployment, false)),
        );
        assert!(
            matches!(refused, Err(StoreError::Conflict(_))),
            "{refused:?}"
        );
        assert_eq!(all(&store).len(), 2);
    }

    #[test]
    fn batch_operations_are_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let ids = insert(
            &store,
            3,
            Box::new(|i| key(i as u8 + 10, KeyKind::OneTime, true)),
        )
        .unwrap();
        let refused =
            try_block(store.set_active(&[ids[0], 999, ids[1]], false, &Actor::cli())).unwrap_err();
        assert!(
            matches!(&refused, StoreError::NotFound(Missing::Keys(missing)) if missing == &vec![999])
        );
        assert!(all(&store).iter().all(|k| k.active));
        assert!(matches!(
            try_block(store.delete_keys(&[ids[2], 998], &Actor::cli())),
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(all(&store).len(), 3);
        // A batch that fails half-way leaves nothing behind.
        let partial = insert(
            &store,
            3,
            Box::new(|i| {
                if i == 2 {
                    key(10, KeyKind::MassDeployment, false)
                } else {
                    key(i as u8 + 50, KeyKind::OneTime, true)
                }
            }),
        );
        assert!(partial.is_err());
        assert_eq!(all(&store).len(), 3);
    }

    #[test]
    fn status_filter_matches_the_stored_status() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let kinds = [
            KeyKind::OneTime,
            KeyKind::MassDeployment,
            KeyKind::DeviceBound,
        ];
        let ids = insert(
            &store,
            3,
            Box::new(move |i| key(i as u8 + 1, kinds[i], true)),
        )
        .unwrap();
        // Used as the enrollment path uses them: through the claim rule's status.
        {
            let connection = store.inner.lock();
            for (id, kind) in [
                (ids[0], KeyKind::OneTime),
                (ids[1], KeyKind::MassDeployment),
            ] {
                connection
                    .execute(
                        "UPDATE keys SET usage_count = 1, status = ?1 WHERE id = ?2",
                        params![claim::status(kind, true, 1).as_str(), id],
                    )
                    .unwrap();
            }
        }
        block(store.set_active(&[ids[0], ids[2]], false, &Actor::cli()));
        let status = |status| {
            block(store.keys(
                &KeyFilter {
                    status: Some(status),
                    ..KeyFilter::default()
                },
                &PageRequest::all(),
            ))
            .iter()
            .map(|k| (k.id, k.status))
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

    #[test]
    fn pages_follow_the_keyset_and_count_the_filter() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let kinds = [KeyKind::OneTime, KeyKind::MassDeployment];
        let ids = insert(
            &store,
            10,
            Box::new(move |i| key(i as u8 + 1, kinds[i % 2], true)),
        )
        .unwrap();
        let one_time = KeyFilter {
            kind: Some(KeyKind::OneTime),
            ..KeyFilter::default()
        };
        let page = |after| {
            block(store.keys(&one_time, &PageRequest { limit: 2, after }))
                .iter()
                .map(|k| k.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(page(None), [ids[0], ids[2]]);
        assert_eq!(page(Some(ids[2])), [ids[4], ids[6]]);
        assert_eq!(page(Some(ids[6])), [ids[8]]);
        assert_eq!(page(Some(ids[8])), Vec::<KeyId>::new());
        assert_eq!(block(store.count_keys(&one_time)), 5);
        assert_eq!(block(store.count_keys(&KeyFilter::default())), 10);
    }

    #[test]
    fn the_database_keeps_the_ums_id_it_was_made_under() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let first = Fingerprint::from_bytes([1; 32]);
        let second = Fingerprint::from_bytes([2; 32]);
        let store = SqliteStore::open(&path).unwrap();
        block(store.bind_ums_id(&first));
        block(store.bind_ums_id(&first));
        let refused = try_block(store.bind_ums_id(&second)).unwrap_err();
        let message = refused.to_string();
        assert!(
            message.contains(&first.to_string())
                && message.contains(&second.to_string())
                && message.contains("db.sqlite")
                && message.contains("ums-stub ums-id restore"),
            "{message}"
        );
    }
}
