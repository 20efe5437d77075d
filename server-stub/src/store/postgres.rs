//! The PostgreSQL store, for several servers sharing one database (`database = "postgres://…"`).
//!
//! The same [`Store`] as SQLite, over a pool of tokio-postgres connections. Every server is
//! active: exactly-once holds across them because an enrollment locks its unit ID (a transaction
//! advisory lock) and its key row (`SELECT … FOR UPDATE`) before asking [`crate::claim::decide`],
//! and the guarded `UPDATE` stays behind that as in SQLite. Migrations
//! (`postgres/migrations/*.sql`) run once, under an advisory lock, and a schema newer than this
//! program is refused. Times are seconds since the epoch, as in SQLite, so the two copy into each
//! other unchanged.

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use onboard_protocol::admin::{KeyId, KeyStatus, Right};
use onboard_protocol::{Fingerprint, KeyKind, UnitId};
use time::OffsetDateTime;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::apply::{self, KeyEdit, keep_an_admin};
use super::durability::Durability;
use super::error::{Missing, StoreError};
use super::interface::Store;
use super::query::{AuditFilter, KeyFilter, PageRequest};
use super::rows::{
    AccountChange, AccountRow, Actor, AuditEntry, DeviceRecord, EnrollAttempt, EnrollOutcome,
    MakeKey, Progress, RenewOutcome, RenewalRequest, RowMac, ServerBeat, ServerRow, SessionRef,
    SessionRow, StoredKey, TokenRow, UnsealedRows,
};
use super::tx::{KeyChange, KeyForChange, KeyForClaim, KeyInsert, Seen, Tx};
use crate::ca::{IssueOnce, IssuedCertificate};
use crate::cluster::MainUmsId;
use crate::row_mac::RowKey;
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
];

/// The migration that added row MACs ([`crate::row_mac`]).
const ROW_MAC_MIGRATION: i64 = 4;

/// The advisory lock key migrations run under (any constant shared by every server).
const MIGRATION_LOCK: i64 = 0x756d_735f_7374_7562; // "ums_stub"

/// Keys inserted per statement.
const INSERT_CHUNK: usize = 1000;

/// How long to wait for the database (a connection, or one from the pool) before answering
/// `unavailable`.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connections per server.
const POOL_SIZE: usize = 16;

/// The `store_meta` row naming the UMS ID the database belongs to.
const META_UMS_ID: &str = "ums_id_fingerprint";

const KEY_COLUMNS: &str = "id, kind, lookup, sealed, unit_id, active, status, usage_count, usage_date, comment, created_at";
const DEVICE_COLUMNS: &str = "unit_id, public_key, certificate, serial, not_after, key_id, key_kind, enrolled_at, last_seen, inventory, previous_serial";
const AUDIT_COLUMNS: &str = "id, at, event, actor, source, unit_id, key_id, outcome, detail";
const ACCOUNT_COLUMNS: &str = "name, password_hash, rights, created_at, changed_at, mac";
const TOKEN_COLUMNS: &str = "id, digest, account, name, rights, created_at, expires_at, mac";

/// The advisory lock every account change and deletion takes first, so that the last-admin rule
/// reads and acts without another such change in between.
const ACCOUNTS_LOCK: i64 = 0x756d_735f_6163_6374; // "ums_acct"

/// Accounts holding server:admin, in SQL.
const IS_ADMIN: &str = "',' || rights || ',' LIKE '%,server:admin,%'";

/// A PostgreSQL database.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// The URL without its password, for messages.
    shown: Arc<String>,
    /// Whether this open applied the row-MAC migration ([`Store::migrated_row_macs_now`]).
    migrated_row_macs: bool,
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

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn count(stored: i64) -> u64 {
    u64::try_from(stored).unwrap_or(0)
}

fn limit(page_limit: usize) -> i64 {
    i64::try_from(page_limit).unwrap_or(i64::MAX)
}

