//! The text format (`icg.txt`): the UMS clipboard / e-mail layout, one block per server.
//!
//! ```text
//! First-authentication keys
//! Format version: 1
//! Exported: 2026-11-22T10:00:00Z
//!
//! Host: ums.example.com
//! Port: 8443
//! Root Certificate Fingerprint
//! Part 1: 0123456789abcdef
//! Part 2: 0011223344556677
//! Part 3: 8899aabbccddeeff
//! Part 4: 0f1e2d3c4b5a6978
//! First-authentication key: 12345678901234567
//! Key type: one-time
//! ```
//!
//! A block starts at `Host:`. Each `First-authentication key:` line may be followed by `Key type:`
//! and `Unit ID:` lines for that key (our addition to the UMS layout; a key without `Key type:` is
//! taken as one-time, or device-bound when it names a unit ID). Every block carries the same
//! fingerprint and keys, so one block copied alone into an e-mail still works; the reader checks
//! that they agree. Labels are matched without regard to case; other lines (an e-mail's greeting)
//! are skipped.

use std::fmt::Write as _;

use super::{
    Collected, KeyFile, KeyFileError, Limits, Position, Reason, Server, check_version, format_time,
    parse_time,
};
use crate::{Fingerprint, FirstAuthKey, KeyEntry, KeyKind, UnitId};

pub(super) fn write(file: &KeyFile) -> String {
    let mut out = String::with_capacity(256 + file.servers.len() * (300 + file.keys.len() * 64));
    out.push_str("First-authentication keys\n");
    let _ = writeln!(out, "Format version: {}", file.format_version);
    if let Some(time) = file.exported_at {
        let _ = writeln!(out, "Exported: {}", format_time(time));
    }
    let [part1, part2, part3, part4] = file.ums_id.parts();
    for server in &file.servers {
        let _ = write!(
            out,
            "\nHost: {}\nPort: {}\nRoot Certificate Fingerprint\n\
             Part 1: {part1}\nPart 2: {part2}\nPart 3: {part3}\nPart 4: {part4}\n",
            server.host(),
            server.port()
        );
        for entry in &file.keys {
            let _ = writeln!(
                out,
                "First-authentication key: {}",
                entry.key().expose_secret()
            );
            let _ = writeln!(out, "Key type: {}", entry.kind());
            if let Some(unit_id) = entry.unit_id() {
                let _ = writeln!(out, "Unit ID: {unit_id}");
            }
        }
    }
    out
}

/// A key as read, before its kind is settled.
struct PendingKey {
    line: usize,
    key: FirstAuthKey,
    kind: Option<KeyKind>,
    unit_id: Option<UnitId>,
}

/// One `Host:` block.
struct Block {
    line: usize,
    server_host: String,
    port: Option<(usize, String)>,
    whole: Option<Fingerprint>,
    parts: [Option<String>; 4],
    keys: Vec<PendingKey>,
}

impl Block {
    fn finish(
        self,
        collected: &mut Collected,
        first_keys: &mut Option<Vec<KeyEntry>>,
    ) -> Result<(), KeyFileError> {
        let at_block = |reason: Reason| KeyFileError::at(Position::line(self.line), reason);
        let (port_line, port_text) = self
            .port
            .ok_or_else(|| at_block(Reason::Layout("the block has no Port: line")))?;
        let port = Server::parse_port(&port_text)
            .map_err(|error| KeyFileError::at(Position::line(port_line), error.into()))?;
        let server = Server::new(self.server_host, port).map_err(|error| at_block(error.into()))?;
        let fingerprint = match (self.whole, &self.parts) {
            (Some(whole), [None, None, None, None]) => whole,
            (None, [Some(a), Some(b), Some(c), Some(d)]) => {
                Fingerprint::from_parts([a, b, c, d]).map_err(|error| at_block(error.into()))?
            }
            (None, [None, None, None, None]) => {
                return Err(at_block(Reason::Layout(
                    "the block has no Root Certificate Fingerprint (Part 1: to Part 4:)",
                )));
            }
            (Some(_), _) => {
                return Err(at_block(Reason::Layout(
                    "the block gives the fingerprint both whole and in parts",
                )));
            }
            (None, _) => {
                return Err(at_block(Reason::Layout(
                    "the block lacks one of Part 1: to Part 4:",
                )));
            }
        };
        collected.set_fingerprint(fingerprint).map_err(at_block)?;
        collected.servers.push(server);

        let mut keys = Vec::with_capacity(self.keys.len());
        for pending in self.keys {
            let kind = pending.kind.unwrap_or(if pending.unit_id.is_some() {
                KeyKind::DeviceBound
            } else {
                KeyKind::OneTime
            });
            let entry = KeyEntry::new(kind, pending.key, pending.unit_id)
                .map_err(|error| KeyFileError::at(Position::line(pending.line), error.into()))?;
            keys.push(entry);
        }
        match first_keys {
            None => *first_keys = Some(keys),
            Some(first) if *first == keys => {}
            Some(_) => {
                return Err(at_block(Reason::Layout(
                    "this block lists other keys than the first block; every block of one export lists the same keys",
                )));
            }
        }
        Ok(())
    }
}

