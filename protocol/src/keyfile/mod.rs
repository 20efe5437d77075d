//! The key file an administrator exports onto a USB stick, in three formats (ARCHITECTURE §5).
//!
//! [`KeyFile`] is the model: the servers to contact, the UMS ID fingerprint to pin, and the keys.
//! Each format has a writer ([`KeyFile::write`]) and a reader; [`KeyFile::parse`] detects the format
//! from the bytes. Readers treat their input as hostile: the caller bounds the size, the readers
//! bound nesting, field length and key count, refuse DOCTYPE and entity declarations, take UTF-8
//! (with or without BOM) and UTF-16 with BOM, and name the line (and column) of every refusal.
//! No refusal message ever holds a key value.

mod decode;
mod html;
mod text;
mod xml;

use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::{
    Fingerprint, FingerprintError, KeyEntry, KeyEntryError, KeyKind, KeyKindError, KeyValueError,
    UnitIdError,
};

pub use decode::Position;

/// The key-file format version these readers and writers speak.
pub const FORMAT_VERSION: u32 = 1;

/// A key file: what one export holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    /// The format version it was written in.
    pub format_version: u32,
    /// When the UMS exported it, if the file says (the UMS clipboard text does not).
    pub exported_at: Option<OffsetDateTime>,
    /// The servers to try, in order.
    pub servers: Vec<Server>,
    /// The fingerprint of the UMS ID the servers' TLS chains must be anchored in.
    pub ums_id: Fingerprint,
    /// The keys, in the order the export listed them.
    pub keys: Vec<KeyEntry>,
}

/// A server a device may enroll with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Server {
    host: String,
    port: u16,
}

/// Why a host name or port cannot name a server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerError {
    /// Empty, too long, or holding white space, control characters or URL delimiters. The text
    /// is not echoed: a misplaced key may sit there.
    #[error(
        "not a host name or address (empty, over 253 characters, or holding white space, control \
         characters or one of / ? # @ \\ < > \" ' &)"
    )]
    BadHost,
    /// Not a number from 1 to 65535. The text is not echoed: a misplaced key may sit there.
    #[error("the port is not a number from 1 to 65535")]
    BadPort,
}

impl Server {
    /// A server at `host` (a DNS name or an IP address) and `port`.
    pub fn new(host: impl Into<String>, port: u16) -> Result<Self, ServerError> {
        let host = host.into();
        let bad = host.is_empty()
            || host.chars().count() > 253
            || host
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "/?#@\\<>\"'&".contains(c));
        if bad {
            return Err(ServerError::BadHost);
        }
        if port == 0 {
            return Err(ServerError::BadPort);
        }
        Ok(Self { host, port })
    }

    /// Parses a port as written in a key file.
    fn parse_port(text: &str) -> Result<u16, ServerError> {
        match text.trim().parse::<u16>() {
            Ok(port) if port != 0 => Ok(port),
            _ => Err(ServerError::BadPort),
        }
    }

    /// The host name or address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The three key-file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `icg.xml`, the default.
    Xml,
    /// `icg.html`, a page a person can read, with the values in marked-up cells.
    Html,
    /// `icg.txt`, the UMS clipboard / e-mail layout.
    Text,
}

impl Format {
    /// Every format.
    pub const ALL: [Format; 3] = [Format::Xml, Format::Html, Format::Text];

    /// The stable name used on command lines and in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Format::Xml => "xml",
            Format::Html => "html",
            Format::Text => "text",
        }
    }

    /// The file name the UMS suggests for this format.
    pub const fn default_file_name(self) -> &'static str {
        match self {
            Format::Xml => "icg.xml",
            Format::Html => "icg.html",
            Format::Text => "icg.txt",
        }
    }

    /// Which format `bytes` are in, judged from their first markup or labels.
    pub fn detect(bytes: &[u8], limits: &Limits) -> Result<Format, KeyFileError> {
        let text = decode::decode(bytes, limits)?;
        detect_text(&text)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Format {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Format {
    /// Only the stable names, exactly: `xml`, `html`, `text`.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Format::ALL
            .into_iter()
            .find(|format| format.as_str() == text)
            .ok_or_else(|| serde::de::Error::custom(UnknownFormat(text.chars().take(40).collect())))
    }
}

/// A text that names no key-file format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a key-file format: expected xml, html or text")]
pub struct UnknownFormat(String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "xml" => Ok(Format::Xml),
            "html" | "htm" => Ok(Format::Html),
            "text" | "txt" => Ok(Format::Text),
            _ => Err(UnknownFormat(text.chars().take(40).collect())),
        }
    }
}

