//! The HTML format (`icg.html`): the same data as a page a person can open in a browser.
//!
//! The values sit in elements marked `data-field`; rows of servers and keys are marked `data-row`;
//! the `<html>` element carries `data-format="onboard-keys"` and the format version, so a page that
//! is not an export is told apart from one that is broken.
//!
//! ```html
//! <!DOCTYPE html>
//! <html lang="en" data-format="onboard-keys" data-format-version="1" data-exported="2026-11-22T10:00:00Z">
//! ...
//! <tr data-row="server"><td data-field="host">ums.example.com</td><td data-field="port">8443</td></tr>
//! ...
//! <code data-field="fingerprint">64 lowercase hex digits</code>
//! ...
//! <tr data-row="key"><td data-field="type">device-bound</td><td data-field="unit-id">00E0C5540B8B</td><td data-field="key">12345678901234567</td></tr>
//! ```
//!
//! The reader is lenient about end tags (HTML leaves some out) but not about entities: only XML's
//! five, `&nbsp;` and character references are taken, and only `<!DOCTYPE html>` is.

use std::fmt::Write as _;

use quick_xml::Reader;
use quick_xml::escape::{escape, resolve_predefined_entity};
use quick_xml::events::{BytesStart, Event};

use super::xml::markup_error;
use super::{
    Collected, KeyFile, KeyFileError, Limits, Position, Reason, Server, check_version, format_time,
    parse_time,
};
use crate::{FirstAuthKey, KeyEntry, KeyKind, UnitId};

const MARKER: &str = "onboard-keys";

/// Elements HTML never closes.
const VOID: [&str; 14] = [
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr",
];

pub(super) fn write(file: &KeyFile) -> String {
    let mut out = String::with_capacity(1024 + file.keys.len() * 160);
    out.push_str("<!DOCTYPE html>\n");
    let _ = write!(
        out,
        "<html lang=\"en\" data-format=\"{MARKER}\" data-format-version=\"{}\"",
        file.format_version
    );
    if let Some(time) = file.exported_at {
        let _ = write!(out, " data-exported=\"{}\"", format_time(time));
    }
    out.push_str(
        ">\n<head>\n<meta charset=\"utf-8\" />\n<title>First-authentication keys</title>\n",
    );
    out.push_str(
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}\
         td,th{border:1px solid #999;padding:2px 8px}code,td{font-family:monospace}</style>\n",
    );
    out.push_str("</head>\n<body>\n<h1>First-authentication keys</h1>\n");
    if let Some(time) = file.exported_at {
        let _ = writeln!(out, "<p>Exported {}.</p>", format_time(time));
    }
    out.push_str(
        "<h2>Servers</h2>\n<table>\n<thead><tr><th>Host</th><th>Port</th></tr></thead>\n<tbody>\n",
    );
    for server in &file.servers {
        let _ = writeln!(
            out,
            "<tr data-row=\"server\"><td data-field=\"host\">{}</td><td data-field=\"port\">{}</td></tr>",
            escape(server.host()),
            server.port()
        );
    }
    out.push_str("</tbody>\n</table>\n<h2>UMS ID</h2>\n");
    let _ = writeln!(
        out,
        "<p>Root certificate fingerprint (SHA-256): <code data-field=\"fingerprint\">{}</code></p>",
        file.ums_id
    );
    out.push_str(
        "<h2>Keys</h2>\n<table>\n<thead><tr><th>Type</th><th>Unit ID</th><th>Key</th></tr></thead>\n<tbody>\n",
    );
    for entry in &file.keys {
        let unit_id = entry.unit_id().map(ToString::to_string).unwrap_or_default();
        let _ = writeln!(
            out,
            "<tr data-row=\"key\"><td data-field=\"type\">{}</td><td data-field=\"unit-id\">{unit_id}</td>\
             <td data-field=\"key\">{}</td></tr>",
            entry.kind(),
            escape(entry.key().expose_secret())
        );
    }
    out.push_str("</tbody>\n</table>\n</body>\n</html>\n");
    out
}

/// A row being read: its kind and the fields seen so far.
struct Row {
    kind: RowKind,
    depth: usize,
    start: usize,
    fields: Vec<(String, String)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RowKind {
    Server,
    Key,
}

impl Row {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }

