//! First-authentication keys: their kinds and their secret values.
//!
//! A key value is a secret. [`FirstAuthKey`] masks it in `Debug` and `Display`, wipes it from memory
//! when dropped, and hands it out only through [`FirstAuthKey::expose_secret`], so a grep for that name
//! finds every place a key can leave the process.

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroize;

use crate::UnitId;

/// The three kinds of first-authentication key the UMS creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyKind {
    /// Any one device may use it; afterwards it is Used.
    OneTime,
    /// Only the device whose unit ID it names may use it; afterwards it is Used.
    DeviceBound,
    /// Any device may use it, any number of times.
    MassDeployment,
}

impl KeyKind {
    /// All kinds, in the order the agent tries them.
    pub const ALL: [KeyKind; 3] = [
        KeyKind::DeviceBound,
        KeyKind::OneTime,
        KeyKind::MassDeployment,
    ];

    /// The stable name used in key files, JSON and on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyKind::OneTime => "one-time",
            KeyKind::DeviceBound => "device-bound",
            KeyKind::MassDeployment => "mass",
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that names no key kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a key type: expected one-time, device-bound or mass")]
pub struct KeyKindError(());

impl FromStr for KeyKind {
    type Err = KeyKindError;

    /// The stable names, any case; `mass-deployment` is taken for `mass`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "one-time" => Ok(KeyKind::OneTime),
            "device-bound" => Ok(KeyKind::DeviceBound),
            "mass" | "mass-deployment" => Ok(KeyKind::MassDeployment),
            // The text is not echoed: a misplaced key value may sit where the type belongs.
            _ => Err(KeyKindError(())),
        }
    }
}

impl serde::Serialize for KeyKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for KeyKind {
    /// Only the stable names, exactly (`FromStr` is the lenient reader for people).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        KeyKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| serde::de::Error::custom(KeyKindError(())))
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for KeyKind {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(KeyKind::ALL.map(KeyKind::as_str)))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for KeyKind {}

/// The most characters a key value may have. Generated keys have 17; mass-deployment passwords are
/// typed by an administrator.
pub const MAX_KEY_CHARS: usize = 128;

/// Why a text cannot be a key value. Never shows the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyValueError {
    /// The value is empty.
    #[error("the key is empty")]
    Empty,
    /// The value is longer than [`MAX_KEY_CHARS`].
    #[error("the key is longer than {MAX_KEY_CHARS} characters")]
    TooLong,
    /// The value holds a control character (a line break, a tab, NUL...).
    #[error("the key holds a control character")]
    ControlCharacter,
    /// The value starts or ends with white space, which the formats could not carry faithfully.
    #[error("the key starts or ends with white space")]
    SurroundingWhitespace,
}

/// A first-authentication key value: 17 decimal digits when the UMS generated it, or a password an
/// administrator chose for a mass-deployment key.
///
/// `Debug` and `Display` print it masked, all but the last four characters as `*` (all of it when it
/// is shorter than 12). The value is wiped from memory on drop.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FirstAuthKey(String);

impl FirstAuthKey {
    /// Checks and wraps a key value.
    pub fn new(value: impl Into<String>) -> Result<Self, KeyValueError> {
        let value = Self(value.into());
        let text = value.0.as_str();
        if text.is_empty() {
            return Err(KeyValueError::Empty);
        }
        if text.chars().count() > MAX_KEY_CHARS {
            return Err(KeyValueError::TooLong);
        }
        if text.chars().any(char::is_control) {
            return Err(KeyValueError::ControlCharacter);
        }
        if text.trim() != text {
            return Err(KeyValueError::SurroundingWhitespace);
        }
        Ok(value)
    }

    /// The secret itself, for the places that must send, store or export it.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// The masked form, for lists, logs and messages: `*************9621`.
    pub fn masked(&self) -> String {
        let count = self.0.chars().count();
        let shown = if count >= 12 { 4 } else { 0 };
        let mut out = "*".repeat(count - shown);
        out.extend(self.0.chars().skip(count - shown));
        out
    }
}

impl Drop for FirstAuthKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Display for FirstAuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for FirstAuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FirstAuthKey({})", self.masked())
    }
}

/// One key in a key file: its kind, its value and, for a device-bound key, the unit ID it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    kind: KeyKind,
    key: FirstAuthKey,
    unit_id: Option<UnitId>,
}