/// Bounds a reader enforces. The caller decides the byte size; the others have safe defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes a key file may have.
    pub max_bytes: usize,
    /// The deepest element nesting (XML and HTML).
    pub max_depth: usize,
    /// The most keys one file may hold.
    pub max_keys: usize,
    /// The most bytes one value (an attribute, a cell, a line's value) may have.
    pub max_field_bytes: usize,
}

impl Default for Limits {
    /// 16 MiB, depth 32, 1,000,000 keys, 4 KiB per value.
    fn default() -> Self {
        Self {
            max_bytes: 16 * 1024 * 1024,
            max_depth: 32,
            max_keys: 1_000_000,
            max_field_bytes: 4096,
        }
    }
}

/// A refused key file: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFileError {
    /// The line (and column, where there is one) at fault; `None` for the whole file.
    pub position: Option<Position>,
    /// What is wrong.
    pub reason: Reason,
}

impl KeyFileError {
    fn whole(reason: Reason) -> Self {
        Self {
            position: None,
            reason,
        }
    }

    fn at(position: Position, reason: Reason) -> Self {
        Self {
            position: Some(position),
            reason,
        }
    }
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.position {
            Some(position) => write!(f, "{position}: {}", self.reason),
            None => self.reason.fmt(f),
        }
    }
}

impl std::error::Error for KeyFileError {}

