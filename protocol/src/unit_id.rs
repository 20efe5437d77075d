//! The unit ID: how the UMS names an endpoint device.
//!
//! Normally the MAC of the device's built-in wired NIC as 12 uppercase hex digits with no
//! separators; a UD Pocket (a device booting from a stick) uses its 18-character serial instead.

use std::fmt;
use std::str::FromStr;

/// A device's unit ID, normalised: 12 uppercase hex digits, or an 18-character UD Pocket serial.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnitId(String);

/// Why a text is not a unit ID. The message says what a unit ID looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{shown:?} is not a unit ID: expected a MAC address of 12 hex digits (00:E0:C5:54:0B:8B, \
     00-E0-C5-54-0B-8B or 00E0C5540B8B) or an 18-character UD Pocket serial (letters A-Z and digits)"
)]
pub struct UnitIdError {
    /// The refused text, cut to 40 characters.
    shown: String,
}

impl UnitId {
    /// The normalised form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this unit ID is a MAC address (rather than a UD Pocket serial).
    pub fn is_mac(&self) -> bool {
        self.0.len() == 12
    }
}

impl FromStr for UnitId {
    type Err = UnitIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refuse = || UnitIdError {
            shown: text.chars().take(40).collect(),
        };
        let trimmed = text.trim();
        // A UD Pocket serial: 18 letters and digits, no separators.
        if trimmed.len() == 18 && trimmed.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Ok(Self(trimmed.to_ascii_uppercase()));
        }
        // A MAC: six groups of two (`:` or `-`), three groups of four (`.`), or no separators.
        let digits: String = match trimmed.len() {
            12 => trimmed.to_owned(),
            17 => {
                let sep = trimmed.as_bytes()[2];
                if !(sep == b':' || sep == b'-')
                    || trimmed.split(sep as char).any(|group| group.len() != 2)
                {
                    return Err(refuse());
                }
                trimmed.split(sep as char).collect()
            }
            14 => {
                if trimmed.split('.').any(|group| group.len() != 4) {
                    return Err(refuse());
                }
                trimmed.split('.').collect()
            }
            _ => return Err(refuse()),
        };
        if digits.len() != 12 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(refuse());
        }
        Ok(Self(digits.to_ascii_uppercase()))
    }
}

impl fmt::Display for UnitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UnitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UnitId({})", self.0)
    }
}

impl serde::Serialize for UnitId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for UnitId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Exactly as written, as [`UNIT_ID_PATTERN`] says: the trimming of `FromStr` is for
        // people typing at a prompt or into a CSV file, not for JSON, paths or queries.
        let text = String::deserialize(deserializer)?;
        if text.trim() != text {
            return Err(serde::de::Error::custom(UnitIdError {
                shown: text.chars().take(40).collect(),
            }));
        }
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What a unit ID may look like in JSON, a path or a query (an ECMA-262 regular expression): a
/// MAC in one of its common spellings, or an 18-character UD Pocket serial. Exactly what
/// deserialization accepts.
pub const UNIT_ID_PATTERN: &str = "^([0-9A-Fa-f]{12}|[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}|[0-9A-Fa-f]{2}(-[0-9A-Fa-f]{2}){5}|[0-9A-Fa-f]{4}([.][0-9A-Fa-f]{4}){2}|[A-Za-z0-9]{18})$";

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for UnitId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(UNIT_ID_PATTERN))
            .description(Some(
                "A unit ID: a MAC (00E0C5540B8B, 00:E0:C5:54:0B:8B, 00-E0-C5-54-0B-8B or \
                 00e0.c554.0b8b), or an 18-character UD Pocket serial. Answers carry the \
                 normalised form (12 uppercase hex digits).",
            ))
            .examples(["00E0C5540B8B"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for UnitId {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_common_mac_spellings() {
        for spelling in [
            "00:e0:c5:54:0b:8b",
            "00-E0-C5-54-0B-8B",
            "00e0c5540b8b",
            "00E0C5540B8B",
            "00e0.c554.0b8b",
            " 00:E0:C5:54:0B:8B ",
        ] {
            let id: UnitId = spelling.parse().unwrap();
            assert_eq!(id.as_str(), "00E0C5540B8B", "{spelling}");
            assert!(id.is_mac());
        }
    }

    #[test]
    fn takes_a_ud_pocket_serial() {
        let id: UnitId = "UDP1234567890ABCDE".parse().unwrap();
        assert_eq!(id.to_string(), "UDP1234567890ABCDE");
        assert!(!id.is_mac());
        assert_eq!("udp1234567890abcde".parse::<UnitId>().unwrap(), id);
    }

    #[test]
    fn refuses_anything_else_saying_what_a_unit_id_looks_like() {
        for bad in [
            "",
            "00:e0:c5:54:0b",
            "00:e0:c5:54:0b:8g",
            "00:e0-c5:54:0b:8b",
            "000:e0:c5:54:0b:8",
            "00e0c5540b8b00",
            "UDP1234567890ABCD-",
            "zz:zz:zz:zz:zz:zz",
        ] {
            let err = bad.parse::<UnitId>().unwrap_err();
            let message = err.to_string();
            assert!(message.contains("12 hex digits"), "{bad}: {message}");
            assert!(message.contains("UD Pocket"), "{bad}: {message}");
        }
    }

    #[test]
    fn json_takes_the_spellings_of_its_pattern_and_nothing_around_them() {
        let from_json = |text: &str| serde_json::from_value::<UnitId>(serde_json::json!(text));
        assert_eq!(
            from_json("00e0.c554.0b8b").unwrap().as_str(),
            "00E0C5540B8B"
        );
        assert!(from_json(" 00E0C5540B8B").is_err());
        assert!(from_json("00E0C5540B8B\n").is_err());
    }

    #[test]
    fn refusal_does_not_echo_a_long_input_whole() {
        let long = "A".repeat(10_000);
        let message = long.parse::<UnitId>().unwrap_err().to_string();
        assert!(message.len() < 400, "{}", message.len());
    }
}
