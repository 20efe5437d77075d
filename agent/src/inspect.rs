//! `scan PATH`: what a key file (or every key file in a folder) holds, and which keys this device
//! would present, in order. Keys are shown masked.
//!
//! A folder is read as a stick (its top and one level of folders, see [`crate::discovery`]); a
//! file is read whatever its name. The order needs the unit ID; without one the contents are still
//! listed and the order is reported unknown.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use onboard_protocol::{KeyKind, Limits, UnitId};
use time::format_description::well_known::Rfc3339;

use crate::discovery::{self, Discovery, FoundKeyFile, Problem};
use crate::identity::{IdentityError, Resolved, Source};
use crate::key_choice;

/// The result of a look at a path, ready to print or serialise.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Inspection {
    /// This device's unit ID, when it could be had.
    pub unit_id: Option<UnitId>,
    /// Where the unit ID came from.
    pub unit_id_source: Option<Source>,
    /// The interface it was detected from.
    pub interface: Option<String>,
    /// Why there is no unit ID.
    pub unit_id_error: Option<String>,
    /// The key files read.
    pub key_files: Vec<KeyFileReport>,
    /// What was skipped, and why.
    pub problems: Vec<ProblemReport>,
    /// How many keys this device would present, over all key files.
    pub usable_keys: usize,
    /// Why no key is usable (empty when some are).
    pub reasons: Vec<String>,
}

/// One key file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyFileReport {
    /// Where it is.
    pub path: PathBuf,
    /// `xml`, `html` or `text`.
    pub format: String,
    /// The format version it says.
    pub format_version: u32,
    /// When it was exported (RFC 3339), when it says.
    pub exported_at: Option<String>,
    /// The servers, `host:port`, in the order to try them.
    pub servers: Vec<String>,
    /// The UMS ID fingerprint, whole.
    pub fingerprint: String,
    /// The UMS ID fingerprint, short (first and last 10 characters).
    pub fingerprint_short: String,
    /// The keys, in file order.
    pub keys: Vec<KeyReport>,
    /// The numbers of the keys this device would present, in order; `None` when the unit ID is
    /// unknown.
    pub order: Option<Vec<usize>>,
}

/// One key, masked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyReport {
    /// Its number in the file, from 1.
    pub number: usize,
    /// `one-time`, `device-bound` or `mass`.
    #[serde(rename = "type")]
    pub kind: KeyKind,
    /// The unit ID a device-bound key names.
    pub unit_id: Option<UnitId>,
    /// The value, masked.
    pub key: String,
    /// Its place in this device's order, from 1; `None` when unused or the order is unknown.
    pub position: Option<usize>,
}

/// Something skipped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProblemReport {
    /// The file or folder.
    pub path: PathBuf,
    /// The line at fault, when known.
    pub line: Option<usize>,
    /// The column at fault, when known.
    pub column: Option<usize>,
    /// What is wrong.
    pub reason: String,
}

impl From<&Problem> for ProblemReport {
    fn from(problem: &Problem) -> Self {
        let position = problem.position();
        ProblemReport {
            path: problem.path.clone(),
            line: position.map(|position| position.line),
            column: position.and_then(|position| position.column),
            reason: problem.reason(),
        }
    }
}