/// What is wrong with a key file. No variant carries a key value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reason {
    /// Bigger than [`Limits::max_bytes`].
    #[error("the file is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// The file's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// No bytes, or only white space.
    #[error("the file is empty")]
    Empty,
    /// Bytes that are not UTF-8, without a byte-order mark saying otherwise.
    #[error("invalid UTF-8 (key files are UTF-8, or UTF-16 with a byte-order mark)")]
    InvalidUtf8,
    /// A UTF-16 file with an unpaired surrogate.
    #[error("invalid UTF-16: an unpaired surrogate")]
    InvalidUtf16,
    /// A UTF-16 byte-order mark followed by an odd number of bytes.
    #[error("UTF-16 text with an odd number of bytes (the file is cut short)")]
    OddUtf16Length,
    /// A NUL character: binary data, or UTF-16 saved without a byte-order mark.
    #[error("a NUL character: binary data, or UTF-16 without a byte-order mark")]
    NulCharacter,
    /// Neither markup of ours nor the clipboard text layout.
    #[error(
        "not a key file: expected an XML export (<first-authentication-keys>), an HTML export \
         (<html data-format=\"onboard-keys\">) or the UMS clipboard text (Host:, Port:, Part 1-4:, \
         First-authentication key:)"
    )]
    NotAKeyFile,
    /// A DOCTYPE (and so possibly entity declarations): never accepted in a key file.
    #[error("a DOCTYPE declaration; key files must not declare a document type or entities")]
    Doctype,
    /// An entity reference other than XML's five predefined ones or a character reference.
    #[error(
        "an entity reference that is not a character reference or one of &amp; &lt; &gt; &quot; &apos;"
    )]
    UnknownEntity,
    /// Elements nested deeper than [`Limits::max_depth`].
    #[error("elements nested deeper than {0} levels")]
    TooDeep(usize),
    /// More keys than [`Limits::max_keys`].
    #[error("more than {0} keys")]
    TooManyKeys(usize),
    /// One value longer than [`Limits::max_field_bytes`].
    #[error("a value longer than {0} bytes")]
    FieldTooLong(usize),
    /// Markup that does not parse.
    #[error("malformed markup: {0}")]
    Malformed(String),
    /// The file ends with elements still open.
    #[error("the file ends before <{0}> is closed (cut short?)")]
    Truncated(String),
    /// XML whose root element is not ours.
    #[error("the root element is <{0}>, expected <first-authentication-keys>")]
    WrongRoot(String),
    /// Content after the root element closed.
    #[error("content after the end of the root element")]
    AfterRoot,
    /// A required attribute or field is missing.
    #[error("<{element}> has no {attribute} attribute")]
    MissingAttribute {
        /// The element.
        element: &'static str,
        /// The attribute it lacks.
        attribute: &'static str,
    },
    /// A format version this reader does not know.
    #[error("a format version this reader does not know (it knows version {FORMAT_VERSION})")]
    UnsupportedVersion,
    /// An export time that is not RFC 3339.
    #[error("the export time is not an RFC 3339 timestamp")]
    BadTimestamp,
    /// A bad UMS ID fingerprint.
    #[error(transparent)]
    Fingerprint(#[from] FingerprintError),
    /// Two different UMS ID fingerprints in one file.
    #[error("a second UMS ID fingerprint that differs from the first; one file pins one UMS ID")]
    ConflictingFingerprint,
    /// No UMS ID fingerprint at all.
    #[error("no UMS ID fingerprint")]
    MissingFingerprint,
    /// A bad unit ID. Unlike [`UnitIdError`], the text is not echoed: in a key file a misplaced
    /// key may sit where the unit ID belongs.
    #[error(
        "not a unit ID: expected a MAC address of 12 hex digits (00:E0:C5:54:0B:8B or 00E0C5540B8B) \
         or an 18-character UD Pocket serial"
    )]
    UnitId,
    /// A bad key value.
    #[error(transparent)]
    KeyValue(#[from] KeyValueError),
    /// A bad key type.
    #[error(transparent)]
    KeyKind(#[from] KeyKindError),
    /// A key type and unit ID that do not go together.
    #[error(transparent)]
    KeyEntry(#[from] KeyEntryError),
    /// A bad host or port.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// No server named.
    #[error("the file names no server")]
    NoServer,
    /// No key held.
    #[error("the file holds no first-authentication key")]
    NoKeys,
    /// A clipboard-text block that breaks the layout.
    #[error("{0}")]
    Layout(&'static str),
}

impl From<UnitIdError> for Reason {
    fn from(_: UnitIdError) -> Self {
        Reason::UnitId
    }
}

impl KeyFile {
    /// A key file in the current format version.
    pub fn new(
        servers: Vec<Server>,
        ums_id: Fingerprint,
        keys: Vec<KeyEntry>,
        exported_at: Option<OffsetDateTime>,
    ) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            exported_at,
            servers,
            ums_id,
            keys,
        }
    }

    /// Reads a key file in any of the three formats, detected from the bytes.
    pub fn parse(bytes: &[u8], limits: &Limits) -> Result<KeyFile, KeyFileError> {
        let text = decode::decode(bytes, limits)?;
        let format = detect_text(&text)?;
        Self::parse_text(&text, format, limits)
    }

    /// Reads a key file that must be in `format`.
    pub fn parse_as(
        bytes: &[u8],
        format: Format,
        limits: &Limits,
    ) -> Result<KeyFile, KeyFileError> {
        let text = decode::decode(bytes, limits)?;
        Self::parse_text(&text, format, limits)
    }

    fn parse_text(text: &str, format: Format, limits: &Limits) -> Result<KeyFile, KeyFileError> {
        match format {
            Format::Xml => xml::read(text, limits),
            Format::Html => html::read(text, limits),
            Format::Text => text::read(text, limits),
        }
    }

    /// Writes the key file in `format`, as UTF-8. The output holds the key values in the clear:
    /// the caller writes it to a file only the administrator can read.
    pub fn write(&self, format: Format) -> String {
        match format {
            Format::Xml => xml::write(self),
            Format::Html => html::write(self),
            Format::Text => text::write(self),
        }
    }

    /// How many keys of `kind` the file holds.
    pub fn count(&self, kind: KeyKind) -> usize {
        self.keys
            .iter()
            .filter(|entry| entry.kind() == kind)
            .count()
    }
}

impl fmt::Display for KeyFile {
    /// A one-line summary without any key value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let servers: Vec<String> = self.servers.iter().map(Server::to_string).collect();
        write!(
            f,
            "key file (format {}): server {}, UMS ID {}, {} keys ({} device-bound, {} one-time, {} mass)",
            self.format_version,
            servers.join(", "),
            self.ums_id.short(),
            self.keys.len(),
            self.count(KeyKind::DeviceBound),
            self.count(KeyKind::OneTime),
            self.count(KeyKind::MassDeployment),
        )
    }
}

