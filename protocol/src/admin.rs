//! The administrator's view of the server: keys, devices, the audit log and the UMS ID, as JSON.
//!
//! One typed model per resource, printed by `ums-stub ... --json`, served by the admin API and read
//! back by tests, so the surfaces cannot drift. Times are RFC 3339 in UTC. A key's value appears
//! only masked unless the caller asked to show it.

use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;

use crate::{Fingerprint, Folder, Inventory, KeyKind, UnitId};

/// A key's number on its server, as the key list shows it.
pub type KeyId = i64;

/// A key's status, as the UMS key list shows it. Which status a key has is decided in one place
/// on the server (`ums-stub`'s `claim` module); this is only its name. Where several would fit,
/// the first of Used, Inactive, Expired, Not yet valid, Exhausted is the one shown; a key none of
/// them fits is Active. Expired and Not yet valid depend on the time they are read at.
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
    /// Its lifetime ended: its `expires_at` has passed.
    Expired,
    /// Its lifetime has not begun: its `not_before` is still ahead.
    #[serde(rename = "not_yet_valid")]
    NotYetValid,
    /// A mass-deployment key that enrolled as many devices as its usage limit allows.
    Exhausted,
}

impl KeyStatus {
    /// Every status.
    pub const ALL: [KeyStatus; 6] = [
        KeyStatus::Active,
        KeyStatus::Inactive,
        KeyStatus::Used,
        KeyStatus::Expired,
        KeyStatus::NotYetValid,
        KeyStatus::Exhausted,
    ];

    /// The stable name used on the command line, in JSON and in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Inactive => "inactive",
            KeyStatus::Used => "used",
            KeyStatus::Expired => "expired",
            KeyStatus::NotYetValid => "not_yet_valid",
            KeyStatus::Exhausted => "exhausted",
        }
    }

    /// How the UMS key list shows it.
    pub const fn label(self) -> &'static str {
        match self {
            KeyStatus::Active => "Active",
            KeyStatus::Inactive => "Inactive",
            KeyStatus::Used => "Used",
            KeyStatus::Expired => "Expired",
            KeyStatus::NotYetValid => "Not yet valid",
            KeyStatus::Exhausted => "Exhausted",
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
#[error(
    "{0:?} is not a key status: expected active, inactive, used, expired, not_yet_valid or \
     exhausted"
)]
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
    /// Its status when it was read: Active, Inactive, Used, Expired, Not yet valid or Exhausted.
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
    /// When it stops working; `None` for never.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<OffsetDateTime>,
    /// When it starts working; `None` for from its creation.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub not_before: Option<OffsetDateTime>,
    /// The most devices a mass-deployment key enrolls; `None` for no limit.
    #[serde(default)]
    pub usage_limit: Option<u64>,
    /// Where devices enrolled with it land; `None` for nowhere in particular.
    #[serde(default)]
    pub folder: Option<Folder>,
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
            .field("expires_at", &self.expires_at)
            .field("not_before", &self.not_before)
            .field("usage_limit", &self.usage_limit)
            .field("folder", &self.folder)
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
    /// The folder of the key it enrolled with, as that key had it then (later changes to the key
    /// do not move the device).
    #[serde(default)]
    pub folder: Option<Folder>,
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
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
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
        /// When they stop working (RFC 3339); never when left out.
        #[serde(
            default,
            serialize_with = "time::serde::rfc3339::option::serialize",
            deserialize_with = "named::expires_at",
            skip_serializing_if = "Option::is_none"
        )]
        #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
        expires_at: Option<OffsetDateTime>,
        /// When they start working (RFC 3339); at once when left out.
        #[serde(
            default,
            serialize_with = "time::serde::rfc3339::option::serialize",
            deserialize_with = "named::not_before",
            skip_serializing_if = "Option::is_none"
        )]
        #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
        not_before: Option<OffsetDateTime>,
        /// Where devices enrolled with them land (`/Sites/Berlin`); nowhere in particular when
        /// left out.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        folder: Option<Folder>,
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
        /// When they stop working (RFC 3339); never when left out.
        #[serde(
            default,
            serialize_with = "time::serde::rfc3339::option::serialize",
            deserialize_with = "named::expires_at",
            skip_serializing_if = "Option::is_none"
        )]
        #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
        expires_at: Option<OffsetDateTime>,
        /// When they start working (RFC 3339); at once when left out.
        #[serde(
            default,
            serialize_with = "time::serde::rfc3339::option::serialize",
            deserialize_with = "named::not_before",
            skip_serializing_if = "Option::is_none"
        )]
        #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
        not_before: Option<OffsetDateTime>,
        /// Where devices enrolled with them land (`/Sites/Berlin`); nowhere in particular when
        /// left out.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        folder: Option<Folder>,
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
        /// When it stop working (RFC 3339); never when left out.
        #[serde(
            default,
            serialize_with = "time::serde::rfc3339::option::serialize",
            deserialize_with = "named::expires_at",
            skip_serializing_if = "Option::is_none"
        )]
        #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
        expires_at: Option<OffsetDateTime>,
        /// When it start working (RFC 3339); at once when left out.
        #[serde(
            default,
            serialize_with = "time::serde::rfc3339::option::serialize",
            deserialize_with = "named::not_before",
            skip_serializing_if = "Option::is_none"
        )]
        #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
        not_before: Option<OffsetDateTime>,
        /// Where devices enrolled with it land (`/Sites/Berlin`); nowhere in particular when
        /// left out.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        folder: Option<Folder>,
        /// The most devices it enrolls; no limit when left out. Only mass-deployment keys have
        /// one: the other kinds enroll one device each.
        #[serde(
            default,
            deserialize_with = "named::usage_limit",
            skip_serializing_if = "Option::is_none"
        )]
        #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000000000))]
        usage_limit: Option<u64>,
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

