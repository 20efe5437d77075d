//! Route paths and ports both sides use (ARCHITECTURE §4).

/// The port the server listens on unless told otherwise, and that key files assume.
pub const DEFAULT_PORT: u16 = 8443;

/// EST: the UMS ID chain, base64 PKCS#7 certs-only. No authentication.
pub const EST_CACERTS: &str = "/.well-known/est/cacerts";

/// EST: first enrollment. HTTP Basic with user = unit ID and password = key; body a base64 PKCS#10.
pub const EST_SIMPLEENROLL: &str = "/.well-known/est/simpleenroll";

/// EST: renewal over mutual TLS with the current device certificate.
pub const EST_SIMPLEREENROLL: &str = "/.well-known/est/simplereenroll";

/// The inventory report of an enrolled device: `PUT` with a JSON [`crate::Inventory`] body (at
/// most [`crate::inventory::MAX_INVENTORY_BYTES`]), over mutual TLS with the device certificate.
/// Answers 204 No Content; refusals are problem+json with code `bad_request`.
pub const DEVICE_INVENTORY: &str = "/device/v1/inventory";

/// Checking keys before a rollout ([`crate::check`]): `POST` with the keys as enrollment presents
/// them and an empty body (or a base64 PKCS#10); answers a JSON [`crate::check::KeyCheckAnswer`]
/// and consumes nothing.
pub const DEVICE_CHECK_KEYS: &str = "/device/v1/check-keys";

/// The device connector: a WebSocket over mutual TLS that an enrolled device keeps open.
pub const DEVICE_CONNECT: &str = "/device/v1/connect";

/// Content type of an inventory report.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// The prefix of the admin API (JSON, bearer token).
pub const ADMIN_API_PREFIX: &str = "/api/v1";

/// Content type of an EST PKCS#10 request body.
pub const CONTENT_TYPE_PKCS10: &str = "application/pkcs10";

/// Content type of an EST PKCS#7 certs-only reply.
pub const CONTENT_TYPE_PKCS7_CERTS_ONLY: &str = "application/pkcs7-mime; smime-type=certs-only";
