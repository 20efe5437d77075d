//! The UMS stub server: the UMS ID, the key store and key management.
//!
//! # Layout
//! - [`config`]: data directory and the optional TOML config, validated into [`config::Settings`].
//! - [`ums_id`]: the server's identity (P-256 key pair, self-signed CA), its files, backup, restore.
//! - [`vault`]: look-up digests and sealing of key values, derived from the UMS ID.
//! - [`store`]: the [`store::Store`] interface and its SQLite implementation (the one module that
//!   owns the database).
//! - [`keys`]: key operations (create, list, edit, activate, delete, export) shared by the command
//!   line and, later, the admin API.
//! - [`unit_ids`]: unit IDs typed one by one or imported from CSV.
//! - [`stub`]: an opened data directory.
//! - [`ca`]: device certificates from PKCS#10 requests, and the TLS leaf.
//! - [`tls`]: the server's rustls configuration (leaf, chain, client certificates).
//! - [`http`]: the EST routes and the one place errors become HTTP answers.
//! - [`rate_limit`]: failed-attempt limits per source and unit ID.
//! - [`serve`]: the accept loop with timeouts and graceful shutdown.
//! - [`cli`]: the command line.
//! - [`files`], [`random`]: private atomic file writes; the OS CSPRNG.

pub mod ca;
pub mod cli;
pub mod config;
pub mod files;
pub mod http;
pub mod keys;
pub mod random;
pub mod rate_limit;
pub mod serve;
pub mod store;
pub mod stub;
pub mod tls;
pub mod ums_id;
pub mod unit_ids;
pub mod vault;

pub use onboard_protocol as protocol;
