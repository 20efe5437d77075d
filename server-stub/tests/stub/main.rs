//! The `ums-stub` binary run as an administrator would, on throwaway data directories.
//!
//! - `admin_api`: the admin API: rights matrix, tokens, sessions and CSRF, login limits, reveals,
//!   hashes in the database, refusals naming their field, the committed OpenAPI document.
//! - `cluster`: several servers on one PostgreSQL database: the Main UMS ID, not-in-sync
//!   servers, each key once across servers, the status table, nothing readable in the database.
//! - `conformance`: one suite of store behaviours run on SQLite and on PostgreSQL (`pg`: a
//!   throwaway cluster per test).
//! - `help`: help texts and exit codes.
//! - `ums_id`: creation at first use, show, export, backup and restore; survival of database loss
//!   and host name changes.
//! - `keys`: each key command's behaviour and refusals, and a round trip through an export.
//! - `layout`: the layers of `src`, held against its imports: none runs back up.
//! - `openapi_constraints`: what the OpenAPI document states, as the server applies it: integers
//!   written as whole-number floats, the floor for typed mass keys (API and command line).
//! - `durability`: SIGKILL in the middle of a large creation; several processes on one data
//!   directory; nothing readable in a copy of the database.
//! - `shown`: reveals and exports audited before any key is shown, on the command line and the
//!   Web App's session; nothing shown when the line cannot be written.
//! - `rights`: every pair (caller's right, right given) for accounts and tokens, `keys:export`
//!   on every surface, tokens ending with a password, rows written straight into the database,
//!   servers not in sync, the last-admin guard under racing deletions.
//! - `schemathesis`: schemathesis over the served OpenAPI document with every check on, with an
//!   all-rights and a read-only token.
//! - `server`: an in-process server on port 0 and an EST client (shared by the next modules).
//! - `check`: the key check route: every code, nothing consumed, one guess budget with
//!   enrollment, the same refusal once spent, audit lines with key IDs only.
//! - `est`: EST enrollment rules, problem codes, bad input, lost answers, races, renewal, audit.
//! - `limits`: guess limits with the default settings: only guesses count, real keys go through,
//!   one address's flood does not slow another, trusted proxies.
//! - `metrics`: the metrics and health listener: a scrape after a fleet against the store's
//!   counts, no identifier in a label, `/readyz` while PostgreSQL is stopped and started again.
//! - `inventory`: the inventory report over mutual TLS, its refusals, and `devices list`.
//! - `connector`: the device connector's sessions: one source's share, refused certificates.
//! - `fuzz`: a bounded mutation fuzzer over key files, CSRs, Basic credentials, inventory bodies.
//! - `flood`: idle connections from one host against a server limited to 1024 open files, and
//!   from twenty hosts against the caps of the systemd unit's limit.
//! - `rig_faults`: test-rig mode: each fault kind and one-shot action as a client sees it, the
//!   same seed giving the same faults, none of it without test-rig mode.
//! - `rig_control`: test-rig mode's controls: the moved clock deciding key, certificate, token,
//!   session and heartbeat expiry on both backends; strict mode; the control listener and
//!   `serve --test-rig` against a normal `serve`.
//! - `system`: real peers (openssl, curl), SIGKILL during enrollments, the systemd unit.
//! - `testing`: `ums_stub::testing`, the one way tests start a server: fixtures, stick files,
//!   waits, test-rig mode, restarts, clean-up, PostgreSQL, `serve` as a process and signals.

mod admin_api;
mod check;
mod cluster;
mod conformance;
mod connector;
mod durability;
mod est;
mod flood;
mod fuzz;
mod help;
mod inventory;
mod keys;
mod layout;
mod limits;
mod metrics;
mod openapi_constraints;
mod rig_faults;
// The throwaway PostgreSQL cluster lives with the end-to-end pieces; shared here as a file.
#[allow(unreachable_pub, dead_code)]
#[path = "../../../tests/src/postgres.rs"]
mod pg;
mod rig_control;
mod rights;
mod schemathesis;
mod server;
mod shown;
mod system;
mod testing;
mod ums_id;
mod util;