    fn require(&self, name: &'static str) -> Result<&str, Reason> {
        self.field(name).ok_or(Reason::MissingAttribute {
            element: if self.kind == RowKind::Key {
                "tr data-row=\"key\""
            } else {
                "tr data-row=\"server\""
            },
            attribute: name,
        })
    }

    fn take(&mut self, name: &'static str) -> Result<String, Reason> {
        self.require(name)?;
        let index = self
            .fields
            .iter()
            .position(|(field, _)| field == name)
            .unwrap_or(0);
        Ok(self.fields.swap_remove(index).1)
    }

    fn finish(mut self, collected: &mut Collected) -> Result<(), Reason> {
        match self.kind {
            RowKind::Server => {
                let port = Server::parse_port(self.require("port")?)?;
                collected
                    .servers
                    .push(Server::new(self.require("host")?, port)?);
            }
            RowKind::Key => {
                let kind: KeyKind = self.require("type")?.parse()?;
                let unit_id = match self.field("unit-id").filter(|text| !text.is_empty()) {
                    Some(text) => Some(text.parse::<UnitId>()?),
                    None => None,
                };
                let key = FirstAuthKey::new(self.take("key")?)?;
                collected.push_key(KeyEntry::new(kind, key, unit_id)?)?;
            }
        }
        Ok(())
    }
}

/// A `data-field` element whose text is being gathered.
struct Capture {
    name: String,
    depth: usize,
    text: String,
}

pub(super) fn read(text: &str, limits: &Limits) -> Result<KeyFile, KeyFileError> {
    let mut reader = Reader::from_str(text);
    let config = reader.config_mut();
    config.check_end_names = false;
    config.allow_unmatched_ends = true;
    config.expand_empty_elements = false;
    config.trim_text(false);

    let mut collected = Collected::new(limits);
    let mut depth = 0usize;
    let mut marked = false;
    let mut row: Option<Row> = None;
    let mut capture: Option<Capture> = None;
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
            Event::DocType(doctype) => {
                if !doctype.trim().eq_ignore_ascii_case("html") {
                    return Err(fail(Reason::Doctype));
                }
            }
            Event::Start(element) | Event::Empty(element) if !marked => {
                // The first element must be the marked <html>.
                marked = html_element(&element, limits, &mut collected).map_err(fail)?;
                if !marked {
                    return Err(fail(Reason::NotAKeyFile));
                }
                depth = 1;
            }
            Event::Start(element) => {
                if VOID.contains(&element.local_name().as_ref()) {
                    continue;
                }
                depth += 1;
                if depth > limits.max_depth {
                    return Err(fail(Reason::TooDeep(limits.max_depth)));
                }
                let marks = Marks::read(&element, limits).map_err(fail)?;
                if let Some(kind) = marks.row {
                    if row.is_some() {
                        return Err(fail(Reason::Malformed(
                            "a data-row inside another data-row".into(),
                        )));
                    }
                    row = Some(Row {
                        kind,
                        depth,
                        start,
                        fields: Vec::new(),
                    });
                }
                if let Some(name) = marks.field {
                    if capture.is_some() {
                        return Err(fail(Reason::Malformed(
                            "a data-field inside another data-field".into(),
                        )));
                    }
                    capture = Some(Capture {
                        name,
                        depth,
                        text: String::new(),
                    });
                }
            }
            Event::Empty(element) => {
                if depth + 1 > limits.max_depth {
                    return Err(fail(Reason::TooDeep(limits.max_depth)));
                }
                let marks = Marks::read(&element, limits).map_err(fail)?;
                if let Some(name) = marks.field {
                    store_field(name, String::new(), &mut row, &mut collected).map_err(fail)?;
                }
            }
            Event::End(element) => {
                if VOID.contains(&element.local_name().as_ref()) {
                    continue;
                }
                if capture.as_ref().is_some_and(|open| open.depth == depth) {
                    let done = capture.take().unwrap_or_else(|| unreachable!());
                    let value = done.text.trim().to_owned();
                    store_field(done.name, value, &mut row, &mut collected).map_err(fail)?;
                }
                if row.as_ref().is_some_and(|open| open.depth == depth) {
                    let done = row.take().unwrap_or_else(|| unreachable!());
                    let row_start = done.start;
                    done.finish(&mut collected).map_err(|reason| {
                        KeyFileError::at(Position::at(text, row_start), reason)
                    })?;
                }
                depth = depth.saturating_sub(1);
            }
            Event::Text(content) => {
                if let Some(open) = capture.as_mut() {
                    append(open, &content.html_content(), limits).map_err(fail)?;
                }
            }
            Event::CData(content) => {
                if let Some(open) = capture.as_mut() {
                    append(open, &content, limits).map_err(fail)?;
                }
            }
            Event::GeneralRef(reference) => {
                let resolved = resolve_reference(&reference)
                    .ok_or(Reason::UnknownEntity)
                    .map_err(fail)?;
                if let Some(open) = capture.as_mut() {
                    append(open, &resolved, limits).map_err(fail)?;
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
        }
    }
    if !marked {
        return Err(KeyFileError::whole(Reason::NotAKeyFile));
    }
    if let Some(open) = row {
        return Err(KeyFileError::at(
            Position::at(text, open.start),
            Reason::Truncated("tr data-row".to_owned()),
        ));
    }
    collected.finish()
}