/// The most uses a mass-deployment key may be limited to.
pub const MAX_USAGE_LIMIT: u64 = 1_000_000_000;

/// A change to one key: each member left out stays as it is; `null` clears a lifetime bound, the
/// usage limit or the folder.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EditKey {
    /// The new comment.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[cfg_attr(feature = "openapi", schema(max_length = 1000, nullable = false))]
    pub comment: Option<String>,
    /// The new end of its lifetime (RFC 3339), or `null` for never.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "named::serialize_change_of_time",
        deserialize_with = "named::expires_at_change"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<Option<OffsetDateTime>>,
    /// The new start of its lifetime (RFC 3339), or `null` for at once.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "named::serialize_change_of_time",
        deserialize_with = "named::not_before_change"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub not_before: Option<Option<OffsetDateTime>>,
    /// The new usage limit of a mass-deployment key, or `null` for none. Other kinds have none
    /// (422).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "named::usage_limit_change"
    )]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u64>, minimum = 1, maximum = 1000000000)
    )]
    pub usage_limit: Option<Option<u64>>,
    /// The new folder, or `null` for none. Devices enrolled already stay where they landed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "change"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Folder>))]
    pub folder: Option<Option<Folder>>,
}

/// A member of a change that may be left out (`None`: no change) or `null` (`Some(None)`: clear).
fn change<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(deserializer).map(Some)
}

/// The deserializers of the members whose errors would not say which member they are about
/// (serde's messages name a value, not its member, inside a tagged request): each error starts
/// with the member's name. Changes read left out as `None`, `null` as `Some(None)`.
mod named {
    use std::fmt::Display;

    use serde::Deserializer;
    use serde::de::Error;
    use time::OffsetDateTime;

    fn name<T, E: Display, D: Error>(member: &str, read: Result<T, E>) -> Result<T, D> {
        read.map_err(|error| D::custom(format!("{member}: {error}")))
    }