pub(super) fn read(text: &str, limits: &Limits) -> Result<KeyFile, KeyFileError> {
    let mut collected = Collected::new(limits);
    let mut block: Option<Block> = None;
    let mut first_keys: Option<Vec<KeyEntry>> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let fail = |reason: Reason| KeyFileError::at(Position::line(line), reason);
        let trimmed = raw.trim();
        let (label, value) = match trimmed.split_once(':') {
            Some((label, value)) => (label.trim(), value.trim()),
            None => (trimmed, ""),
        };
        let label = label.to_ascii_lowercase();
        let known = matches!(
            label.as_str(),
            "format version"
                | "exported"
                | "host"
                | "port"
                | "root certificate fingerprint"
                | "part 1"
                | "part 2"
                | "part 3"
                | "part 4"
                | "first-authentication key"
                | "key type"
                | "unit id"
        );
        if !known {
            continue;
        }
        if value.len() > limits.max_field_bytes {
            return Err(fail(Reason::FieldTooLong(limits.max_field_bytes)));
        }
        match label.as_str() {
            "format version" => collected.format_version = check_version(value).map_err(fail)?,
            "exported" => collected.exported_at = Some(parse_time(value).map_err(fail)?),
            "host" => {
                if let Some(done) = block.take() {
                    done.finish(&mut collected, &mut first_keys)?;
                }
                block = Some(Block {
                    line,
                    server_host: value.to_owned(),
                    port: None,
                    whole: None,
                    parts: Default::default(),
                    keys: Vec::new(),
                });
            }
            _ => {
                let open = block.as_mut().ok_or_else(|| {
                    fail(Reason::Layout("a block's line before the first Host: line"))
                })?;
                field(open, &label, value, line, limits).map_err(fail)?;
            }
        }
    }
    match block {
        Some(done) => done.finish(&mut collected, &mut first_keys)?,
        None => return Err(KeyFileError::whole(Reason::NotAKeyFile)),
    }
    for entry in first_keys.unwrap_or_default() {
        collected.push_key(entry).map_err(KeyFileError::whole)?;
    }
    collected.finish()
}

/// Applies one labelled line inside a block.
fn field(
    block: &mut Block,
    label: &str,
    value: &str,
    line: usize,
    limits: &Limits,
) -> Result<(), Reason> {
    match label {
        "port" => {
            if block.port.is_some() {
                return Err(Reason::Layout("a second Port: line in one block"));
            }
            block.port = Some((line, value.to_owned()));
        }
        // The UMS prints this label as a heading above the parts; a value is the whole fingerprint.
        "root certificate fingerprint" if !value.is_empty() => block.whole = Some(value.parse()?),
        "part 1" | "part 2" | "part 3" | "part 4" => {
            let index = usize::from(label.as_bytes()[5] - b'1');
            if block.parts[index].is_some() {
                return Err(Reason::Layout(
                    "a fingerprint part given twice in one block",
                ));
            }
            if index > 0 && block.parts[index - 1].is_none() {
                return Err(Reason::Layout(
                    "fingerprint parts out of order (Part 1: to Part 4:)",
                ));
            }
            block.parts[index] = Some(value.to_owned());
        }
        "first-authentication key" => {
            if block.keys.len() >= limits.max_keys {
                return Err(Reason::TooManyKeys(limits.max_keys));
            }
            block.keys.push(PendingKey {
                line,
                key: FirstAuthKey::new(value)?,
                kind: None,
                unit_id: None,
            });
        }
        "key type" | "unit id" => {
            let last = block.keys.last_mut().ok_or(Reason::Layout(
                "a Key type: or Unit ID: line before any First-authentication key: line",
            ))?;
            if label == "key type" {
                if last.kind.is_some() {
                    return Err(Reason::Layout("a second Key type: line for one key"));
                }
                last.kind = Some(value.parse()?);
            } else {
                if last.unit_id.is_some() {
                    return Err(Reason::Layout("a second Unit ID: line for one key"));
                }
                last.unit_id = Some(value.parse()?);
            }
        }
        _ => {}
    }
    Ok(())
}
