//! Which database holds the store, and opening it.

use std::path::Path;
use std::sync::Arc;

use anyhow::bail;

use super::error::StoreError;
use super::interface::Store;
use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use crate::rig::clock::Clock;

/// Which database backend holds the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// SQLite, one file in the data directory: the embedded default.
    Sqlite,
    /// A PostgreSQL database several servers may share.
    Postgres(DatabaseUrl),
}

/// A database URL, which may hold a password: its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL itself, for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.parse::<tokio_postgres::Config>() {
            Ok(config) => f.write_str(&super::postgres::shown_url(&config)),
            Err(_) => f.write_str("postgres://(unreadable URL)"),
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

impl Database {
    /// Reads the `database` setting: `sqlite`, or a `postgres://` URL.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        if text.eq_ignore_ascii_case("sqlite") {
            return Ok(Database::Sqlite);
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            if text.parse::<tokio_postgres::Config>().is_err() {
                // The text is not echoed: a URL may hold a password.
                bail!("not a PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE)");
            }
            return Ok(Database::Postgres(DatabaseUrl(text.to_owned())));
        }
        // The text is not echoed: a URL may hold a password.
        bail!("expected \"sqlite\" or a postgres:// URL")
    }
}

/// Opens the store `database` names (SQLite in `sqlite_file`; PostgreSQL over TLS checked against
/// `database_ca` when one is given), creating and migrating it at first use. The caller binds it
/// to its UMS ID ([`Store::bind_ums_id`]; `Stub::open` does). The store measures expiries and
/// heartbeats, and stamps what it records, by `clock` (the server's, moved only in test-rig mode).
pub async fn open(
    database: &Database,
    sqlite_file: &Path,
    database_ca: Option<&Path>,
    clock: &Clock,
) -> Result<Arc<dyn Store>, StoreError> {
    let store: Arc<dyn Store> = match database {
        Database::Sqlite => {
            let (file, clock) = (sqlite_file.to_owned(), clock.clone());
            let opened =
                tokio::task::spawn_blocking(move || SqliteStore::open_with_clock(&file, clock))
                    .await
                    .map_err(|error| StoreError::Backend {
                        database: sqlite_file.display().to_string(),
                        source: Box::new(error),
                    })??;
            Arc::new(opened)
        }
        Database::Postgres(url) => Arc::new(
            PostgresStore::open_with(url.expose(), database_ca)
                .await?
                .with_clock(clock.clone()),
        ),
    };
    Ok(store)
}
