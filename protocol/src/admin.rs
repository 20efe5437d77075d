//! The administrator's view of the server: keys, devices, the audit log and the UMS ID, as JSON.
//!
//! One typed model per resource, printed by `ums-stub ... --json`, served by the admin API and read
//! back by tests, so the surfaces cannot drift. Times are RFC 3339 in UTC. A key's value appears
//! only masked unless the caller asked to show it.

use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;

use crate::{Fingerprint, Inventory, KeyKind, UnitId};

/// A key's number on its server, as the key list shows it.
pub type KeyId = i64;

/// A key's status, as the UMS key list shows it. Which status a key has is decided in one place
/// on the server (`ums-stub`'s `claim` module); this is only its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    /// Usable for enrollment.
    Active,
    /// Deactivated by an administrator.
    Inactive,
    /// A one-time or device-bound key that has enrolled its device.
    Used,
}

impl KeyStatus {
    /// Every status.
    pub const ALL: [KeyStatus; 3] = [KeyStatus::Active, KeyStatus::Inactive, KeyStatus::Used];

    /// The stable name used on the command line, in JSON and in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Inactive => "inactive",
            KeyStatus::Used => "used",
        }
    }

    /// How the UMS key list shows it.
    pub const fn label(self) -> &'static str {
        match self {
            KeyStatus::Active => "Active",
            KeyStatus::Inactive => "Inactive",
            KeyStatus::Used => "Used",
        }
    }
}

impl fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that is not a key status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a key status: expected active, inactive or used")]
pub struct KeyStatusError(String);

impl FromStr for KeyStatus {
    type Err = KeyStatusError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        KeyStatus::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| KeyStatusError(text.chars().take(40).collect()))
    }
}

/// One row of the key list. Its `Debug` masks a shown key.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyView {
    /// Its number.
    pub id: KeyId,
    /// One-time, device-bound or mass.
    #[serde(rename = "type")]
    pub kind: KeyKind,
    /// The value, masked (`4051*********9621`) unless shown.
    pub key: String,
    /// Whether `key` is the clear value.
    pub shown: bool,
    /// The unit ID a device-bound key names.
    pub unit_id: Option<UnitId>,
    /// Active, Inactive or Used.
    pub status: KeyStatus,
    /// Successful enrollments with it.
    pub usage_count: u64,
    /// The last of them.
    #[serde(with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub usage_date: Option<OffsetDateTime>,
    /// The administrator's comment.
    pub comment: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: OffsetDateTime,
}

impl fmt::Debug for KeyView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyView")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field(
                "key",
                &if self.shown {
                    "(shown)"
                } else {
                    self.key.as_str()
                },
            )
            .field("unit_id", &self.unit_id)
            .field("status", &self.status)
            .field("usage_count", &self.usage_count)
            .finish_non_exhaustive()
    }
}

/// An enrolled device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceView {
    /// Its unit ID.
    pub unit_id: UnitId,
    /// Its current certificate's serial, hex.
    pub serial: String,
    /// That certificate's expiry.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub not_after: OffsetDateTime,
    /// The kind of key it enrolled with.
    pub key_type: KeyKind,
    /// That key, unless it was deleted since.
    pub key_id: Option<KeyId>,
    /// When it first enrolled.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub enrolled_at: OffsetDateTime,
    /// When it was last heard from.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub last_seen: OffsetDateTime,
    /// What it last reported about itself; `None` before its first report.
    pub inventory: Option<Inventory>,
    /// Whether it holds a device connector session with a running server now.
    #[serde(default)]
    pub online: bool,
    /// The server (host:port, as the servers list names it) holding that session.
    #[serde(default)]
    pub connected_to: Option<String>,
}

/// A command for a connected device (`POST /api/v1/devices/{unit_id}/commands`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SendCommand {
    /// What the device is to do.
    pub command: crate::connector::Command,
}

/// Where a command went.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandQueued {
    /// The server holding the device's session, which delivers it within a second or so.
    pub server: String,
}