fn append(capture: &mut Capture, more: &str, limits: &Limits) -> Result<(), Reason> {
    if capture.text.len() + more.len() > limits.max_field_bytes {
        return Err(Reason::FieldTooLong(limits.max_field_bytes));
    }
    capture.text.push_str(more);
    Ok(())
}

fn resolve_reference(reference: &quick_xml::events::BytesRef<'_>) -> Option<String> {
    if reference.is_char_ref() {
        return reference
            .resolve_char_ref()
            .ok()
            .flatten()
            .map(String::from);
    }
    let name: &str = reference;
    if name == "nbsp" {
        return Some("\u{a0}".to_owned());
    }
    resolve_predefined_entity(name).map(str::to_owned)
}

/// Records a finished field in the open row, or as the file-level fingerprint.
fn store_field(
    name: String,
    value: String,
    row: &mut Option<Row>,
    collected: &mut Collected,
) -> Result<(), Reason> {
    match row {
        Some(open) => open.fields.push((name, value)),
        None if name == "fingerprint" => collected.set_fingerprint(value.parse()?)?,
        None => {}
    }
    Ok(())
}

/// Checks the `<html>` element for the marker, version and export time. `Ok(false)` when it is not
/// a key-file page.
fn html_element(
    element: &BytesStart<'_>,
    limits: &Limits,
    collected: &mut Collected,
) -> Result<bool, Reason> {
    if !element.local_name().as_ref().eq_ignore_ascii_case("html") {
        return Ok(false);
    }
    let mut marked = false;
    for attribute in element.html_attributes() {
        let attribute = attribute.map_err(|error| Reason::Malformed(error.to_string()))?;
        if attribute.value.len() > limits.max_field_bytes {
            return Err(Reason::FieldTooLong(limits.max_field_bytes));
        }
        let value = &attribute.value;
        match attribute.key.as_ref() {
            "data-format" => marked = value == MARKER,
            "data-format-version" => collected.format_version = check_version(value)?,
            "data-exported" => collected.exported_at = Some(parse_time(value)?),
            _ => {}
        }
    }
    Ok(marked)
}

/// The `data-row` and `data-field` marks of an element.
struct Marks {
    row: Option<RowKind>,
    field: Option<String>,
}

impl Marks {
    fn read(element: &BytesStart<'_>, limits: &Limits) -> Result<Self, Reason> {
        let mut marks = Marks {
            row: None,
            field: None,
        };
        for attribute in element.html_attributes() {
            let attribute = attribute.map_err(|error| Reason::Malformed(error.to_string()))?;
            if attribute.value.len() > limits.max_field_bytes {
                return Err(Reason::FieldTooLong(limits.max_field_bytes));
            }
            match attribute.key.as_ref() {
                "data-row" => {
                    marks.row = match attribute.value.as_ref() {
                        "server" => Some(RowKind::Server),
                        "key" => Some(RowKind::Key),
                        _ => None,
                    }
                }
                "data-field" => {
                    marks.field = Some(attribute.value.into_owned());
                }
                _ => {}
            }
        }
        Ok(marks)
    }
}
