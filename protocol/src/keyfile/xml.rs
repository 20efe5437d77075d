//! The XML format (`icg.xml`), the UMS default.
//!
//! ```xml
//! <?xml version="1.0" encoding="UTF-8"?>
//! <first-authentication-keys version="1" exported="2026-11-22T10:00:00Z">
//!   <ums-id fingerprint="64 lowercase hex digits"/>
//!   <server host="ums.example.com" port="8443"/>
//!   <key type="one-time" value="12345678901234567"/>
//!   <key type="device-bound" unit-id="00E0C5540B8B" value="..."/>
//!   <key type="mass" value="..."/>
//! </first-authentication-keys>
//! ```
//!
//! Unknown elements and attributes are skipped so later versions can add to the format; a newer
//! `version` is refused. DOCTYPE, entity references other than XML's five and character references,
//! nesting deeper than the limit and values longer than the limit are refused.

use std::fmt::Write as _;

use quick_xml::Reader;
use quick_xml::XmlVersion;
use quick_xml::escape::escape;
use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesStart, Event};

use super::{
    Collected, KeyFile, KeyFileError, Limits, Position, Reason, Server, check_version, format_time,
    parse_time,
};
use crate::{FirstAuthKey, KeyEntry, KeyKind, UnitId};

const ROOT: &str = "first-authentication-keys";

pub(super) fn write(file: &KeyFile) -> String {
    let mut out = String::with_capacity(256 + file.keys.len() * 64);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = write!(out, "<{ROOT} version=\"{}\"", file.format_version);
    if let Some(time) = file.exported_at {
        let _ = write!(out, " exported=\"{}\"", format_time(time));
    }
    out.push_str(">\n");
    let _ = writeln!(out, "  <ums-id fingerprint=\"{}\"/>", file.ums_id);
    for server in &file.servers {
        let _ = writeln!(
            out,
            "  <server host=\"{}\" port=\"{}\"/>",
            escape(server.host()),
            server.port()
        );
    }
    for entry in &file.keys {
        let _ = write!(out, "  <key type=\"{}\"", entry.kind());
        if let Some(unit_id) = entry.unit_id() {
            let _ = write!(out, " unit-id=\"{unit_id}\"");
        }
        let _ = writeln!(out, " value=\"{}\"/>", escape(entry.key().expose_secret()));
    }
    let _ = writeln!(out, "</{ROOT}>");
    out
}

pub(super) fn read(text: &str, limits: &Limits) -> Result<KeyFile, KeyFileError> {
    let mut reader = Reader::from_str(text);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.expand_empty_elements = false;
    config.trim_text(false);

    let mut collected = Collected::new(limits);
    let mut depth = 0usize;
    let mut root_seen = false;
    loop {
        let start = reader.buffer_position() as usize;
        let fail = |reason: Reason| KeyFileError::at(Position::at(text, start), reason);
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(error) => {
                let position = Position::at(text, reader.error_position() as usize);
                return Err(KeyFileError::at(position, markup_error(&error)));
            }
        };
        match event {
            Event::DocType(_) => return Err(fail(Reason::Doctype)),
            Event::Start(element) | Event::Empty(element) if depth == 0 && root_seen => {
                let _ = element;
                return Err(fail(Reason::AfterRoot));
            }
            Event::Start(element) => {
                depth += 1;
                element_at(&element, depth, limits, &mut collected).map_err(fail)?;
                root_seen = true;
            }
            Event::Empty(element) => {
                element_at(&element, depth + 1, limits, &mut collected).map_err(fail)?;
                root_seen = true;
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Text(content) => {
                if depth == 0 && !content.trim().is_empty() {
                    return Err(fail(if root_seen {
                        Reason::AfterRoot
                    } else {
                        Reason::NotAKeyFile
                    }));
                }
            }
            Event::GeneralRef(reference) => {
                let known = reference.is_char_ref()
                    || quick_xml::escape::resolve_predefined_entity(&reference).is_some();
                if !known {
                    return Err(fail(Reason::UnknownEntity));
                }
            }
            Event::Eof => break,
            Event::CData(_) | Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
        }
    }
    if !root_seen {
        return Err(KeyFileError::whole(Reason::NotAKeyFile));
    }
    if depth > 0 {
        return Err(KeyFileError::at(
            Position::at(text, text.len()),
            Reason::Truncated(ROOT.to_owned()),
        ));
    }
    collected.finish()
}