/// One line of the audit log. Never holds a key value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntryView {
    /// Its number: lines are numbered in the order they were written.
    pub id: i64,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: OffsetDateTime,
    /// What: `enroll`, `reenroll`, `keys.create`, `keys.edit`, `keys.activate`,
    /// `keys.deactivate`, `keys.delete`, `devices.delete`.
    pub event: String,
    /// Who: `cli`, an administrator's name, or the unit ID of a device.
    pub actor: String,
    /// Where the request came from: an address, or `local` for the command line.
    pub source: String,
    /// The unit ID concerned, if any.
    pub unit_id: Option<String>,
    /// The key concerned, if one.
    pub key_id: Option<KeyId>,
    /// `ok` or a problem code.
    pub outcome: String,
    /// More, for people (an ID range, a certificate serial).
    pub detail: String,
}

/// The server's UMS ID, as the UMS ID page shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UmsIdView {
    /// SHA-256 of the UMS ID certificate, 64 hex digits.
    pub fingerprint: Fingerprint,
    /// The same in four parts of 16, as the UMS clipboard export prints them.
    pub parts: [String; 4],
    /// The first and last 10 characters.
    pub short: String,
    /// Part 3, which IGEL OS 12 asks for as the communication token.
    pub communication_token: String,
    /// When the UMS ID was created.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: OffsetDateTime,
    /// How the server answering stands towards this Main UMS ID, in the status table's words
    /// (`Main UMS ID`, `In sync`, `Not in sync, please restart server`); left out by the command
    /// line, which reads the data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The server's own Local UMS ID, when it is not the Main UMS ID (a server of a Distributed
    /// UMS that adopted, or could not adopt, another server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalUmsId>,
}

/// A server's own UMS ID, when another is the Main one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LocalUmsId {
    /// SHA-256 of its certificate, 64 hex digits.
    pub fingerprint: Fingerprint,
    /// The first and last 10 characters.
    pub short: String,
}

impl UmsIdView {
    /// The view of the UMS ID with `fingerprint`, created at `created_at`.
    pub fn new(fingerprint: Fingerprint, created_at: OffsetDateTime) -> Self {
        Self {
            parts: fingerprint.parts(),
            short: fingerprint.short(),
            communication_token: fingerprint.communication_token(),
            fingerprint,
            created_at,
            status: None,
            local: None,
        }
    }
}

/// One server's row of the UMS ID status table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerView {
    /// The name devices reach it by.
    pub host_name: String,
    /// `Running` or `Not running`.
    pub server_status: String,
    /// `Main UMS ID`, `In sync`, or `Not in sync, please restart server`.
    pub ums_id_status: String,
    /// The UMS ID it holds, its first and last 10 characters.
    pub ums_id_short: String,
    /// That UMS ID's fingerprint.
    pub fingerprint: Fingerprint,
}

/// One page of a list, in keyset order: the next page starts after `next_after`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Page<T, A = KeyId> {
    /// The rows of this page, in list order.
    pub items: Vec<T>,
    /// Where the next page starts (pass it as `after`); `None` on the last page.
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub next_after: Option<A>,
    /// How many rows match the filter in all, when it was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// A request to create keys. Its `Debug` and `Display` never show a typed password.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum CreateKeys {
    /// `quantity` one-time keys any one device may use.
    OneTime {
        /// How many.
        #[serde(deserialize_with = "crate::whole_number::one")]
        #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100000))]
        quantity: usize,
        /// A comment for all of them.
        #[serde(default)]
        #[cfg_attr(feature = "openapi", schema(max_length = 1000))]
        comment: String,
    },
    /// One one-time key per unit ID, bound to it.
    DeviceBound {
        /// The unit IDs.
        #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 100000))]
        unit_ids: Vec<UnitId>,
        /// A comment for all of them.
        #[serde(default)]
        #[cfg_attr(feature = "openapi", schema(max_length = 1000))]
        comment: String,
    },
    /// One mass-deployment key: random, or the password typed here.
    Mass {
        /// The value to use instead of a random one; no other key may have it. 16 to 128
        /// characters, no control characters, no white space at either end, and not too
        /// guessable: the server estimates its strength (zxcvbn) and refuses common passwords,
        /// words, names, keyboard rows, repeats and sequences with 422, saying why. The pattern
        /// spells out Unicode's White_Space and control characters rather than `\s`, whose
        /// meaning differs between regular-expression dialects.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(
            feature = "openapi",
            schema(
                pattern = r"^[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]{14,126}[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]$"
            )
        )]
        password: Option<String>,
        /// A comment.
        #[serde(default)]
        #[cfg_attr(feature = "openapi", schema(max_length = 1000))]
        comment: String,
    },
}

