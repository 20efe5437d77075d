//! The PostgreSQL store, for several servers sharing one database (`database = "postgres://…"`).
//!
//! The same [`Store`] as SQLite, over a pool of tokio-postgres connections. The flows that apply
//! a decision are the store's own (`apply.rs`); this backend gives them their row operations
//! (`postgres/transaction.rs`) and how it begins, locks and commits. Every server is active:
//! exactly-once holds across them because an enrollment locks its unit ID (a transaction
//! advisory lock) and its key rows (`SELECT … FOR UPDATE`) before [`crate::claim::decide`] is
//! asked, and the guarded `UPDATE` stays behind that as in SQLite. A write that may wait for the
//! next sync ([`Durability`]) commits with `synchronous_commit` off. Migrations
//! (`postgres/migrations/*.sql`) run once, under an advisory lock, and a schema newer than this
//! program is refused. Times are seconds since the epoch, as in SQLite, so the two copy into each
//! other unchanged.

use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use onboard_protocol::admin::{KeyId, KeyStatus};
use onboard_protocol::{Fingerprint, Folder, KeyKind, UnitId};
use time::OffsetDateTime;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::apply::{self, KeyEdit};
use super::durability::Durability;
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
use crate::ca::IssueOnce;
use crate::claim;
use crate::cluster::MainUmsId;
use crate::rig::clock::Clock;
use crate::vault::LookupDigest;

/// Migrations, applied in order; a database records the highest it has.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("postgres/migrations/0001_schema.sql")),
    (2, include_str!("postgres/migrations/0002_cluster.sql")),
    (3, include_str!("postgres/migrations/0003_connector.sql")),
    (
        4,
        include_str!("postgres/migrations/0004_row_macs_keys_export.sql"),
    ),
    (
        5,
        include_str!("postgres/migrations/0005_key_limits_folders.sql"),
    ),
];

/// The migration that added row MACs ([`crate::row_mac`]).
const ROW_MAC_MIGRATION: i64 = 4;

/// The advisory lock key migrations run under (any constant shared by every server).
const MIGRATION_LOCK: i64 = 0x756d_735f_7374_7562; // "ums_stub"

/// How long to wait for the database (a connection, or one from the pool) before answering
/// `unavailable`.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connections per server.
const POOL_SIZE: usize = 16;

/// The `store_meta` row naming the UMS ID the database belongs to.
const META_UMS_ID: &str = "ums_id_fingerprint";

mod accounts;
mod dump;
mod transaction;

pub use dump::Dump;
use transaction::PgTx;

/// A PostgreSQL database.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// The URL without its password, for messages.
    shown: Arc<String>,
    /// Whether this open applied the row-MAC migration ([`Store::migrated_row_macs_now`]).
    migrated_row_macs: bool,
    /// The server's clock: its offset (moved only in test-rig mode) is added to the database's
    /// clock, and its now stamps the times this server records.
    clock: Clock,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgresStore({})", self.shown)
    }
}

/// `url` as it may be shown: user, host, port and database, never a password.
pub(super) fn shown_url(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

/// Whether every host of `config` is this machine (a Unix socket or a loopback address): only
/// then is a database link without TLS not worth a warning.
fn only_local_hosts(config: &tokio_postgres::Config) -> bool {
    use tokio_postgres::config::Host;
    let named = config.get_hosts().iter().all(|host| match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name.eq_ignore_ascii_case("localhost")
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|address| address.is_loopback())
        }
    });
    let addressed = config
        .get_hostaddrs()
        .iter()
        .all(std::net::IpAddr::is_loopback);
    named && addressed
}

