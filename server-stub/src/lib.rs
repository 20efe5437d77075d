//! The UMS stub server: the UMS ID, the key store and key management.
//!
//! # Layout
//! - [`config`]: data directory and the optional TOML config, validated into [`config::Settings`].
//! - [`ums_id`]: the server's identity (P-256 key pair, self-signed CA), its files, backup, restore.
//! - [`vault`]: look-up digests and sealing of key values, derived from the UMS ID.
//! - [`claim`]: the key rules, pure: a key's status, what may be exported, what one enrollment
//!   attempt comes to, what a clash of a new key's value comes to. The store applies them once
//!   for both backends; nothing else decides one.
//! - [`cluster`]: Distributed UMS: the cluster secret, the Main UMS ID sealed under it, and the
//!   pure rule of which UMS ID a server uses at start.
//! - [`renewal`]: the device-certificate rules, pure: the previous certificate honoured until
//!   the new one is seen, expired ones renewed within a grace period, lapsed records.
//! - [`store`]: the async [`store::Store`] interface over SQLite and PostgreSQL, its rows and
//!   errors, and the flows that apply a decision written once for both backends (the one module
//!   that owns the database).
//! - [`keys`], [`devices`], [`audit`]: the use cases the command line runs and the admin API will
//!   serve (create, list, edit, activate, delete, export keys; list and delete devices; read the
//!   audit log), answering with the typed views of `onboard_protocol::admin`.
//! - [`mass_key_floor`]: the floor for a typed mass-deployment key, pure: its length and a
//!   strength estimate.
//! - [`rights`]: the administrator rules, pure: the right each admin operation needs, what a
//!   token holds, names, passwords, expiry, CSRF.
//! - [`accounts`]: administrator accounts, API tokens and Web App sessions (argon2id, SHA-256),
//!   and the checks that turn credentials into a caller with rights.
//! - [`row_mac`]: the MACs account, token and session rows carry, under a key from the UMS ID
//!   in use (on PostgreSQL: the Main UMS ID, opened by the cluster secret).
//! - [`unit_ids`]: unit IDs typed one by one or imported from CSV.
//! - [`stub`]: an opened data directory.
//! - [`ca`]: device certificates from PKCS#10 requests, and the TLS leaf.
//! - [`tls`]: the server's rustls configuration (leaf, chain, client certificates).
//! - [`http`]: the HTTPS routes split by surface (EST, enrolled devices) and the one place errors
//!   become HTTP answers.
//! - [`rate_limit`]: guess limits on enrollment, per source and unit ID, reserved before any
//!   look-up; the budget rule is pure.
//! - [`key_admission`]: which keys of an enrollment request are tried and what the others are
//!   answered, pure, from the budget's answer and one read of the store.
//! - [`login_limit`]: failed-login limits per account and source network, that nobody can use to
//!   lock an administrator out.
//! - [`serve`]: the accept loop with timeouts and graceful shutdown.
//! - [`metrics`]: counters, gauges and histograms for Prometheus, and `/livez` and `/readyz`,
//!   on a listener of their own.
//! - [`probe`]: whether a server a key file would name is reachable from here, and whether its
//!   TLS chain holds the UMS ID the file pins (the export dialog's check).
//! - [`servers`]: the UMS ID status table from the servers' heartbeats.
//! - [`connections`]: caps on connections in all and per source, and the open-files limit.
//! - [`admission`]: the admission rules, pure: which connection gets in and which stalled
//!   handshake gives way, per-source caps, handshake time-outs under pressure, session shares.
//! - [`connector`]: the device connector's sessions (WebSockets of enrolled devices), their
//!   budget, commands and shutdown.
//! - [`rig`]: test-rig mode: seeded fault plans and a clock a rig can move.
//! - [`cli`]: the command line, one module per command group.
//! - `testing` (cargo feature `testing`): servers for tests and rigs, in-process or as a
//!   process; the one way the workspace's tests start a server.
//! - [`files`], [`random`]: private atomic file writes; the OS CSPRNG.

pub mod accounts;
pub mod admission;
pub mod audit;
pub mod ca;
pub mod claim;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod connections;
pub mod connector;
pub mod devices;
pub mod files;
pub mod http;
pub mod key_admission;
pub mod key_changes;
pub mod keys;
pub mod login_limit;
pub mod mass_key_floor;
pub mod metrics;
pub mod probe;
pub mod random;
pub mod rate_limit;
pub mod renewal;
pub mod rig;
pub mod rights;
pub mod row_mac;
pub mod serve;
pub mod servers;
pub mod store;
pub mod stub;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod ums_id;
pub mod unit_ids;
pub mod vault;

pub use onboard_protocol as protocol;