impl fmt::Debug for CreateKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CreateKeys({self})")
    }
}

impl fmt::Display for CreateKeys {
    /// What the request asks for, without the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateKeys::OneTime { quantity, .. } => write!(f, "{quantity} one-time key(s)"),
            CreateKeys::DeviceBound { unit_ids, .. } => {
                write!(f, "{} device-bound key(s)", unit_ids.len())
            }
            CreateKeys::Mass { password, .. } => write!(
                f,
                "a {} mass-deployment key",
                if password.is_some() {
                    "typed"
                } else {
                    "random"
                }
            ),
        }
    }
}

/// What a creation made: the new keys' numbers in order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedKeys {
    /// The new keys.
    pub ids: Vec<KeyId>,
}

/// A change to one key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EditKey {
    /// The new comment.
    #[cfg_attr(feature = "openapi", schema(max_length = 1000))]
    pub comment: String,
}

/// The most keys one admin API request creates (the command line on the server machine makes up
/// to a million at once).
pub const MAX_KEYS_PER_REQUEST: usize = 100_000;

/// The most characters of a comment on a key.
pub const MAX_COMMENT_CHARS: usize = 1000;

/// Key numbers, for the operations on several keys at once (all of them or none).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KeyIds {
    /// The keys.
    #[serde(deserialize_with = "crate::whole_number::list")]
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 100000))]
    pub ids: Vec<KeyId>,
}

/// The most keys one request names.
pub const MAX_KEY_IDS: usize = 100_000;

/// A request for a key file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExportKeys {
    /// The keys to export, all active; empty for every active key.
    #[serde(default, deserialize_with = "crate::whole_number::list")]
    #[cfg_attr(feature = "openapi", schema(max_items = 100000))]
    pub ids: Vec<KeyId>,
    /// The servers devices should contact, in order; empty for the server's configured public
    /// host.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 16))]
    pub servers: Vec<ExportServer>,
    /// `xml` (the default), `html` or `text`.
    #[serde(default = "default_format")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^(xml|html|text)$"))]
    pub format: crate::Format,
    /// Every active key this filter matches (the Web App's "select all matching"); with `ids`,
    /// those of them it matches. Refused when it matches no active key.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "object_or_null"
    )]
    pub filter: Option<KeyMatch>,
}

/// The key list's filters, for an operation on every key they match (one request, however many
/// keys). Fields left out match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KeyMatch {
    /// Only keys of this type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, pattern = "^(one-time|device-bound|mass)$"))]
    pub kind: Option<KeyKind>,
    /// Only keys with this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<KeyStatus>,
    /// Only keys bound to a unit ID starting with this (letters and digits; `:`, `-` and `.`
    /// between them are ignored): a whole unit ID or its first characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 26, pattern = r"^[0-9A-Za-z:.\-]*$")
    )]
    pub unit_id: Option<String>,
    /// Only keys whose comment holds this text (ASCII letters in any case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 200))]
    pub comment: Option<String>,
}

/// An optional object field that refuses anything but an object or null (serde alone would read
/// a struct from an array too).
fn object_or_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct Visit<T>(std::marker::PhantomData<T>);
    impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object or null")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: serde::Deserializer<'de>>(
            self,
            deserializer: D,
        ) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_map(self)
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    deserializer.deserialize_option(Visit(std::marker::PhantomData))
}