/// A TLS client configuration trusting the CA certificates in `path` only.
fn tls_config(path: &std::path::Path) -> Result<rustls::ClientConfig, String> {
    let shown = path.display();
    let text = std::fs::read(path).map_err(|error| format!("database_ca_file {shown}: {error}"))?;
    let certificates =
        pem::parse_many(&text).map_err(|error| format!("database_ca_file {shown}: {error}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates
        .iter()
        .filter(|block| block.tag() == "CERTIFICATE")
    {
        roots
            .add(certificate.contents().to_vec().into())
            .map_err(|error| format!("database_ca_file {shown}: {error}"))?;
    }
    if roots.is_empty() {
        return Err(format!("database_ca_file {shown}: holds no certificate"));
    }
    rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())
        .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
}

type Values<'a> = Vec<Box<dyn ToSql + Sync + Send + 'a>>;

fn refs<'a>(values: &'a Values<'_>) -> Vec<&'a (dyn ToSql + Sync)> {
    values
        .iter()
        .map(|value| value.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

fn count(stored: i64) -> u64 {
    u64::try_from(stored).unwrap_or(0)
}

impl PostgresStore {
    /// Connects to the database at `url` (in plain TCP) and applies pending migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, None).await
    }

    /// Connects to the database at `url`, over TLS verified against the CA certificates in
    /// `ca_file` (PEM) when one is given (the URL's `sslmode=require` then insists on it), and
    /// applies pending migrations.
    pub async fn open_with(
        url: &str,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|_| StoreError::Backend {
            database: "the database URL".to_owned(),
            // The URL is not echoed: it may hold a password.
            source: "it is not a PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE)"
                .into(),
        })?;
        let shown = Arc::new(shown_url(&config));
        if ca_file.is_none() && !only_local_hosts(&config) {
            // Account rows carry MACs, but passwords at login and key values in exports do not
            // cross this link; the rows themselves and the server's queries do.
            tracing::warn!(
                database = %shown,
                "the PostgreSQL database is on another host and reached without TLS: anyone on the \
                 path reads and changes what the servers store; name its CA with database_ca_file"
            );
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if ca_file.is_some() {
            // With a CA to check the server against, a plain connection is never acceptable:
            // `prefer` would let a machine in the middle answer "no TLS".
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match ca_file {
            None => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
            Some(path) => Manager::from_config(
                config,
                tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(path).map_err(
                    |reason| StoreError::Backend {
                        database: shown.to_string(),
                        source: reason.into(),
                    },
                )?),
                manager_config,
            ),
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|error| StoreError::Backend {
                database: shown.to_string(),
                source: Box::new(error),
            })?;
        let mut store = Self {
            pool,
            shown,
            migrated_row_macs: false,
            clock: Clock::system(),
        };
        store.migrated_row_macs = store.migrate().await?;
        Ok(store)
    }

    /// The same store, measuring by `clock` (the server's, which a rig may move): its now stamps
    /// what this server records, and its offset moves the database's clock that expiries and
    /// heartbeats are measured by.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Now by the server's clock, whole seconds since the epoch, as rows store times.
    fn now(&self) -> i64 {
        self.clock.now().unix_timestamp()
    }

    /// How far the server's clock is moved, whole seconds: added to the database's `now()` in SQL,
    /// so servers sharing the database keep measuring by one clock.
    fn offset_seconds(&self) -> i64 {
        self.clock.offset().whole_seconds()
    }

    fn db(&self, error: tokio_postgres::Error) -> StoreError {
        if error.is_closed() || error.code().is_none() && error.as_db_error().is_none() {
            return StoreError::Unavailable(format!("{}: {error}", self.shown));
        }
        StoreError::Backend {
            database: self.shown.to_string(),
            source: Box::new(error),
        }
    }

    fn corrupt(&self, reason: String) -> StoreError {
        StoreError::Corrupt {
            database: self.shown.to_string(),
            reason,
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|error| StoreError::Unavailable(format!("{}: {error}", self.shown)))
    }

    /// The schema version the database is at.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT coalesce(max(version), 0) FROM schema_migrations",
                &[],
            )
            .await
            .map_err(|e| self.db(e))?;
        Ok(row.get(0))
    }

    /// Applies pending migrations in one transaction, under a lock every server takes; says
    /// whether the row-MAC one was among them (so only one server's open ever applied it).
    async fn migrate(&self) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| self.db(e))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .await
        .map_err(|e| self.db(e))?;
        let current: i64 = tx
            .query_one(
                "SELECT coalesce(max(version), 0) FROM schema_migrations",
                &[],
            )
            .await
            .map_err(|e| self.db(e))?
            .get(0);
        let known = MIGRATIONS.last().map_or(0, |(version, _)| *version);
        if current > known {
            return Err(StoreError::SchemaTooNew {
                database: self.shown.to_string(),
                found: current,
                known,
            });
        }
        for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > current) {
            tx.batch_execute(sql).await.map_err(|e| self.db(e))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                &[version, &self.now()],
            )
            .await
            .map_err(|e| self.db(e))?;
        }
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(current < ROW_MAC_MIGRATION)
    }

    fn kind(&self, id: KeyId, text: &str) -> Result<KeyKind, StoreError> {
        text.parse()
            .map_err(|_| self.corrupt(format!("key {id} with an unknown kind")))
    }

    fn time(&self, seconds: i64) -> Result<OffsetDateTime, StoreError> {
        OffsetDateTime::from_unix_timestamp(seconds)
            .map_err(|_| self.corrupt(format!("a time out of range ({seconds})")))
    }

    fn key_from_row(&self, row: &Row) -> Result<StoredKey, StoreError> {
        let id: KeyId = row.get(0);
        let status: String = row.get(6);
        Ok(StoredKey {
            id,
            kind: self.kind(id, row.get(1))?,
            lookup: row
                .get::<_, Vec<u8>>(2)
                .try_into()
                .map_err(|_| self.corrupt(format!("key {id} with a malformed digest")))?,
            sealed: row.get(3),
            unit_id: row
                .get::<_, Option<String>>(4)
                .map(|text| text.parse::<UnitId>())
                .transpose()
                .map_err(|_| self.corrupt(format!("key {id} with a malformed unit ID")))?,
            active: row.get(5),
            status: status
                .parse::<KeyStatus>()
                .map_err(|_| self.corrupt(format!("key {id} with an unknown status")))?,
            usage_count: count(row.get(7)),
            usage_date: row
                .get::<_, Option<i64>>(8)
                .map(|at| self.time(at))
                .transpose()?,
            comment: row.get(9),
            created_at: self.time(row.get(10))?,
            limits: claim::Limits {
                not_before: row
                    .get::<_, Option<i64>>(11)
                    .map(|at| self.time(at))
                    .transpose()?,
                expires_at: row
                    .get::<_, Option<i64>>(12)
                    .map(|at| self.time(at))
                    .transpose()?,
                usage_limit: row.get::<_, Option<i64>>(13).map(count),
            },
            folder: self.folder(row.get(14))?,
        })
    }

    fn folder(&self, stored: Option<String>) -> Result<Option<Folder>, StoreError> {
        stored
            .map(|text| text.parse::<Folder>())
            .transpose()
            .map_err(|_| self.corrupt("a malformed folder".to_owned()))
    }

    fn device_from_row(&self, row: &Row) -> Result<DeviceRecord, StoreError> {
        let unit: String = row.get(0);
        Ok(DeviceRecord {
            unit_id: unit
                .parse()
                .map_err(|_| self.corrupt("a device with a malformed unit ID".to_owned()))?,
            public_key: row.get(1),
            certificate: row.get(2),
            serial: row.get(3),
            not_after: self.time(row.get(4))?,
            key_id: row.get(5),
            key_kind: self.kind(0, row.get(6))?,
            enrolled_at: self.time(row.get(7))?,
            last_seen: self.time(row.get(8))?,
            inventory: row.get(9),
            previous_serial: row.get(10),
            folder: self.folder(row.get(11))?,
            online_server: row.get(12),
        })
    }

    fn audit_from_row(&self, row: &Row) -> Result<AuditEntry, StoreError> {
        Ok(AuditEntry {
            id: row.get(0),
            at: self.time(row.get(1))?,
            event: row.get(2),
            actor: row.get(3),
            source: row.get(4),
            unit_id: row.get(5),
            key_id: row.get(6),
            outcome: row.get(7),
            detail: row.get(8),
            via: None,
        })
    }

    /// The row operations of `tx`, a transaction on this database.
    fn tx<'t, 'c>(&'t self, tx: &'t deadpool_postgres::Transaction<'c>) -> PgTx<'t, 'c> {
        PgTx {
            tx,
            store: self,
            locks: true,
        }
    }

    /// Applies `edit` to the keys `ids` in one transaction ([`apply::change_keys`]).
    async fn change_keys(
        &self,
        ids: &[KeyId],
        edit: KeyEdit,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        apply::change_keys(&mut self.tx(&tx), ids, &edit, actor).await?;
        tx.commit().await.map_err(|e| self.db(e))
    }

    async fn rows(&self, sql: &str, values: &Values<'_>) -> Result<Vec<Row>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(|e| self.db(e))?;
        client
            .query(&statement, &refs(values))
            .await
            .map_err(|e| self.db(e))
    }

    /// The rows a `SELECT` of a list (its text and values, [`query`]) gives.
    async fn select(&self, (sql, values): (String, Vec<Value>)) -> Result<Vec<Row>, StoreError> {
        self.rows(&sql, &bind(values)).await
    }

    /// The count a `SELECT count(*)` (its text and values, [`query`]) gives.
    async fn count_of(&self, select: (String, Vec<Value>)) -> Result<u64, StoreError> {
        Ok(count(self.select(select).await?[0].get(0)))
    }
}

