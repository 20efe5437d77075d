//! What can go wrong in the store, named without a backend: callers branch on the variant.

use std::fmt;

use onboard_protocol::admin::KeyId;
use onboard_protocol::{Fingerprint, UnitId};

/// What is missing when a store operation finds nothing to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// These keys do not exist.
    Keys(Vec<KeyId>),
    /// No enrolled device has this unit ID.
    Device(UnitId),
    /// No account has this name.
    Account(String),
    /// No token has this ID.
    Token(String),
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Keys(ids) => write!(
                f,
                "no key with ID {}; nothing was changed",
                ids.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Missing::Device(unit_id) => write!(f, "no enrolled device has unit ID {unit_id}"),
            Missing::Account(name) => write!(f, "no account is named {name:?}"),
            Missing::Token(id) => write!(f, "no token has ID {id:?}"),
        }
    }
}

/// Why a store operation failed. Names no backend: callers branch on the variant.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// What the operation names does not exist; nothing was changed.
    #[error("{0}")]
    NotFound(Missing),
    /// The change clashes with what exists (a typed key value another key has).
    #[error("{0}")]
    Conflict(String),
    /// The database cannot be reached or is busy for now; retrying later may work.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database belongs to another UMS ID: its sealed keys would not open under this one.
    #[error(
        "the database {database} was made under UMS ID {stored}, but this server's UMS ID is \
         {ours}; restore the UMS ID it was made under (ums-stub ums-id restore BACKUP --force), or \
         use a data directory of its own for this UMS ID"
    )]
    OtherUmsId {
        /// Where the database is.
        database: String,
        /// The fingerprint recorded in the database.
        stored: Fingerprint,
        /// This server's fingerprint.
        ours: Fingerprint,
    },
    /// The database's schema is newer than this program.
    #[error(
        "the database {database} has schema version {found}, newer than this ums-stub knows \
         ({known}); upgrade ums-stub"
    )]
    SchemaTooNew {
        /// Where the database is.
        database: String,
        /// Its version.
        found: i64,
        /// The newest this program knows.
        known: i64,
    },
    /// Signing the device certificate failed (the transaction was rolled back).
    #[error("cannot issue the device certificate: {0}")]
    Issue(String),
    /// The database holds something this code cannot read.
    #[error("the database {database} holds {reason}")]
    Corrupt {
        /// Where the database is.
        database: String,
        /// What is wrong.
        reason: String,
    },
    /// The backend failed.
    #[error("the database {database} failed")]
    Backend {
        /// Where the database is.
        database: String,
        /// The failure.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