/// What to do to many keys at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum KeyAction {
    /// Make them usable (a used key stays used).
    Activate,
    /// Make them unusable.
    Deactivate,
    /// Delete them.
    Delete,
}

/// A change to the keys named or to every key a filter matches (`POST /api/v1/keys/change`):
/// all of them or none.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChangeKeys {
    /// What to do.
    pub action: KeyAction,
    /// The keys (none: nothing changes), or with `filter` those of them it matches.
    #[serde(default, deserialize_with = "crate::whole_number::list")]
    #[cfg_attr(feature = "openapi", schema(max_items = 100000))]
    pub ids: Vec<KeyId>,
    /// Every key this filter matches (with `ids`, those of them it matches).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "object_or_null"
    )]
    pub filter: Option<KeyMatch>,
}

/// What a change to many keys did, for a message that names the keys it left as they were.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeysChanged {
    /// What was done.
    pub action: KeyAction,
    /// How many keys were named or matched.
    pub matched: u64,
    /// How many of them changed (were deleted, for a deletion).
    pub changed: u64,
    /// The others, by the status that left them as they were (`active` for an activation,
    /// `inactive` or `used` for a deactivation, `used` for an activation of a used key).
    pub unchanged: Vec<KeysUnchanged>,
}

/// Keys a change left as they were, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeysUnchanged {
    /// Their status, before and after.
    pub status: KeyStatus,
    /// How many.
    pub count: u64,
}

/// The servers an export names unless told otherwise: what the export dialog is prefilled with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExportServers {
    /// The servers devices will contact, in order.
    pub servers: Vec<ExportServer>,
    /// Whether the answering server's `public_host` is set in its config file (else its name is
    /// this machine's host name, with the port it listens on).
    pub public_host_set: bool,
}

/// A server named in an export.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExportServer {
    /// A host name or IP address (no brackets around IPv6): no white space (Unicode's
    /// White_Space), control characters or `/ ? # @ \ < > " ' &`.
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 253,
            pattern = r#"^[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000/?#@\\<>"'&]+$"#
        )
    )]
    pub host: String,
    /// The HTTPS port; 8443 when left out.
    #[serde(
        default = "default_port",
        deserialize_with = "crate::whole_number::one"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub port: u16,
}

/// What an export would write, checked before it is made (`POST /api/v1/keys/export/check`,
/// the export dialog's check): each server as reached from the server itself, and each key's
/// status. The request is the [`ExportKeys`] the dialog is about to send (its format is ignored).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExportCheck {
    /// The UMS ID fingerprint the key file would pin (64 hex digits).
    pub fingerprint: Fingerprint,
    /// The servers the key file would name, in its order: those requested, or the server's
    /// configured public address when none is.
    pub servers: Vec<ExportServerCheck>,
    /// The keys the request names, in its order, each with whether it can go on a stick; empty
    /// when it names none (every active key). An ID no key has is refused (404), as the export
    /// refuses it.
    pub keys: Vec<ExportKeyCheck>,
    /// How many keys the file would hold (0: the export would be refused).
    pub exportable: u64,
    /// How many keys named cannot be exported (the export would be refused while one is named).
    pub refused: u64,
}

/// One server of an export, as reached from the server itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExportServerCheck {
    /// The host name or address the file would name.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// What a short TCP connect and TLS handshake found.
    pub reach: ServerReach,
    /// The same for people: the error, or what the chain held.
    pub detail: String,
}

/// What a probe of a server found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ServerReach {
    /// Reached, and its TLS chain holds the UMS ID the file pins: devices would accept it.
    Ok,
    /// Reached, but its chain does not hold that UMS ID: devices would refuse it.
    PinMismatch,
    /// A TCP connection, but no TLS handshake (not a TLS server there).
    TlsFailed,
    /// No connection: the name does not resolve, nothing listens, or no answer in time.
    Unreachable,
}

