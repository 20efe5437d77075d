//! [`Folder`]: where a device enrolled with a key lands, as IGEL's structure tags place new
//! devices in a folder of the UMS tree.
//!
//! A folder is an absolute path of one or more names: `/Sites/Berlin`. Each name is one or more
//! characters, none of them `/` or a control character; the whole is at most [`MAX_FOLDER_CHARS`]
//! characters. [`FOLDER_PATTERN`] says the same for JSON Schema.

use std::fmt;
use std::str::FromStr;

/// The most characters of a folder path.
pub const MAX_FOLDER_CHARS: usize = 255;

/// What a folder looks like, as a regular expression (with [`MAX_FOLDER_CHARS`] as its length
/// bound).
pub const FOLDER_PATTERN: &str = r"^(/[^/\x00-\x1f\x7f-\x9f]+)+$";

/// A folder path, validated: absolute, no empty names, no control characters, bounded length.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Folder(String);

/// Why a text is not a folder. The message says what a folder looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FolderError {
    /// Not starting with `/`.
    #[error("{0:?} is not a folder: a folder is an absolute path such as /Sites/Berlin")]
    Relative(String),
    /// An empty name (`//`, a trailing `/`, or `/` alone).
    #[error("{0:?} is not a folder: it has an empty name (// or a / at the end)")]
    EmptyName(String),
    /// A control character.
    #[error("{0:?} is not a folder: it holds a control character")]
    Control(String),
    /// Too long.
    #[error("a folder has at most {MAX_FOLDER_CHARS} characters")]
    TooLong,
}

impl Folder {
    /// The path.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `self` is `prefix` or lies under it (`/Sites/Berlin` under `/Sites`, not under
    /// `/Si`).
    pub fn is_under(&self, prefix: &Folder) -> bool {
        self.0 == prefix.0
            || self
                .0
                .strip_prefix(&prefix.0)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

impl FromStr for Folder {
    type Err = FolderError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let shown = || text.chars().take(40).collect::<String>();
        if text.chars().count() > MAX_FOLDER_CHARS {
            return Err(FolderError::TooLong);
        }
        let Some(names) = text.strip_prefix('/') else {
            return Err(FolderError::Relative(shown()));
        };
        if text.chars().any(char::is_control) {
            return Err(FolderError::Control(shown()));
        }
        if names.split('/').any(str::is_empty) {
            return Err(FolderError::EmptyName(shown()));
        }
        Ok(Folder(text.to_owned()))
    }
}

impl fmt::Display for Folder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Folder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Folder({:?})", self.0)
    }
}

impl serde::Serialize for Folder {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Folder {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|error| serde::de::Error::custom(format!("folder: {error}")))
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Folder {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(FOLDER_PATTERN))
            .max_length(Some(MAX_FOLDER_CHARS))
            .min_length(Some(2))
            .description(Some(
                "A folder path where enrolled devices land: absolute, one or more names, no empty \
                 name, no control character (/Sites/Berlin)",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Folder {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_absolute_paths_of_names() {
        for good in [
            "/Sites",
            "/Sites/Berlin",
            "/a b/c-d/ä",
            "/Sites/Berlin/Floor 2",
        ] {
            assert_eq!(good.parse::<Folder>().unwrap().as_str(), good);
        }
        let bad = [
            ("", "absolute"),
            ("Sites", "absolute"),
            ("/", "empty name"),
            ("//Sites", "empty name"),
            ("/Sites/", "empty name"),
            ("/Sites//Berlin", "empty name"),
            ("/Sites/\u{7}", "control"),
            ("/Sites\n", "control"),
        ];
        for (text, why) in bad {
            let error = text.parse::<Folder>().unwrap_err().to_string();
            assert!(error.contains(why), "{text:?}: {error}");
        }
        let longest = format!("/{}", "x".repeat(MAX_FOLDER_CHARS - 1));
        assert!(longest.parse::<Folder>().is_ok());
        assert_eq!(
            format!("{longest}x").parse::<Folder>(),
            Err(FolderError::TooLong)
        );
    }

    #[test]
    fn a_folder_lies_under_itself_and_its_parents_only() {
        let folder: Folder = "/Sites/Berlin".parse().unwrap();
        for (prefix, under) in [
            ("/Sites", true),
            ("/Sites/Berlin", true),
            ("/Si", false),
            ("/Sites/Berlin/Floor", false),
            ("/Sites/Ber", false),
            ("/Other", false),
        ] {
            assert_eq!(folder.is_under(&prefix.parse().unwrap()), under, "{prefix}");
        }
    }
}
