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
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

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
    fn refusal_does_not_echo_a_long_input_whole() {
        let long = "A".repeat(10_000);
        let message = long.parse::<UnitId>().unwrap_err().to_string();
        assert!(message.len() < 400, "{}", message.len());
    }
}