/// One key named in an export, checked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExportKeyCheck {
    /// The key.
    pub id: KeyId,
    /// Its status.
    pub status: KeyStatus,
    /// Whether it can go on a stick.
    pub exportable: bool,
    /// Why not, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn default_port() -> u16 {
    crate::routes::DEFAULT_PORT
}

impl From<&crate::Server> for ExportServer {
    fn from(server: &crate::Server) -> Self {
        Self {
            host: server.host().to_owned(),
            port: server.port(),
        }
    }
}

fn default_format() -> crate::Format {
    crate::Format::Xml
}

/// What an administrator account may do. Rights are named as `area:action`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Right {
    /// List keys (masked), filter, page.
    #[serde(rename = "keys:read")]
    KeysRead,
    /// Create, edit, activate, deactivate and delete keys.
    #[serde(rename = "keys:write")]
    KeysWrite,
    /// Show keys in the clear; every reveal is audited.
    #[serde(rename = "keys:reveal")]
    KeysReveal,
    /// Export keys to a key file (a reveal to a file); every export is audited.
    #[serde(rename = "keys:export")]
    KeysExport,
    /// List enrolled devices.
    #[serde(rename = "devices:read")]
    DevicesRead,
    /// Delete a device record.
    #[serde(rename = "devices:write")]
    DevicesWrite,
    /// Read the audit log.
    #[serde(rename = "audit:read")]
    AuditRead,
    /// The UMS ID, accounts and tokens.
    #[serde(rename = "server:admin")]
    ServerAdmin,
}

impl Right {
    /// Every right.
    pub const ALL: [Right; 8] = [
        Right::KeysRead,
        Right::KeysWrite,
        Right::KeysReveal,
        Right::KeysExport,
        Right::DevicesRead,
        Right::DevicesWrite,
        Right::AuditRead,
        Right::ServerAdmin,
    ];

    /// The stable name used on the command line, in JSON and in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            Right::KeysRead => "keys:read",
            Right::KeysWrite => "keys:write",
            Right::KeysReveal => "keys:reveal",
            Right::KeysExport => "keys:export",
            Right::DevicesRead => "devices:read",
            Right::DevicesWrite => "devices:write",
            Right::AuditRead => "audit:read",
            Right::ServerAdmin => "server:admin",
        }
    }
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that names no right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a right: expected keys:read, keys:write, keys:reveal, keys:export, \
     devices:read, devices:write, audit:read or server:admin"
)]
pub struct RightError(String);

impl FromStr for Right {
    type Err = RightError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Right::ALL
            .into_iter()
            .find(|right| right.as_str() == text.trim())
            .ok_or_else(|| RightError(text.chars().take(40).collect()))
    }
}

/// What an account name may look like: 1 to 64 letters, digits, `.`, `_`, `@` or `-`, starting
/// with a letter or digit.
pub const ACCOUNT_NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$";

/// An administrator account. Never holds its password or its hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccountView {
    /// Its name.
    pub name: String,
    /// Its rights, in the order of [`Right::ALL`].
    pub rights: Vec<Right>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: OffsetDateTime,
    /// When its rights or password last changed.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub changed_at: OffsetDateTime,
}

/// A request to create an account. Its `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    /// Its name.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
    )]
    pub name: String,
    /// Its password: at least 12 characters.
    #[cfg_attr(feature = "openapi", schema(min_length = 12, max_length = 1024))]
    pub password: String,
    /// Its rights: at least one.
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub rights: Vec<Right>,
}

impl fmt::Debug for NewAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewAccount")
            .field("name", &self.name)
            .field("rights", &self.rights)
            .finish_non_exhaustive()
    }
}