fn detect_text(text: &str) -> Result<Format, KeyFileError> {
    let mut head = text.trim_start();
    if head.is_empty() {
        return Err(KeyFileError::whole(Reason::Empty));
    }
    if head.starts_with('<') {
        // Look past an XML declaration and comments for the first element or DOCTYPE.
        loop {
            if head.starts_with("<?") {
                match head.find("?>") {
                    Some(end) => head = head[end + 2..].trim_start(),
                    None => break,
                }
            } else if head.starts_with("<!--") {
                match head.find("-->") {
                    Some(end) => head = head[end + 3..].trim_start(),
                    None => break,
                }
            } else {
                break;
            }
        }
        let lower: String = head
            .chars()
            .take(16)
            .collect::<String>()
            .to_ascii_lowercase();
        let is_html = lower.starts_with("<html")
            || (lower.starts_with("<!doctype") && lower[9..].trim_start().starts_with("html"));
        return Ok(if is_html { Format::Html } else { Format::Xml });
    }
    let has_host = text.lines().any(|line| {
        line.trim_start()
            .get(..5)
            .is_some_and(|label| label.eq_ignore_ascii_case("host:"))
    });
    if has_host {
        Ok(Format::Text)
    } else {
        Err(KeyFileError::whole(Reason::NotAKeyFile))
    }
}

/// Formats an export time as the writers print it.
fn format_time(time: OffsetDateTime) -> String {
    time.format(&Rfc3339).unwrap_or_default()
}

/// Parses an export time as the writers print it.
fn parse_time(text: &str) -> Result<OffsetDateTime, Reason> {
    OffsetDateTime::parse(text.trim(), &Rfc3339).map_err(|_| Reason::BadTimestamp)
}

/// Checks a format version attribute or line.
fn check_version(text: &str) -> Result<u32, Reason> {
    match text.trim().parse::<u32>() {
        Ok(FORMAT_VERSION) => Ok(FORMAT_VERSION),
        _ => Err(Reason::UnsupportedVersion),
    }
}

/// Collects what a reader finds and checks the whole at the end.
struct Collected {
    format_version: u32,
    exported_at: Option<OffsetDateTime>,
    servers: Vec<Server>,
    ums_id: Option<Fingerprint>,
    keys: Vec<KeyEntry>,
    max_keys: usize,
}

impl Collected {
    fn new(limits: &Limits) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            exported_at: None,
            servers: Vec::new(),
            ums_id: None,
            keys: Vec::new(),
            max_keys: limits.max_keys,
        }
    }

    fn set_fingerprint(&mut self, fingerprint: Fingerprint) -> Result<(), Reason> {
        match self.ums_id {
            Some(existing) if existing != fingerprint => Err(Reason::ConflictingFingerprint),
            _ => {
                self.ums_id = Some(fingerprint);
                Ok(())
            }
        }
    }

    fn push_key(&mut self, entry: KeyEntry) -> Result<(), Reason> {
        if self.keys.len() >= self.max_keys {
            return Err(Reason::TooManyKeys(self.max_keys));
        }
        self.keys.push(entry);
        Ok(())
    }

    fn finish(self) -> Result<KeyFile, KeyFileError> {
        let ums_id = self
            .ums_id
            .ok_or(KeyFileError::whole(Reason::MissingFingerprint))?;
        if self.servers.is_empty() {
            return Err(KeyFileError::whole(Reason::NoServer));
        }
        if self.keys.is_empty() {
            return Err(KeyFileError::whole(Reason::NoKeys));
        }
        Ok(KeyFile {
            format_version: self.format_version,
            exported_at: self.exported_at,
            servers: self.servers,
            ums_id,
            keys: self.keys,
        })
    }
}