/// A kind and unit ID that do not go together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyEntryError {
    /// A device-bound key must name its unit ID.
    #[error("a device-bound key must name the unit ID it is bound to")]
    MissingUnitId,
    /// Only device-bound keys name a unit ID.
    #[error("a {0} key cannot name a unit ID; only device-bound keys do")]
    UnexpectedUnitId(KeyKind),
}

impl KeyEntry {
    /// A key of `kind`; `unit_id` must be given exactly when the kind is device-bound.
    pub fn new(
        kind: KeyKind,
        key: FirstAuthKey,
        unit_id: Option<UnitId>,
    ) -> Result<Self, KeyEntryError> {
        match (kind, &unit_id) {
            (KeyKind::DeviceBound, None) => Err(KeyEntryError::MissingUnitId),
            (KeyKind::OneTime | KeyKind::MassDeployment, Some(_)) => {
                Err(KeyEntryError::UnexpectedUnitId(kind))
            }
            _ => Ok(Self { kind, key, unit_id }),
        }
    }

    /// A one-time key any device may use once.
    pub fn one_time(key: FirstAuthKey) -> Self {
        Self {
            kind: KeyKind::OneTime,
            key,
            unit_id: None,
        }
    }

    /// A one-time key only `unit_id` may use.
    pub fn device_bound(key: FirstAuthKey, unit_id: UnitId) -> Self {
        Self {
            kind: KeyKind::DeviceBound,
            key,
            unit_id: Some(unit_id),
        }
    }

    /// A mass-deployment key.
    pub fn mass(key: FirstAuthKey) -> Self {
        Self {
            kind: KeyKind::MassDeployment,
            key,
            unit_id: None,
        }
    }

    /// The key's kind.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The key value (masked when printed).
    pub fn key(&self) -> &FirstAuthKey {
        &self.key
    }

    /// The unit ID a device-bound key names.
    pub fn unit_id(&self) -> Option<&UnitId> {
        self.unit_id.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_all_but_the_last_four_of_a_long_key() {
        let key = FirstAuthKey::new("12345678901239621").unwrap();
        assert_eq!(key.to_string(), "*************9621");
        assert_eq!(format!("{key:?}"), "FirstAuthKey(*************9621)");
        assert_eq!(key.expose_secret(), "12345678901239621");
    }

    #[test]
    fn masks_a_short_password_whole() {
        let key = FirstAuthKey::new("hunter2").unwrap();
        assert_eq!(key.masked(), "*******");
        assert!(!format!("{key} {key:?} {key:#?}").contains("hunter2"));
    }

    #[test]
    fn refuses_values_the_formats_cannot_carry() {
        assert_eq!(FirstAuthKey::new(""), Err(KeyValueError::Empty));
        assert_eq!(
            FirstAuthKey::new("a".repeat(129)),
            Err(KeyValueError::TooLong)
        );
        assert!(FirstAuthKey::new("é".repeat(128)).is_ok());
        assert_eq!(
            FirstAuthKey::new("ab\ncd"),
            Err(KeyValueError::ControlCharacter)
        );
        assert_eq!(
            FirstAuthKey::new(" abc"),
            Err(KeyValueError::SurroundingWhitespace)
        );
        assert!(FirstAuthKey::new("pass word & <more>").is_ok());
    }

    #[test]
    fn kinds_have_stable_names() {
        for kind in KeyKind::ALL {
            assert_eq!(kind.as_str().parse::<KeyKind>().unwrap(), kind);
        }
        assert_eq!(
            "Mass-Deployment".parse::<KeyKind>().unwrap(),
            KeyKind::MassDeployment
        );
        assert!(
            "two-time"
                .parse::<KeyKind>()
                .unwrap_err()
                .to_string()
                .contains("one-time")
        );
    }

    #[test]
    fn entry_ties_unit_id_to_device_bound() {
        let key = || FirstAuthKey::new("12345678901234567").unwrap();
        let unit: UnitId = "00E0C5540B8B".parse().unwrap();
        assert_eq!(
            KeyEntry::new(KeyKind::DeviceBound, key(), None),
            Err(KeyEntryError::MissingUnitId)
        );
        assert_eq!(
            KeyEntry::new(KeyKind::OneTime, key(), Some(unit.clone())),
            Err(KeyEntryError::UnexpectedUnitId(KeyKind::OneTime))
        );
        let entry = KeyEntry::new(KeyKind::DeviceBound, key(), Some(unit.clone())).unwrap();
        assert_eq!(entry, KeyEntry::device_bound(key(), unit));
    }
}
