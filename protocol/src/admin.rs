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
    pub usage_date: Option<OffsetDateTime>,
    /// The administrator's comment.
    pub comment: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
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
pub struct DeviceView {
    /// Its unit ID.
    pub unit_id: UnitId,
    /// Its current certificate's serial, hex.
    pub serial: String,
    /// That certificate's expiry.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// The kind of key it enrolled with.
    pub key_type: KeyKind,
    /// That key, unless it was deleted since.
    pub key_id: Option<KeyId>,
    /// When it first enrolled.
    #[serde(with = "time::serde::rfc3339")]
    pub enrolled_at: OffsetDateTime,
    /// When it was last heard from.
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// What it last reported about itself; `None` before its first report.
    pub inventory: Option<Inventory>,
}

/// One line of the audit log. Never holds a key value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntryView {
    /// Its number: lines are numbered in the order they were written.
    pub id: i64,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
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
    pub created_at: OffsetDateTime,
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
        }
    }
}

/// One page of a list, in keyset order: the next page starts after `next_after`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Page<T, A = KeyId> {
    /// The rows of this page, in list order.
    pub items: Vec<T>,
    /// Where the next page starts (pass it as `after`); `None` on the last page.
    pub next_after: Option<A>,
    /// How many rows match the filter in all, when it was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// A request to create keys. Its `Debug` and `Display` never show a typed password.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum CreateKeys {
    /// `quantity` one-time keys any one device may use.
    OneTime {
        /// How many.
        quantity: usize,
        /// A comment for all of them.
        #[serde(default)]
        comment: String,
    },
    /// One one-time key per unit ID, bound to it.
    DeviceBound {
        /// The unit IDs.
        unit_ids: Vec<UnitId>,
        /// A comment for all of them.
        #[serde(default)]
        comment: String,
    },
    /// One mass-deployment key: random, or the password typed here.
    Mass {
        /// The value to use instead of a random one; no other key may have it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<String>,
        /// A comment.
        #[serde(default)]
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
pub struct CreatedKeys {
    /// The new keys.
    pub ids: Vec<KeyId>,
}

/// A change to one key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EditKey {
    /// The new comment.
    pub comment: String,
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