/// The path to look at cannot be looked at.
#[derive(Debug, thiserror::Error)]
#[error("cannot look at {}", path.display())]
pub struct InspectError {
    /// The path.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// Reads `path` (a key file or a folder) and works out this device's order with `unit`.
pub fn inspect(
    path: &Path,
    unit: Result<&Resolved, &IdentityError>,
    limits: &Limits,
) -> Result<Inspection, InspectError> {
    let meta = fs::symlink_metadata(path).map_err(|source| InspectError {
        path: path.to_owned(),
        source,
    })?;
    let discovery = if meta.is_dir() {
        discovery::discover(path, limits)
    } else {
        let mut discovery = Discovery::default();
        match discovery::read_key_file(path, None, limits) {
            Ok(found) => discovery.key_files.push(found),
            Err(problem) => discovery.problems.push(problem),
        }
        discovery
    };
    Ok(report(&discovery, unit))
}

/// Builds the report for what was found.
pub fn report(discovery: &Discovery, unit: Result<&Resolved, &IdentityError>) -> Inspection {
    let unit_id = unit.ok().map(|resolved| &resolved.unit_id);
    let key_files: Vec<KeyFileReport> = discovery
        .key_files
        .iter()
        .map(|found| key_file_report(found, unit_id))
        .collect();
    let usable_keys = key_files
        .iter()
        .map(|file| file.order.as_ref().map_or(0, Vec::len))
        .sum();
    let problems: Vec<ProblemReport> = discovery.problems.iter().map(ProblemReport::from).collect();

    let mut reasons = Vec::new();
    if usable_keys == 0 {
        match unit {
            Err(error) => reasons.push(format!("the unit ID is unknown: {}", chain(error))),
            Ok(resolved) if !key_files.is_empty() => reasons.push(format!(
                "every key is bound to another unit ID than {}",
                resolved.unit_id
            )),
            Ok(_) => {}
        }
        if key_files.is_empty() {
            reasons.push("no key file found".to_owned());
            reasons.extend(
                problems
                    .iter()
                    .map(|problem| format!("{}: {}", problem.path.display(), problem.reason)),
            );
        }
    }
    Inspection {
        unit_id: unit_id.cloned(),
        unit_id_source: unit.ok().map(|resolved| resolved.source),
        interface: unit.ok().and_then(|resolved| resolved.interface.clone()),
        unit_id_error: unit.err().map(|error| chain(error)),
        key_files,
        problems,
        usable_keys,
        reasons,
    }
}

fn key_file_report(found: &FoundKeyFile, unit_id: Option<&UnitId>) -> KeyFileReport {
    let file = &found.key_file;
    let order = unit_id.map(|unit_id| key_choice::key_order(&file.keys, unit_id));
    let keys = file
        .keys
        .iter()
        .enumerate()
        .map(|(index, entry)| KeyReport {
            number: index + 1,
            kind: entry.kind(),
            unit_id: entry.unit_id().cloned(),
            key: entry.key().masked(),
            position: order
                .as_ref()
                .and_then(|order| order.iter().position(|&used| used == index))
                .map(|position| position + 1),
        })
        .collect();
    KeyFileReport {
        path: found.path.clone(),
        format: found.format.to_string(),
        format_version: file.format_version,
        exported_at: file.exported_at.and_then(|time| time.format(&Rfc3339).ok()),
        servers: file.servers.iter().map(ToString::to_string).collect(),
        fingerprint: file.ums_id.to_string(),
        fingerprint_short: file.ums_id.short(),
        keys,
        order: order.map(|order| order.iter().map(|index| index + 1).collect()),
    }
}

/// An error and its causes on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Inspection {
    /// The report as a person reads it.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for file in &self.key_files {
            out.push_str(&format!(
                "{}: {} key file, format {}{}, {} keys\n",
                file.path.display(),
                file.format,
                file.format_version,
                file.exported_at
                    .as_ref()
                    .map(|time| format!(", exported {time}"))
                    .unwrap_or_default(),
                file.keys.len()
            ));
            out.push_str(&format!("  servers: {}\n", file.servers.join(", ")));
            out.push_str(&format!(
                "  UMS ID:  {} (short {})\n",
                file.fingerprint, file.fingerprint_short
            ));
            let rows: Vec<[String; 5]> = file
                .keys
                .iter()
                .map(|key| {
                    [
                        key.number.to_string(),
                        key.kind.to_string(),
                        key.unit_id
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                        key.key.clone(),
                        match (key.position, &file.order) {
                            (Some(position), _) => position.to_string(),
                            (None, Some(_)) => "never (bound to another unit)".to_owned(),
                            (None, None) => "?".to_owned(),
                        },
                    ]
                })
                .collect();
            let header = ["#", "type", "unit ID", "key", "order"].map(str::to_owned);
            let mut widths = [0usize; 5];
            for row in std::iter::once(&header).chain(&rows) {
                for (width, cell) in widths.iter_mut().zip(row) {
                    *width = (*width).max(cell.chars().count());
                }
            }
            for row in std::iter::once(&header).chain(&rows) {
                let cells: Vec<String> = row
                    .iter()
                    .zip(widths)
                    .map(|(cell, width)| format!("{cell:width$}"))
                    .collect();
                out.push_str(&format!("    {}\n", cells.join("  ").trim_end()));
            }
            match (&file.order, &self.unit_id) {
                (Some(order), Some(unit_id)) => {
                    let numbers: Vec<String> = order.iter().map(|n| format!("#{n}")).collect();
                    out.push_str(&format!(
                        "  this device ({unit_id}) would try: {}\n",
                        if numbers.is_empty() {
                            "none".to_owned()
                        } else {
                            numbers.join(", ")
                        }
                    ));
                }
                _ => out.push_str("  order: unknown (no unit ID)\n"),
            }
        }
        for problem in &self.problems {
            out.push_str(&format!(
                "skipped {}: {}\n",
                problem.path.display(),
                problem.reason
            ));
        }
        match (&self.unit_id, self.unit_id_source) {
            (Some(unit_id), Some(source)) => out.push_str(&format!(
                "unit ID: {unit_id} ({source}{})\n",
                self.interface
                    .as_ref()
                    .map(|name| format!(", interface {name}"))
                    .unwrap_or_default()
            )),
            _ => out.push_str(&format!(
                "unit ID: unknown ({})\n",
                self.unit_id_error.as_deref().unwrap_or("no reason given")
            )),
        }
        if self.usable_keys > 0 {
            out.push_str(&format!(
                "usable: {} key(s) this device would present\n",
                self.usable_keys
            ));
        } else {
            out.push_str("nothing usable:\n");
            for reason in &self.reasons {
                out.push_str(&format!("  - {reason}\n"));
            }
        }
        out
    }
}
