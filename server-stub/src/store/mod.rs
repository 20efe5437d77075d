//! The store: one async interface for the server's data (keys, devices, the audit log), so that
//! SQLite (the embedded default) and PostgreSQL (several servers sharing one database) are
//! interchangeable. The server holds it as `Arc<dyn Store>`, chosen by [`open`].
//!
//! The store holds keys only as look-up digests and sealed values (see [`crate::vault`]); it never
//! sees a key in the clear. It decides no key rule: the flows that apply one are written once, in
//! `apply.rs`, over the row operations a transaction offers (`tx.rs`), and ask [`crate::claim`] and
//! [`crate::renewal`]. Its errors name no backend. Every change it records names its [`Actor`].
//!
//! - [`rows`]: what it reads and writes; [`query`]: list filters, pages and their shared SQL text;
//!   [`error`]: what goes wrong; [`durability`]: which writes must be synced before an answer.
//! - [`interface`]: the [`Store`] trait the server holds.
//! - `tx.rs` and `apply.rs`: the row operations of one transaction and the flows written once
//!   over them (enroll, check keys, renew, touch, delete a device, queue a command, change keys,
//!   insert keys).
//! - `sqlite.rs`, `postgres.rs`: the backends, each only how it begins, locks and commits, and its
//!   SQL; [`database`]: which one the settings name, and [`open`].

mod apply;
pub mod database;
pub mod durability;
pub mod error;
pub mod interface;
mod postgres;
pub mod query;
pub mod rows;
mod sqlite;
mod tx;

pub use database::{Database, DatabaseUrl, open};
pub use durability::Durability;
pub use error::{Missing, StoreError};
pub use interface::Store;
pub use postgres::{Dump, PostgresStore};
pub(crate) use query::paged;
pub use query::{AuditFilter, DeviceFilter, KeyFilter, KeyListing, KeySort, PageRequest};
pub use rows::{
    AccountChange, AccountRow, Actor, AuditEntry, CheckedKey, DISCONNECT, DeviceRecord,
    EnrollAttempt, EnrollOutcome, KeyCheck, KeyPatch, MakeKey, NewKey, Progress, RenewOutcome,
    RenewalRequest, RowMac, RowSealer, ServerBeat, ServerRow, SessionRef, SessionRow, StoredKey,
    TokenRow, UnsealedRows,
};
pub use sqlite::SqliteStore;