/// Commits `tx`; a write that may wait for the next sync ([`Durability::Deferred`]) is committed
/// with `synchronous_commit` off, so it does not wait for its WAL flush.
async fn commit_with(
    tx: deadpool_postgres::Transaction<'_>,
    durability: Durability,
) -> Result<(), tokio_postgres::Error> {
    if durability == Durability::Deferred {
        tx.batch_execute("SET LOCAL synchronous_commit = off")
            .await?;
    }
    tx.commit().await
}

/// Appends an audit line inside `tx`.
async fn audit_in(
    tx: &deadpool_postgres::Transaction<'_>,
    entry: &AuditEntry,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO audit (at, event, actor, source, unit_id, key_id, outcome, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &entry.at.unix_timestamp(),
            &entry.event,
            &entry.actor,
            &entry.source,
            &entry.unit_id,
            &entry.key_id,
            &entry.outcome,
            &entry.stored_detail(),
        ],
    )
    .await
    .map(drop)
}

/// The values of a list's parameters as tokio-postgres binds them.
fn bind(values: Vec<Value>) -> Values<'static> {
    values
        .into_iter()
        .map(|value| -> Box<dyn ToSql + Sync + Send> {
            match value {
                Value::Int(number) => Box::new(number),
                Value::Text(text) => Box::new(text),
                Value::Ids(ids) => Box::new(ids),
            }
        })
        .collect()
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn ums_id(&self) -> Result<Option<Fingerprint>, StoreError> {
        let rows = self
            .rows(
                "SELECT value FROM store_meta WHERE name = $1",
                &vec![Box::new(META_UMS_ID.to_owned())],
            )
            .await?;
        rows.first()
            .map(|row| {
                row.get::<_, String>(0).parse().map_err(|_| {
                    self.corrupt("a UMS ID fingerprint that cannot be read".to_owned())
                })
            })
            .transpose()
    }

    async fn bind_ums_id(&self, ums_id: &Fingerprint) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        tx.execute(
            "INSERT INTO store_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&META_UMS_ID, &ums_id.to_string()],
        )
        .await
        .map_err(|e| self.db(e))?;
        let stored: String = tx
            .query_one(
                "SELECT value FROM store_meta WHERE name = $1",
                &[&META_UMS_ID],
            )
            .await
            .map_err(|e| self.db(e))?
            .get(0);
        let stored: Fingerprint = stored
            .parse()
            .map_err(|_| self.corrupt("a UMS ID fingerprint that cannot be read".to_owned()))?;
        if stored != *ums_id {
            return Err(StoreError::OtherUmsId {
                database: self.shown.to_string(),
                stored,
                ours: *ums_id,
            });
        }
        tx.commit().await.map_err(|e| self.db(e))
    }

    async fn insert_keys(
        &self,
        count: usize,
        mut make: MakeKey,
        progress: Progress,
        actor: &Actor,
    ) -> Result<Vec<KeyId>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        let ids = apply::insert_keys(
            &mut self.tx(&tx),
            count,
            &mut make,
            &progress,
            actor,
            self.clock.now(),
        )
        .await?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(ids)
    }

    async fn keys(
        &self,
        filter: &KeyFilter,
        page: &PageRequest<KeyId>,
    ) -> Result<Vec<StoredKey>, StoreError> {
        self.select(query::keys_page(Dialect::Postgres, filter, page))
            .await?
            .iter()
            .map(|row| self.key_from_row(row))
            .collect()
    }

    async fn count_keys(&self, filter: &KeyFilter) -> Result<u64, StoreError> {
        self.count_of(query::keys_count(Dialect::Postgres, filter))
            .await
    }

    async fn key_listing(
        &self,
        listing: &KeyListing,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<StoredKey>, StoreError> {
        self.select(query::key_listing_page(
            Dialect::Postgres,
            listing,
            offset,
            limit,
        ))
        .await?
        .iter()
        .map(|row| self.key_from_row(row))
        .collect()
    }

    async fn count_key_listing(&self, listing: &KeyListing) -> Result<u64, StoreError> {
        self.count_of(query::key_listing_count(Dialect::Postgres, listing))
            .await
    }

    async fn set_comment(&self, id: KeyId, comment: &str, actor: &Actor) -> Result<(), StoreError> {
        self.change_keys(&[id], KeyEdit::Comment(comment.to_owned()), actor)
            .await
    }

    async fn edit_key(&self, id: KeyId, patch: KeyPatch, actor: &Actor) -> Result<(), StoreError> {
        self.change_keys(&[id], KeyEdit::Patch(patch), actor).await
    }

    async fn set_active(
        &self,
        ids: &[KeyId],
        active: bool,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        self.change_keys(ids, KeyEdit::Active(active), actor).await
    }

    async fn delete_keys(&self, ids: &[KeyId], actor: &Actor) -> Result<(), StoreError> {
        self.change_keys(ids, KeyEdit::Delete, actor).await
    }

    async fn key_kind(&self, lookup: &LookupDigest) -> Result<Option<KeyKind>, StoreError> {
        let rows = self
            .rows(
                "SELECT kind FROM keys WHERE lookup = $1",
                &vec![Box::new(lookup.to_vec())],
            )
            .await?;
        rows.first()
            .map(|row| {
                let text: String = row.get(0);
                text.parse()
                    .map_err(|_| self.corrupt(format!("a key of the unknown type {text:?}")))
            })
            .transpose()
    }

    async fn known_keys(&self, lookups: &[LookupDigest]) -> Result<Vec<bool>, StoreError> {
        let all: Vec<Vec<u8>> = lookups.iter().map(|lookup| lookup.to_vec()).collect();
        let client = self.client().await?;
        let rows = client
            .query("SELECT lookup FROM keys WHERE lookup = ANY($1)", &[&all])
            .await
            .map_err(|e| self.db(e))?;
        let found: std::collections::HashSet<Vec<u8>> =
            rows.iter().map(|row| row.get::<_, Vec<u8>>(0)).collect();
        Ok(all.iter().map(|lookup| found.contains(lookup)).collect())
    }

    async fn enroll(
        &self,
        attempt: EnrollAttempt,
        issue: IssueOnce,
    ) -> Result<EnrollOutcome, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        // The locks below serialise the attempts; each must then read what the one before it
        // committed, whatever isolation the database defaults to.
        tx.batch_execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .await
            .map_err(|e| self.db(e))?;
        // One attempt per unit ID at a time, on every server; then the key row, locked.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&attempt.unit_id.as_str()],
        )
        .await
        .map_err(|e| self.db(e))?;
        // Several keys in one attempt: their rows are locked up front, in one order for every
        // transaction (by ID), so that attempts holding overlapping keys cannot deadlock.
        if !attempt.alternates.is_empty() {
            let all: Vec<Vec<u8>> = std::iter::once(&attempt.lookup)
                .chain(&attempt.alternates)
                .map(|lookup| lookup.to_vec())
                .collect();
            tx.execute(
                "SELECT id FROM keys WHERE lookup = ANY($1) ORDER BY id FOR UPDATE",
                &[&all],
            )
            .await
            .map_err(|e| self.db(e))?;
        }
        let outcome = apply::enroll(&mut self.tx(&tx), &attempt, issue, self.clock.now()).await?;
        commit_with(tx, outcome.durability())
            .await
            .map_err(|e| self.db(e))?;
        Ok(outcome)
    }

    async fn check_keys(&self, check: &KeyCheck) -> Result<Vec<CheckedKey>, StoreError> {
        let mut client = self.client().await?;
        // Read-only and one snapshot for the keys and the device; no row is locked, so a check
        // neither waits for an enrollment nor holds one up (and the database itself refuses any
        // write in it).
        let tx = client
            .build_transaction()
            .read_only(true)
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .start()
            .await
            .map_err(|e| self.db(e))?;
        let mut reader = PgTx {
            tx: &tx,
            store: self,
            locks: false,
        };
        let checked = apply::check(&mut reader, check, self.clock.now()).await?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(checked)
    }

    async fn renew(
        &self,
        request: RenewalRequest,
        actor: &Actor,
        issue: IssueOnce,
    ) -> Result<RenewOutcome, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        let now = self.clock.now();
        let outcome = apply::renew(&mut self.tx(&tx), request, actor, issue, now).await?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(outcome)
    }

    async fn touch_device(
        &self,
        unit_id: &UnitId,
        serial: &str,
        inventory: Option<&str>,
        session: Option<SessionRef<'_>>,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        let now = self.clock.now();
        let held =
            apply::touch(&mut self.tx(&tx), unit_id, serial, inventory, session, now).await?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(held)
    }

    async fn devices_matching(
        &self,
        filter: &DeviceFilter,
        page: &PageRequest<UnitId>,
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        let rows = self
            .select(query::devices_page(Dialect::Postgres, filter, page))
            .await?;
        rows.iter().map(|row| self.device_from_row(row)).collect()
    }

    async fn device(&self, unit_id: &UnitId) -> Result<Option<DeviceRecord>, StoreError> {
        let rows = self
            .rows(
                concat!(device_select!(), " WHERE unit_id = $1"),
                &vec![Box::new(unit_id.as_str().to_owned())],
            )
            .await?;
        rows.first()
            .map(|row| self.device_from_row(row))
            .transpose()
    }

    async fn count_devices_matching(&self, filter: &DeviceFilter) -> Result<u64, StoreError> {
        self.count_of(query::devices_count(Dialect::Postgres, filter))
            .await
    }

    async fn device_offline(
        &self,
        unit_id: &UnitId,
        session: SessionRef<'_>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE devices SET online_server = NULL, online_session = NULL, last_seen = $1
                 WHERE unit_id = $2 AND online_server = $3 AND online_session = $4",
                &[&self.now(), &unit_id.as_str(), &session.server, &session.id],
            )
            .await
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    async fn release_devices(&self, server: &str, seen_now: bool) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        let released = tx
            .execute(
                "UPDATE devices SET online_server = NULL, online_session = NULL,
                   last_seen = CASE WHEN $2 THEN $3 ELSE last_seen END
                 WHERE online_server = $1",
                &[&server, &seen_now, &self.now()],
            )
            .await
            .map_err(|e| self.db(e))?;
        tx.execute("DELETE FROM device_commands WHERE server = $1", &[&server])
            .await
            .map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(released)
    }

    async fn queue_command(
        &self,
        unit_id: &UnitId,
        command: &str,
        actor: &Actor,
    ) -> Result<Option<String>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        let now = self.clock.now();
        let online = apply::queue_command(&mut self.tx(&tx), unit_id, command, actor, now).await?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(online)
    }

    async fn take_commands(&self, server: &str) -> Result<Vec<(UnitId, String)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "DELETE FROM device_commands WHERE server = $1 RETURNING id, unit_id, command",
                &[&server],
            )
            .await
            .map_err(|e| self.db(e))?;
        let mut taken: Vec<(i64, String, String)> = rows
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect();
        taken.sort_by_key(|(id, _, _)| *id);
        Ok(taken
            .into_iter()
            .filter_map(|(_, unit, command)| Some((unit.parse().ok()?, command)))
            .collect())
    }

    async fn delete_device(&self, unit_id: &UnitId, actor: &Actor) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        let now = self.clock.now();
        apply::delete_device(&mut self.tx(&tx), unit_id, actor, now).await?;
        tx.commit().await.map_err(|e| self.db(e))
    }

    async fn record(&self, entry: AuditEntry) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        audit_in(&tx, &entry).await.map_err(|e| self.db(e))?;
        commit_with(tx, entry.durability())
            .await
            .map_err(|e| self.db(e))
    }

    async fn audit(
        &self,
        filter: &AuditFilter,
        page: &PageRequest<i64>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.select(query::audit_page(Dialect::Postgres, filter, page))
            .await?
            .iter()
            .map(|row| self.audit_from_row(row))
            .collect()
    }

    async fn count_audit(&self, filter: &AuditFilter) -> Result<u64, StoreError> {
        self.count_of(query::audit_count(Dialect::Postgres, filter))
            .await
    }

    async fn prune_audit(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM audit WHERE at < $1",
                &[&before.unix_timestamp()],
            )
            .await
            .map_err(|e| self.db(e))
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
        let rows = self
            .rows(
                "SELECT extract(epoch FROM clock_timestamp())::bigint + $1",
                &vec![Box::new(self.offset_seconds())],
            )
            .await?;
        self.time(rows[0].get(0))
    }

    async fn main_ums_id(&self) -> Result<Option<MainUmsId>, StoreError> {
        self.select_main_ums_id().await
    }

    async fn offer_main_ums_id(&self, main: &MainUmsId) -> Result<MainUmsId, StoreError> {
        self.offer_main(main).await
    }

    async fn replace_main_ums_id(&self, main: &MainUmsId, actor: &Actor) -> Result<(), StoreError> {
        self.put_main_ums_id(main, actor).await
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
    use super::only_local_hosts;

    #[test]
    fn only_a_database_on_this_machine_goes_without_tls_unwarned() {
        let table = [
            ("postgres://ums@localhost/ums", true),
            ("postgres://ums@127.0.0.1:5432/ums", true),
            ("postgres://ums@[::1]/ums", true),
            ("postgres://ums@%2Frun%2Fpostgresql/ums", true),
            ("host=/run/postgresql user=ums", true),
            ("postgres://ums@db.example.org/ums", false),
            ("postgres://ums@192.0.2.7/ums", false),
            ("postgres://ums@localhost,db.example.org/ums", false),
            ("host=localhost hostaddr=192.0.2.7 user=ums", false),
        ];
        for (url, local) in table {
            let config: tokio_postgres::Config = url.parse().unwrap();
            assert_eq!(only_local_hosts(&config), local, "{url}");
        }
    }
}