    pub(super) fn expires_at<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        name(
            "expires_at",
            time::serde::rfc3339::option::deserialize(deserializer),
        )
    }

    pub(super) fn not_before<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        name(
            "not_before",
            time::serde::rfc3339::option::deserialize(deserializer),
        )
    }

    pub(super) fn usage_limit<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<u64>, D::Error> {
        name("usage_limit", crate::whole_number::option(deserializer))
    }

    pub(super) fn expires_at_change<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Option<OffsetDateTime>>, D::Error> {
        expires_at(deserializer).map(Some)
    }

    pub(super) fn not_before_change<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Option<OffsetDateTime>>, D::Error> {
        not_before(deserializer).map(Some)
    }

    pub(super) fn usage_limit_change<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Option<u64>>, D::Error> {
        usage_limit(deserializer).map(Some)
    }

    /// A time member of a change as sent: `null` to clear, or RFC 3339.
    #[expect(
        clippy::ref_option,
        reason = "serde's serialize_with passes a reference"
    )]
    pub(super) fn serialize_change_of_time<S: serde::Serializer>(
        value: &Option<Option<OffsetDateTime>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        time::serde::rfc3339::option::serialize(&value.flatten(), serializer)
    }
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
    /// The keys to export, each active or not valid yet; empty for every such key. Expired,
    /// exhausted, used and inactive keys are never exported.
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
        assert_eq!(
            serde_json::to_value(KeyStatus::NotYetValid).unwrap(),
            "not_yet_valid"
        );
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
            expires_at: Some(time::macros::datetime!(2026-12-21 09:00 UTC)),
            not_before: None,
            usage_limit: None,
            folder: Some("/Sites/Berlin".parse().unwrap()),
        };
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["type"], "device-bound");
        assert_eq!(json["status"], "used");
        assert_eq!(json["usage_date"], "2026-11-22T10:00:00Z");
        assert_eq!(json["expires_at"], "2026-12-21T09:00:00Z");
        assert_eq!(json["folder"], "/Sites/Berlin");
        assert_eq!(serde_json::from_value::<KeyView>(json).unwrap(), view);
    }

    #[test]
    fn a_creation_request_takes_a_lifetime_and_folder_and_a_usage_limit_on_mass_keys_only() {
        let mass: CreateKeys = serde_json::from_str(
            r#"{"type":"mass","usage_limit":10.0,"expires_at":"2026-12-31T23:00:00+01:00",
                "not_before":"2026-12-01T00:00:00Z","folder":"/Sites/Berlin"}"#,
        )
        .unwrap();
        let CreateKeys::Mass {
            usage_limit,
            expires_at,
            not_before,
            folder,
            ..
        } = &mass
        else {
            panic!("{mass}")
        };
        assert_eq!(*usage_limit, Some(10));
        assert_eq!(
            *expires_at,
            Some(time::macros::datetime!(2026-12-31 22:00 UTC))
        );
        assert_eq!(
            *not_before,
            Some(time::macros::datetime!(2026-12-01 00:00 UTC))
        );
        assert_eq!(folder.as_ref().map(Folder::as_str), Some("/Sites/Berlin"));
        let back: CreateKeys =
            serde_json::from_value(serde_json::to_value(&mass).unwrap()).unwrap();
        assert_eq!(back, mass);
        // Left out: as keys were before they had any.
        let plain: CreateKeys =
            serde_json::from_str(r#"{"type":"one-time","quantity":2}"#).unwrap();
        assert_eq!(
            serde_json::to_value(&plain).unwrap(),
            serde_json::json!({"type": "one-time", "quantity": 2, "comment": ""})
        );
        let refused = [
            (
                r#"{"type":"one-time","quantity":2,"usage_limit":3}"#,
                "usage_limit",
            ),
            (
                r#"{"type":"device-bound","unit_ids":["00E0C5540B8B"],"usage_limit":3}"#,
                "usage_limit",
            ),
            (r#"{"type":"mass","usage_limit":-1}"#, "usage_limit"),
            (r#"{"type":"mass","folder":"Sites"}"#, "folder"),
            (r#"{"type":"mass","expires_at":"tomorrow"}"#, "expires_at"),
            (
                r#"{"type":"one-time","quantity":2,"expires":"2026-12-31T23:00:00Z"}"#,
                "expires",
            ),
        ];
        for (json, field) in refused {
            let error = serde_json::from_str::<CreateKeys>(json)
                .unwrap_err()
                .to_string();
            assert!(error.contains(field), "{json}: {error}");
        }
        let error = serde_json::from_str::<CreateKeys>(refused[0].0)
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `usage_limit`"), "{error}");
    }

    #[test]
    fn an_edit_leaves_out_keeps_nulls_clear_and_values_set() {
        let edit = |json: &str| serde_json::from_str::<EditKey>(json);
        assert_eq!(edit("{}").unwrap(), EditKey::default());
        let cleared =
            edit(r#"{"expires_at":null,"not_before":null,"usage_limit":null,"folder":null}"#)
                .unwrap();
        assert_eq!(
            cleared,
            EditKey {
                comment: None,
                expires_at: Some(None),
                not_before: Some(None),
                usage_limit: Some(None),
                folder: Some(None),
            }
        );
        let set = edit(
            r#"{"comment":"x","expires_at":"2026-12-31T23:00:00Z","usage_limit":5.0,
                "folder":"/Sites"}"#,
        )
        .unwrap();
        assert_eq!(set.comment.as_deref(), Some("x"));
        assert_eq!(
            set.expires_at,
            Some(Some(time::macros::datetime!(2026-12-31 23:00 UTC)))
        );
        assert_eq!(set.usage_limit, Some(Some(5)));
        assert_eq!(set.not_before, None);
        for edited in [cleared, set] {
            let back = edit(&serde_json::to_string(&edited).unwrap()).unwrap();
            assert_eq!(back, edited);
        }
        for bad in [
            r#"{"comment":null}"#,
            r#"{"expire_at":null}"#,
            r#"{"folder":"/a//b"}"#,
            r#"{"usage_limit":1.5}"#,
        ] {
            assert!(edit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_creation_request_is_tagged_by_type_and_never_prints_its_password() {
        let request: CreateKeys =
            serde_json::from_str(r#"{"type":"mass","password":"Rollout 2026"}"#).unwrap();
        assert_eq!(
            request,
            CreateKeys::Mass {
                password: Some("Rollout 2026".to_owned()),
                comment: String::new(),
                expires_at: None,
                not_before: None,
                folder: None,
                usage_limit: None,
            }
        );
        assert!(!request.to_string().contains("Rollout"));
        assert!(!format!("{request:?}").contains("Rollout"));
        let bound: CreateKeys =
            serde_json::from_str(r#"{"type":"device-bound","unit_ids":["00E0C5540B8B"]}"#).unwrap();
        assert_eq!(bound.to_string(), "1 device-bound key(s)");
    }
}
