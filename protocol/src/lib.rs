//! What the onboarding agent and the UMS stub must agree on, with no I/O and no async runtime.
//!
//! # Layout
//! - [`admin`]: the administrator's typed views (keys, devices, audit, UMS ID, pages, requests),
//!   printed by `ums-stub --json` and served by the admin API.
//! - [`fingerprint`]: [`Fingerprint`], the SHA-256 of the UMS ID certificate that devices pin.
//! - [`folder`]: [`Folder`], where a device enrolled with a key lands (`/Sites/Berlin`).
//! - [`unit_id`]: [`UnitId`], a device's identity (a MAC, or a UD Pocket serial).
//! - [`key`]: [`KeyKind`], [`FirstAuthKey`] (a secret that prints masked) and [`KeyEntry`].
//! - [`keyfile`]: [`KeyFile`], the export on the USB stick, with a reader and writer for each
//!   [`Format`] (XML, HTML, the UMS clipboard text).
//! - [`problem`]: [`ProblemCode`] and the RFC 9457 [`Problem`] body of enrollment refusals.
//! - [`alternates`]: several keys in one enrollment request.
//! - [`check`]: checking keys before a rollout: the answer of the device route.
//! - [`routes`]: endpoint paths, content types and the default port.
//! - [`est`]: EST bodies: base64 transfer encoding and PKCS#7 certs-only.
//! - [`inventory`]: [`Inventory`], the facts an enrolled device reports about itself, and their
//!   bounds.
//! - [`whole_number`]: integer members of JSON requests that also take whole-number floats.

pub mod admin;
pub mod alternates;
pub mod check;
pub mod connector;
pub mod est;
pub mod fingerprint;
pub mod folder;
pub mod inventory;
pub mod key;
pub mod keyfile;
pub mod problem;
pub mod routes;
pub mod unit_id;
pub mod whole_number;

pub use fingerprint::{Fingerprint, FingerprintError};
pub use folder::{Folder, FolderError};
pub use inventory::{Inventory, InventoryError, Nic};
pub use key::{
    FirstAuthKey, KeyEntry, KeyEntryError, KeyKind, KeyKindError, KeyValueError, MAX_KEY_CHARS,
};
pub use keyfile::{
    FORMAT_VERSION, Format, KeyFile, KeyFileError, Limits, Position, Reason, Server, ServerError,
};
pub use problem::{Problem, ProblemCode};
pub use unit_id::{UNIT_ID_PATTERN, UnitId, UnitIdError};