/// A change to an account: new rights, a new password, or both. Either ends its sessions. Its
/// `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EditAccount {
    /// The new rights: at least one.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[cfg_attr(feature = "openapi", schema(min_items = 1, nullable = false))]
    pub rights: Option<Vec<Right>>,
    /// The new password: at least 12 characters.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 12, max_length = 1024, nullable = false)
    )]
    pub password: Option<String>,
}

/// A member that may be left out but, when given, is not null.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

impl fmt::Debug for EditAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EditAccount")
            .field("rights", &self.rights)
            .field("password", &self.password.as_ref().map(|_| "(new)"))
            .finish()
    }
}

/// An API token, as listed: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenView {
    /// Its public ID, also the start of the token (`umst_<id>_...`).
    pub id: String,
    /// A name to tell it by.
    pub name: String,
    /// The account it acts for.
    pub account: String,
    /// The rights it asks for; it holds those its account also holds.
    pub rights: Vec<Right>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: OffsetDateTime,
    /// When it stops working; `None` for never.
    #[serde(with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<OffsetDateTime>,
}

/// A request for an API token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// The account it acts for.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
    )]
    pub account: String,
    /// A name to tell it by.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 100))]
    pub name: String,
    /// A subset of the account's rights; all of them when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub rights: Option<Vec<Right>>,
    /// Days until it expires; never when left out.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::whole_number::option"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 3650))]
    pub expires_days: Option<u32>,
}

/// A token just created: the only time the token is shown. Its `Debug` hides it.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedToken {
    /// The token, for `Authorization: Bearer`.
    pub token: String,
    /// What it is.
    pub view: TokenView,
}

impl fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedToken")
            .field("view", &self.view)
            .finish_non_exhaustive()
    }
}

/// A login. Its `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The account.
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub name: String,
    /// Its password.
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub password: String,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Who is calling: the account behind a token or session and the rights it holds now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CallerView {
    /// The account.
    pub account: String,
    /// The rights this request holds.
    pub rights: Vec<Right>,
    /// The CSRF token writes with the session cookie carry in `X-CSRF-Token`; only in the answer
    /// to a login and to `GET /api/v1/session` with a cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
    /// When the session ends; only for sessions.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<OffsetDateTime>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in KeyStatus::ALL {
            assert_eq!(status.as_str().parse::<KeyStatus>().unwrap(), status);
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::json!(status.as_str())
            );
        }
        assert_eq!("USED".parse::<KeyStatus>().unwrap(), KeyStatus::Used);
        assert!("spent".parse::<KeyStatus>().is_err());
    }

    #[test]
    fn a_key_row_reads_back_from_its_json() {
        let view = KeyView {
            id: 7,
            kind: KeyKind::DeviceBound,
            key: "7712*********0452".to_owned(),
            shown: false,
            unit_id: Some("00E0C5540B8B".parse().unwrap()),
            status: KeyStatus::Used,
            usage_count: 1,
            usage_date: Some(time::macros::datetime!(2026-11-22 10:00 UTC)),
            comment: "lab".to_owned(),
            created_at: time::macros::datetime!(2026-11-21 09:00 UTC),
        };
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["type"], "device-bound");
        assert_eq!(json["status"], "used");
        assert_eq!(json["usage_date"], "2026-11-22T10:00:00Z");
        assert_eq!(serde_json::from_value::<KeyView>(json).unwrap(), view);
    }

    #[test]
    fn a_creation_request_is_tagged_by_type_and_never_prints_its_password() {
        let request: CreateKeys =
            serde_json::from_str(r#"{"type":"mass","password":"Rollout 2026"}"#).unwrap();
        assert_eq!(
            request,
            CreateKeys::Mass {
                password: Some("Rollout 2026".to_owned()),
                comment: String::new()
            }
        );
        assert!(!request.to_string().contains("Rollout"));
        assert!(!format!("{request:?}").contains("Rollout"));
        let bound: CreateKeys =
            serde_json::from_str(r#"{"type":"device-bound","unit_ids":["00E0C5540B8B"]}"#).unwrap();
        assert_eq!(bound.to_string(), "1 device-bound key(s)");
    }
}