fn rights_text(rights: &[Right]) -> String {
    rights
        .iter()
        .map(|right| right.as_str())
        .collect::<Vec<_>>()
        .join(",")
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
        };
        store.migrated_row_macs = store.migrate().await?;
        Ok(store)
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
                &[version, &now()],
            )
            .await
            .map_err(|e| self.db(e))?;
        }
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(current < ROW_MAC_MIGRATION)
    }

    /// The account and token rows without a MAC, read through `client` (`lock`: a locking
    /// clause, inside the transaction that seals them).
    async fn unsealed_in(
        &self,
        client: &deadpool_postgres::Transaction<'_>,
        lock: &str,
    ) -> Result<UnsealedRows, StoreError> {
        let accounts = client
            .query(
                &format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE mac IS NULL ORDER BY name{lock}"
                ),
                &[],
            )
            .await
            .map_err(|e| self.db(e))?;
        let tokens = client
            .query(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE mac IS NULL ORDER BY id{lock}"),
                &[],
            )
            .await
            .map_err(|e| self.db(e))?;
        Ok(UnsealedRows {
            accounts: accounts
                .iter()
                .map(|row| self.account_from_row(row))
                .collect::<Result<_, _>>()?,
            tokens: tokens
                .iter()
                .map(|row| self.token_from_row(row))
                .collect::<Result<_, _>>()?,
        })
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
        })
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
            online_server: row.get(11),
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

    fn main_from_row(&self, row: &Row) -> Result<MainUmsId, StoreError> {
        Ok(MainUmsId {
            fingerprint: row.get::<_, String>(0).parse().map_err(|_| {
                self.corrupt("a Main UMS ID with a malformed fingerprint".to_owned())
            })?,
            certificate_pem: row.get(1),
            sealed: row.get(2),
        })
    }

    fn parse_rights(&self, text: &str) -> Result<Vec<Right>, StoreError> {
        text.split(',')
            .map(|name| {
                name.parse()
                    .map_err(|_| self.corrupt(format!("an unknown right {name:?}")))
            })
            .collect()
    }

    /// A stored MAC; the schema allows only 32 bytes or none.
    fn mac(&self, mac: Option<Vec<u8>>) -> Result<Option<RowMac>, StoreError> {
        mac.map(|mac| {
            mac.try_into()
                .map_err(|_| self.corrupt("a row MAC that is not 32 bytes".to_owned()))
        })
        .transpose()
    }

    fn account_from_row(&self, row: &Row) -> Result<AccountRow, StoreError> {
        Ok(AccountRow {
            name: row.get(0),
            password_hash: row.get(1),
            rights: self.parse_rights(row.get(2))?,
            created_at: self.time(row.get(3))?,
            changed_at: self.time(row.get(4))?,
            mac: self.mac(row.get(5))?,
        })
    }

    /// Applies the last-admin rule to a change of `name` to `after` (`None`: its deletion), in
    /// `tx`, which holds [`ACCOUNTS_LOCK`].
    async fn guard_last_admin(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        name: &str,
        after: Option<&[Right]>,
    ) -> Result<(), StoreError> {
        let before = tx
            .query_opt("SELECT rights FROM accounts WHERE name = $1", &[&name])
            .await
            .map_err(|e| self.db(e))?
            .ok_or_else(|| StoreError::NotFound(Missing::Account(name.to_owned())))?;
        let admins: i64 = tx
            .query_one(
                &format!("SELECT count(*) FROM accounts WHERE {IS_ADMIN}"),
                &[],
            )
            .await
            .map_err(|e| self.db(e))?
            .get(0);
        keep_an_admin(
            name,
            &self.parse_rights(before.get(0))?,
            after,
            u64::try_from(admins).unwrap_or(0),
        )
    }

    fn token_from_row(&self, row: &Row) -> Result<TokenRow, StoreError> {
        let id: String = row.get(0);
        Ok(TokenRow {
            digest: row
                .get::<_, Vec<u8>>(1)
                .try_into()
                .map_err(|_| self.corrupt(format!("token {id} with a malformed digest")))?,
            account: row.get(2),
            name: row.get(3),
            rights: self.parse_rights(row.get(4))?,
            created_at: self.time(row.get(5))?,
            expires_at: row
                .get::<_, Option<i64>>(6)
                .map(|at| self.time(at))
                .transpose()?,
            mac: self.mac(row.get(7))?,
            id,
        })
    }

    /// The row operations of `tx`, a transaction on this database.
    fn tx<'t, 'c>(&'t self, tx: &'t deadpool_postgres::Transaction<'c>) -> PgTx<'t, 'c> {
        PgTx { tx, store: self }
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

    async fn count_where(
        &self,
        table: &str,
        filter: (String, Values<'_>),
    ) -> Result<u64, StoreError> {
        let (condition, values) = filter;
        let rows = self
            .rows(&format!("SELECT count(*) FROM {table}{condition}"), &values)
            .await?;
        Ok(count(rows[0].get(0)))
    }
}

/// The row operations of an open PostgreSQL transaction for the flows of `apply.rs`: every row
/// read for a change is locked (`FOR UPDATE`) until the commit.
struct PgTx<'t, 'c> {
    tx: &'t deadpool_postgres::Transaction<'c>,
    store: &'t PostgresStore,
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
        let row = self
            .tx
            .query_opt(
                "SELECT id, kind, unit_id, active, usage_count FROM keys WHERE lookup = $1 FOR UPDATE",
                &[&lookup.to_vec()],
            )
            .await
            .map_err(|e| store.db(e))?;
        row.map(|row| {
            let id: KeyId = row.get(0);
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
                &format!(
                    "SELECT {DEVICE_COLUMNS}, online_server FROM devices WHERE unit_id = $1 FOR UPDATE"
                ),
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
                "UPDATE keys SET usage_count = usage_count + 1, usage_date = $1, status = $2
                 WHERE id = $3 AND active AND (kind = 'mass' OR usage_count = 0)",
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
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL)
                     ON CONFLICT (unit_id) DO UPDATE SET public_key = excluded.public_key,
                       certificate = excluded.certificate, serial = excluded.serial,
                       not_after = excluded.not_after, key_id = excluded.key_id,
                       key_kind = excluded.key_kind, enrolled_at = excluded.enrolled_at,
                       last_seen = excluded.last_seen, inventory = NULL, previous_serial = NULL"
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
                "INSERT INTO keys (kind, lookup, sealed, unit_id, comment, created_at, status)
                 SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::text[], $5::text[],
                                      $6::bigint[], $7::text[])
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
        let rows = self
            .tx
            .query(
                &statement,
                &[
                    &kinds, &lookups, &sealed, &units, &comments, &times, &statuses,
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
                "SELECT id, kind, usage_count FROM keys WHERE id = ANY($1) ORDER BY id FOR UPDATE",
                &[&ids],
            )
            .await
            .map_err(|e| store.db(e))?;
        rows.iter()
            .map(|row| {
                let id: KeyId = row.get(0);
                Ok(KeyForChange {
                    id,
                    kind: store.kind(id, row.get(1))?,
                    usage_count: count(row.get(2)),
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

/// A WHERE clause builder with numbered parameters.
struct Where {
    sql: String,
    values: Values<'static>,
}

impl Where {
    fn new() -> Self {
        Self {
            sql: String::from(" WHERE TRUE"),
            values: Vec::new(),
        }
    }

    fn and(&mut self, clause: &str, value: Box<dyn ToSql + Sync + Send>) {
        self.values.push(value);
        let clause = clause.replace('?', &format!("${}", self.values.len()));
        self.sql.push_str(" AND ");
        self.sql.push_str(&clause);
    }

    fn done(self) -> (String, Values<'static>) {
        (self.sql, self.values)
    }
}

fn key_where(filter: &KeyFilter) -> Where {
    let mut clause = Where::new();
    if let Some(kind) = filter.kind {
        clause.and("kind = ?", Box::new(kind.as_str().to_owned()));
    }
    if let Some(status) = filter.status {
        clause.and("status = ?", Box::new(status.as_str().to_owned()));
    }
    if let Some(unit_id) = &filter.unit_id {
        clause.and("unit_id = ?", Box::new(unit_id.as_str().to_owned()));
    }
    if let Some(text) = &filter.comment {
        clause.and(
            "strpos(lower(comment), lower(?)) > 0",
            Box::new(text.clone()),
        );
    }
    if let Some(ids) = &filter.ids {
        clause.and("id = ANY(?)", Box::new(ids.clone()));
    }
    clause
}

fn audit_where(filter: &AuditFilter) -> Where {
    let mut clause = Where::new();
    if let Some(since) = filter.since {
        clause.and("at >= ?", Box::new(since.unix_timestamp()));
    }
    if let Some(unit_id) = &filter.unit_id {
        clause.and("unit_id = ?", Box::new(unit_id.as_str().to_owned()));
    }
    if let Some(outcome) = &filter.outcome {
        clause.and("outcome = ?", Box::new(outcome.clone()));
    }
    if let Some(actor) = &filter.actor {
        clause.and("actor = ?", Box::new(actor.clone()));
    }
    clause
}

/// One page of `table` by `id` after (or, descending, before) `page.after`.
fn keyset_select(
    columns: &str,
    table: &str,
    mut clause: Where,
    page: &PageRequest<i64>,
    descending: bool,
) -> (String, Values<'static>) {
    if let Some(after) = page.after {
        clause.and(
            if descending { "id < ?" } else { "id > ?" },
            Box::new(after),
        );
    }
    clause.values.push(Box::new(limit(page.limit)));
    let sql = format!(
        "SELECT {columns} FROM {table}{} ORDER BY id{} LIMIT ${}",
        clause.sql,
        if descending { " DESC" } else { "" },
        clause.values.len()
    );
    (sql, clause.values)
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
            OffsetDateTime::now_utc(),
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
        let (sql, values) = keyset_select(KEY_COLUMNS, "keys", key_where(filter), page, false);
        self.rows(&sql, &values)
            .await?
            .iter()
            .map(|row| self.key_from_row(row))
            .collect()
    }

    async fn count_keys(&self, filter: &KeyFilter) -> Result<u64, StoreError> {
        self.count_where("keys", key_where(filter).done()).await
    }

    async fn set_comment(&self, id: KeyId, comment: &str, actor: &Actor) -> Result<(), StoreError> {
        self.change_keys(&[id], KeyEdit::Comment(comment.to_owned()), actor)
            .await
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
        let outcome = apply::enroll(
            &mut self.tx(&tx),
            &attempt,
            issue,
            OffsetDateTime::now_utc(),
        )
        .await?;
        commit_with(tx, outcome.durability())
            .await
            .map_err(|e| self.db(e))?;
        Ok(outcome)
    }

    async fn renew(
        &self,
        request: RenewalRequest,
        actor: &Actor,
        issue: IssueOnce,
    ) -> Result<RenewOutcome, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        let now = OffsetDateTime::now_utc();
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
        let now = OffsetDateTime::now_utc();
        let held =
            apply::touch(&mut self.tx(&tx), unit_id, serial, inventory, session, now).await?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(held)
    }

    async fn devices(&self, page: &PageRequest<UnitId>) -> Result<Vec<DeviceRecord>, StoreError> {
        let after = page.after.as_ref().map(|unit| unit.as_str().to_owned());
        let rows = self
            .rows(
                &format!(
                    "SELECT {DEVICE_COLUMNS}, online_server FROM devices WHERE ($1::text IS NULL OR unit_id > $1)
                     ORDER BY unit_id LIMIT $2"
                ),
                &vec![Box::new(after), Box::new(limit(page.limit))],
            )
            .await?;
        rows.iter().map(|row| self.device_from_row(row)).collect()
    }

    async fn device(&self, unit_id: &UnitId) -> Result<Option<DeviceRecord>, StoreError> {
        let rows = self
            .rows(
                &format!("SELECT {DEVICE_COLUMNS}, online_server FROM devices WHERE unit_id = $1"),
                &vec![Box::new(unit_id.as_str().to_owned())],
            )
            .await?;
        rows.first()
            .map(|row| self.device_from_row(row))
            .transpose()
    }

    async fn count_devices(&self) -> Result<u64, StoreError> {
        self.count_where("devices", (String::new(), Vec::new()))
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
                &[&now(), &unit_id.as_str(), &session.server, &session.id],
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
                &[&server, &seen_now, &now()],
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
        let now = OffsetDateTime::now_utc();
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
        let now = OffsetDateTime::now_utc();
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
        let (sql, values) = keyset_select(
            AUDIT_COLUMNS,
            "audit",
            audit_where(filter),
            page,
            filter.newest_first,
        );
        self.rows(&sql, &values)
            .await?
            .iter()
            .map(|row| self.audit_from_row(row))
            .collect()
    }

    async fn count_audit(&self, filter: &AuditFilter) -> Result<u64, StoreError> {
        self.count_where("audit", audit_where(filter).done()).await
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
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        let inserted = tx
            .execute(
                &format!(
                    "INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (name) DO NOTHING"
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
        if inserted == 0 {
            return Err(StoreError::Conflict(format!(
                "an account named {:?} exists",
                account.name
            )));
        }
        let mut entry = AuditEntry::new("accounts.create", actor);
        entry.detail = format!(
            "account {} with {}",
            account.name,
            rights_text(&account.rights)
        );
        audit_in(&tx, &entry).await.map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))
    }

    async fn accounts(&self, page: &PageRequest<String>) -> Result<Vec<AccountRow>, StoreError> {
        let rows = self
            .rows(
                &format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name > $1 ORDER BY name LIMIT $2"
                ),
                &vec![
                    Box::new(page.after.clone().unwrap_or_default()),
                    Box::new(limit(page.limit)),
                ],
            )
            .await?;
        rows.iter().map(|row| self.account_from_row(row)).collect()
    }

    async fn count_accounts(&self) -> Result<u64, StoreError> {
        self.count_where("accounts", (String::new(), Vec::new()))
            .await
    }

    async fn account(&self, name: &str) -> Result<Option<AccountRow>, StoreError> {
        let rows = self
            .rows(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = $1"),
                &vec![Box::new(name.to_owned())],
            )
            .await?;
        rows.first()
            .map(|row| self.account_from_row(row))
            .transpose()
    }

    async fn update_account(
        &self,
        name: &str,
        change: AccountChange,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ACCOUNTS_LOCK])
            .await
            .map_err(|e| self.db(e))?;
        if change.rights.is_some() {
            self.guard_last_admin(&tx, name, change.rights.as_deref())
                .await?;
        }
        let rights = change.rights.as_deref().map(rights_text);
        let changed = tx
            .execute(
                "UPDATE accounts SET rights = coalesce($2, rights),
                     password_hash = coalesce($3, password_hash), changed_at = $4, mac = $5
                 WHERE name = $1 AND mac IS NOT DISTINCT FROM $6",
                &[
                    &name,
                    &rights,
                    &change.password_hash,
                    &now(),
                    &change.mac.to_vec(),
                    &change.previous.map(|mac| mac.to_vec()),
                ],
            )
            .await
            .map_err(|e| self.db(e))?;
        if changed == 0 {
            let exists = tx
                .query_opt("SELECT 1 FROM accounts WHERE name = $1", &[&name])
                .await
                .map_err(|e| self.db(e))?
                .is_some();
            return Err(if exists {
                StoreError::Conflict(format!(
                    "the account {name} changed meanwhile; read it again and retry"
                ))
            } else {
                StoreError::NotFound(Missing::Account(name.to_owned()))
            });
        }
        let ended = tx
            .execute("DELETE FROM sessions WHERE account = $1", &[&name])
            .await
            .map_err(|e| self.db(e))?;
        // Whoever knew the old password may have made tokens with it.
        let revoked = if change.password_hash.is_some() {
            tx.execute("DELETE FROM tokens WHERE account = $1", &[&name])
                .await
                .map_err(|e| self.db(e))?
        } else {
            0
        };
        let mut entry = AuditEntry::new("accounts.edit", actor);
        let mut parts = vec![format!("account {name}")];
        if let Some(rights) = &rights {
            parts.push(format!("rights {rights}"));
        }
        if change.password_hash.is_some() {
            parts.push("new password".to_owned());
        }
        parts.push(format!("{ended} session(s) ended"));
        if change.password_hash.is_some() {
            parts.push(format!("{revoked} token(s) ended"));
        }
        entry.detail = parts.join(", ");
        audit_in(&tx, &entry).await.map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))
    }

    async fn delete_account(&self, name: &str, actor: &Actor) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ACCOUNTS_LOCK])
            .await
            .map_err(|e| self.db(e))?;
        self.guard_last_admin(&tx, name, None).await?;
        let changed = tx
            .execute("DELETE FROM accounts WHERE name = $1", &[&name])
            .await
            .map_err(|e| self.db(e))?;
        if changed == 0 {
            return Err(StoreError::NotFound(Missing::Account(name.to_owned())));
        }
        let mut entry = AuditEntry::new("accounts.delete", actor);
        entry.detail = format!("account {name}");
        audit_in(&tx, &entry).await.map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))
    }

    async fn create_token(&self, token: &TokenRow, actor: &Actor) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        // The account row, locked, so a deletion cannot slip in between.
        let exists = tx
            .query_opt(
                "SELECT 1 FROM accounts WHERE name = $1 FOR UPDATE",
                &[&token.account],
            )
            .await
            .map_err(|e| self.db(e))?
            .is_some();
        if !exists {
            return Err(StoreError::NotFound(Missing::Account(
                token.account.clone(),
            )));
        }
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
        let mut entry = AuditEntry::new("tokens.create", actor);
        entry.detail = format!(
            "token {} for account {} with {}",
            token.id,
            token.account,
            rights_text(&token.rights)
        );
        audit_in(&tx, &entry).await.map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))
    }

    async fn tokens(
        &self,
        account: Option<&str>,
        page: &PageRequest<String>,
    ) -> Result<Vec<TokenRow>, StoreError> {
        let rows = self
            .rows(
                &format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens WHERE id > $1
                     AND ($2::text IS NULL OR account = $2) ORDER BY id LIMIT $3"
                ),
                &vec![
                    Box::new(page.after.clone().unwrap_or_default()),
                    Box::new(account.map(str::to_owned)),
                    Box::new(limit(page.limit)),
                ],
            )
            .await?;
        rows.iter().map(|row| self.token_from_row(row)).collect()
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRow>, StoreError> {
        let rows = self
            .rows(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1"),
                &vec![Box::new(id.to_owned())],
            )
            .await?;
        rows.first().map(|row| self.token_from_row(row)).transpose()
    }

    async fn revoke_token(&self, id: &str, actor: &Actor) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        let row = tx
            .query_opt("DELETE FROM tokens WHERE id = $1 RETURNING account", &[&id])
            .await
            .map_err(|e| self.db(e))?;
        let Some(row) = row else {
            return Err(StoreError::NotFound(Missing::Token(id.to_owned())));
        };
        let account: String = row.get(0);
        let mut entry = AuditEntry::new("tokens.revoke", actor);
        entry.detail = format!("token {id} of account {account}");
        audit_in(&tx, &entry).await.map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))
    }

    async fn create_session(
        &self,
        session: &SessionRow,
        verified: &str,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        let inserted = tx
            .execute(
                "INSERT INTO sessions (digest, account, created_at, expires_at, mac)
                 SELECT $1, name, $3, $4, $6 FROM accounts WHERE name = $2 AND password_hash = $5",
                &[
                    &session.digest.to_vec(),
                    &session.account,
                    &session.created_at.unix_timestamp(),
                    &session.expires_at.unix_timestamp(),
                    &verified,
                    &session.mac.map(|mac| mac.to_vec()),
                ],
            )
            .await
            .map_err(|e| self.db(e))?;
        if inserted == 0 {
            return Err(StoreError::NotFound(Missing::Account(
                session.account.clone(),
            )));
        }
        audit_in(&tx, &AuditEntry::new("session.login", actor))
            .await
            .map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))
    }

    async fn session(&self, digest: &[u8; 32]) -> Result<Option<SessionRow>, StoreError> {
        let rows = self
            .rows(
                "SELECT account, created_at, expires_at, mac FROM sessions WHERE digest = $1",
                &vec![Box::new(digest.to_vec())],
            )
            .await?;
        rows.first()
            .map(|row| {
                Ok(SessionRow {
                    digest: *digest,
                    account: row.get(0),
                    created_at: self.time(row.get(1))?,
                    expires_at: self.time(row.get(2))?,
                    mac: self.mac(row.get(3))?,
                })
            })
            .transpose()
    }

    async fn end_session(&self, digest: &[u8; 32], actor: &Actor) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        let ended = tx
            .execute(
                "DELETE FROM sessions WHERE digest = $1",
                &[&digest.to_vec()],
            )
            .await
            .map_err(|e| self.db(e))?;
        if ended > 0 {
            audit_in(&tx, &AuditEntry::new("session.logout", actor))
                .await
                .map_err(|e| self.db(e))?;
        }
        tx.commit().await.map_err(|e| self.db(e))
    }

    fn migrated_row_macs_now(&self) -> bool {
        self.migrated_row_macs
    }

    async fn unsealed_admin_rows(&self) -> Result<UnsealedRows, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        self.unsealed_in(&tx, "").await
    }

    async fn seal_admin_rows(
        &self,
        key: Arc<RowKey>,
        why: &str,
        actor: &Actor,
    ) -> Result<UnsealedRows, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ACCOUNTS_LOCK])
            .await
            .map_err(|e| self.db(e))?;
        let unsealed = self.unsealed_in(&tx, " FOR UPDATE").await?;
        if unsealed.is_empty() {
            return Ok(unsealed);
        }
        let (accounts, tokens) = key.macs(&unsealed);
        for (name, mac) in accounts {
            tx.execute(
                "UPDATE accounts SET mac = $2 WHERE name = $1",
                &[&name, &mac.to_vec()],
            )
            .await
            .map_err(|e| self.db(e))?;
        }
        for (id, mac) in tokens {
            tx.execute(
                "UPDATE tokens SET mac = $2 WHERE id = $1",
                &[&id, &mac.to_vec()],
            )
            .await
            .map_err(|e| self.db(e))?;
        }
        audit_in(&tx, &unsealed.audit_entry(why, actor))
            .await
            .map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(unsealed)
    }

    async fn prune_sessions(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM sessions WHERE expires_at <= $1",
                &[&now.unix_timestamp()],
            )
            .await
            .map_err(|e| self.db(e))
    }

    async fn clock(&self) -> Result<OffsetDateTime, StoreError> {
        let rows = self
            .rows(
                "SELECT extract(epoch FROM clock_timestamp())::bigint",
                &Vec::new(),
            )
            .await?;
        self.time(rows[0].get(0))
    }

    async fn main_ums_id(&self) -> Result<Option<MainUmsId>, StoreError> {
        let rows = self
            .rows(
                "SELECT fingerprint, certificate_pem, sealed FROM main_ums_id",
                &Vec::new(),
            )
            .await?;
        rows.first().map(|row| self.main_from_row(row)).transpose()
    }

    async fn offer_main_ums_id(&self, main: &MainUmsId) -> Result<MainUmsId, StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO main_ums_id (fingerprint, certificate_pem, sealed) VALUES ($1, $2, $3)
                 ON CONFLICT (one) DO NOTHING",
                &[
                    &main.fingerprint.to_string(),
                    &main.certificate_pem,
                    &main.sealed,
                ],
            )
            .await
            .map_err(|e| self.db(e))?;
        drop(client);
        self.main_ums_id()
            .await?
            .ok_or_else(|| self.corrupt("no Main UMS ID after offering one".to_owned()))
    }

    async fn replace_main_ums_id(&self, main: &MainUmsId, actor: &Actor) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        tx.execute(
            "INSERT INTO main_ums_id (fingerprint, certificate_pem, sealed) VALUES ($1, $2, $3)
             ON CONFLICT (one) DO UPDATE SET fingerprint = excluded.fingerprint,
               certificate_pem = excluded.certificate_pem, sealed = excluded.sealed",
            &[
                &main.fingerprint.to_string(),
                &main.certificate_pem,
                &main.sealed,
            ],
        )
        .await
        .map_err(|e| self.db(e))?;
        let mut entry = AuditEntry::new("ums-id.restore", actor);
        entry.detail = format!("Main UMS ID {}", main.fingerprint.short());
        audit_in(&tx, &entry).await.map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))
    }

    async fn heartbeat(&self, beat: &ServerBeat) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO servers (name, fingerprint, status, heartbeat_at)
                 VALUES ($1, $2, $3, extract(epoch FROM now())::bigint)
                 ON CONFLICT (name) DO UPDATE SET fingerprint = excluded.fingerprint,
                   status = excluded.status, heartbeat_at = excluded.heartbeat_at",
                &[
                    &beat.name,
                    &beat.fingerprint.to_string(),
                    &beat.status.label(),
                ],
            )
            .await
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    async fn servers(&self, within: std::time::Duration) -> Result<Vec<ServerRow>, StoreError> {
        let within = i64::try_from(within.as_secs()).unwrap_or(i64::MAX);
        let rows = self
            .rows(
                "SELECT name, fingerprint, status,
                        heartbeat_at >= extract(epoch FROM now())::bigint - $1
                 FROM servers ORDER BY name",
                &vec![Box::new(within)],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let status: String = row.get(2);
                Ok(ServerRow {
                    beat: ServerBeat {
                        name: row.get(0),
                        fingerprint: row.get::<_, String>(1).parse().map_err(|_| {
                            self.corrupt("a server row with a malformed fingerprint".to_owned())
                        })?,
                        status: crate::cluster::SyncStatus::from_label(&status).ok_or_else(
                            || self.corrupt(format!("a server row with status {status:?}")),
                        )?,
                    },
                    running: row.get(3),
                })
            })
            .collect()
    }
}

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
            tx.execute(
                &format!(
                    "INSERT INTO keys ({KEY_COLUMNS})
                     SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::bytea[],
                        $5::text[], $6::boolean[], $7::text[], $8::bigint[], $9::bigint[],
                        $10::text[], $11::bigint[])"
                ),
                &[
                    &ids, &kinds, &lookups, &sealed, &units, &active, &statuses, &counts, &dates,
                    &comments, &created,
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
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
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