/// A quick-xml error as a reason, without echoing content: an escape error could hold part of a
/// key value.
pub(super) fn markup_error(error: &quick_xml::Error) -> Reason {
    match error {
        quick_xml::Error::Escape(_) => Reason::UnknownEntity,
        other => Reason::Malformed(other.to_string().chars().take(200).collect()),
    }
}

/// Handles one element at `depth` (the root is 1).
fn element_at(
    element: &BytesStart<'_>,
    depth: usize,
    limits: &Limits,
    collected: &mut Collected,
) -> Result<(), Reason> {
    if depth > limits.max_depth {
        return Err(Reason::TooDeep(limits.max_depth));
    }
    let attributes = Attributes::read(element, limits)?;
    let name = element.name();
    let name = name.as_ref();
    match depth {
        1 if name == ROOT => {
            let version = attributes.require(ROOT, "version")?;
            collected.format_version = check_version(version)?;
            if let Some(time) = attributes.get("exported") {
                collected.exported_at = Some(parse_time(time)?);
            }
        }
        1 => {
            let shown = name.chars().take(40).collect();
            return Err(Reason::WrongRoot(shown));
        }
        2 if name == "ums-id" => {
            let fingerprint = attributes.require("ums-id", "fingerprint")?.parse()?;
            collected.set_fingerprint(fingerprint)?;
        }
        2 if name == "server" => {
            let host = attributes.require("server", "host")?;
            let port = Server::parse_port(attributes.require("server", "port")?)?;
            collected.servers.push(Server::new(host, port)?);
        }
        2 if name == "key" => {
            let kind: KeyKind = attributes.require("key", "type")?.parse()?;
            let unit_id = match attributes.get("unit-id") {
                Some(text) => Some(text.parse::<UnitId>()?),
                None => None,
            };
            let key = FirstAuthKey::new(attributes.take("key", "value")?)?;
            collected.push_key(KeyEntry::new(kind, key, unit_id)?)?;
        }
        _ => {}
    }
    Ok(())
}

/// The attributes of one element, unescaped, each checked against the field bound.
struct Attributes<'a> {
    pairs: Vec<(&'a str, std::borrow::Cow<'a, str>)>,
}

impl<'a> Attributes<'a> {
    fn read(element: &'a BytesStart<'a>, limits: &Limits) -> Result<Self, Reason> {
        let mut pairs = Vec::new();
        for attribute in element.attributes() {
            let attribute: Attribute<'a> =
                attribute.map_err(|error| Reason::Malformed(error.to_string()))?;
            if attribute.value.len() > limits.max_field_bytes {
                return Err(Reason::FieldTooLong(limits.max_field_bytes));
            }
            let value = attribute
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|error| markup_error(&error))?;
            pairs.push((attribute.key.into_inner(), value));
        }
        Ok(Self { pairs })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_ref())
    }

    fn require(&self, element: &'static str, attribute: &'static str) -> Result<&str, Reason> {
        self.get(attribute)
            .ok_or(Reason::MissingAttribute { element, attribute })
    }

    /// Moves a value out, so a key is not copied more than needed.
    fn take(mut self, element: &'static str, attribute: &'static str) -> Result<String, Reason> {
        let index = self
            .pairs
            .iter()
            .position(|(key, _)| *key == attribute)
            .ok_or(Reason::MissingAttribute { element, attribute })?;
        Ok(self.pairs.swap_remove(index).1.into_owned())
    }
}
