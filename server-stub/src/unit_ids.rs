//! Unit IDs for device-bound keys, typed one by one or imported from a CSV file.
//!
//! The CSV rules follow the UMS import: one unit ID per row in the first column, `;` or `,`
//! separators, a header row optional, `:` or `-` inside a MAC tolerated. Every invalid or repeated
//! row is reported by line number, and then nothing is created.
//!
//! [`prefix`] reads a unit ID typed in part, for the key list's filter.

use std::collections::HashMap;

use onboard_protocol::UnitId;

/// One refused row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// The line in the file (or the position on the command line), from 1.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// The refused rows of a list of unit IDs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} refused, nothing was created:\n{}", plural(.0.len()), lines(.0))]
pub struct UnitIdListError(pub Vec<RowError>);

fn plural(count: usize) -> String {
    if count == 1 {
        "1 row".to_owned()
    } else {
        format!("{count} rows")
    }
}

fn lines(errors: &[RowError]) -> String {
    errors
        .iter()
        .map(|error| format!("  line {}: {}", error.line, error.reason))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks unit IDs given in order (`(line, text)`), refusing invalid and repeated ones.
pub fn check<'a>(
    rows: impl IntoIterator<Item = (usize, &'a str)>,
) -> Result<Vec<UnitId>, UnitIdListError> {
    let mut seen: HashMap<UnitId, usize> = HashMap::new();
    let mut ids = Vec::new();
    let mut errors = Vec::new();
    for (line, text) in rows {
        match text.parse::<UnitId>() {
            Ok(id) => match seen.get(&id) {
                Some(first) => errors.push(RowError {
                    line,
                    reason: format!("{id} repeats line {first}"),
                }),
                None => {
                    seen.insert(id.clone(), line);
                    ids.push(id);
                }
            },
            Err(error) => errors.push(RowError {
                line,
                reason: error.to_string(),
            }),
        }
    }
    if ids.is_empty() && errors.is_empty() {
        errors.push(RowError {
            line: 1,
            reason: "no unit ID given".to_owned(),
        });
    }
    if errors.is_empty() {
        Ok(ids)
    } else {
        Err(UnitIdListError(errors))
    }
}

/// Reads a CSV export of unit IDs (UTF-8, a byte-order mark allowed).
pub fn from_csv(bytes: &[u8]) -> Result<Vec<UnitId>, UnitIdListError> {
    let text = match std::str::from_utf8(bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)) {
        Ok(text) => text,
        Err(error) => {
            let line = bytes[..error.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            return Err(UnitIdListError(vec![RowError {
                line,
                reason: "not UTF-8 text".to_owned(),
            }]));
        }
    };
    let mut rows: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, first_column(line)))
        .filter(|(_, cell)| !cell.is_empty())
        .collect();
    // A header is a first row that is not a unit ID and holds a letter no MAC has.
    if let Some((_, cell)) = rows.first()
        && cell.parse::<UnitId>().is_err()
        && cell
            .chars()
            .any(|c| c.is_alphabetic() && !c.is_ascii_hexdigit())
    {
        rows.remove(0);
    }
    check(rows)
}

/// The first cell of a CSV line, unquoted and trimmed.
fn first_column(line: &str) -> &str {
    let cell = line.split([';', ',']).next().unwrap_or("").trim();
    cell.strip_prefix('"')
        .and_then(|c| c.strip_suffix('"'))
        .unwrap_or(cell)
        .trim()
}

/// The most characters of a unit ID typed in part, separators included (a MAC with `:`).
pub const MAX_PREFIX_CHARS: usize = 26;

/// A unit ID typed whole or in part (`00:E0:C5`, `00e0c5`, a UD Pocket serial's start) as the
/// start of a normalised unit ID: uppercase letters and digits, `:`, `-` and `.` dropped. Refuses
/// any other character and more than [`MAX_PREFIX_CHARS`], naming what is wrong (a longer start
/// than any unit ID's simply matches none).
pub fn prefix(text: &str) -> Result<String, String> {
    let trimmed = text.trim();
    if trimmed.chars().count() > MAX_PREFIX_CHARS {
        return Err(format!("at most {MAX_PREFIX_CHARS} characters"));
    }
    let mut out = String::new();
    for c in trimmed.chars() {
        match c {
            ':' | '-' | '.' => {}
            c if c.is_ascii_alphanumeric() => out.push(c.to_ascii_uppercase()),
            other => {
                return Err(format!(
                    "{other:?} cannot be in a unit ID: type its first hex digits \
                     (00E0C5 or 00:E0:C5) or a UD Pocket serial's first characters"
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[UnitId]) -> Vec<&str> {
        list.iter().map(UnitId::as_str).collect()
    }

    #[test]
    fn reads_header_separators_quotes_and_mac_spellings() {
        let csv = "\u{feff}Unit ID;Name\r\n00:E0:C5:54:0B:8B;desk 1\r\n\"00-e0-c5-54-0b-8c\",desk 2\r\n\r\n00e0c5540b8d\r\n";
        assert_eq!(
            ids(&from_csv(csv.as_bytes()).unwrap()),
            ["00E0C5540B8B", "00E0C5540B8C", "00E0C5540B8D"]
        );
        // Without a header.
        assert_eq!(ids(&from_csv(b"00e0c5540b8b\n").unwrap()), ["00E0C5540B8B"]);
    }

    #[test]
    fn reports_every_bad_and_repeated_row_by_line() {
        let csv = "unitid\n00e0c5540b8b\nnot-a-mac\n00:E0:C5:54:0B:8B\n00e0c5540b8z\n";
        let error = from_csv(csv.as_bytes()).unwrap_err();
        let lines: Vec<usize> = error.0.iter().map(|row| row.line).collect();
        assert_eq!(lines, [3, 4, 5]);
        assert!(
            error.0[1].reason.contains("repeats line 2"),
            "{:?}",
            error.0[1]
        );
        let shown = error.to_string();
        assert!(
            shown.starts_with("3 rows refused, nothing was created"),
            "{shown}"
        );
        assert!(
            shown.contains("line 5: \"00e0c5540b8z\" is not a unit ID"),
            "{shown}"
        );
    }

    #[test]
    fn refuses_an_empty_list_and_a_binary_file() {
        assert!(
            from_csv(b"Unit ID\n\n")
                .unwrap_err()
                .to_string()
                .contains("no unit ID given")
        );
        assert!(
            from_csv(b"00e0c5540b8b\n\xff\xfe")
                .unwrap_err()
                .to_string()
                .contains("line 2: not UTF-8")
        );
    }

    #[test]
    fn a_unit_id_typed_in_part_is_a_normalised_prefix_or_refused_saying_why() {
        for (typed, expected) in [
            ("00:e0:c5", "00E0C5"),
            (" 00-E0 ", "00E0"),
            ("00E0C5540B8B", "00E0C5540B8B"),
            ("0", "0"),
            ("", ""),
        ] {
            assert_eq!(prefix(typed).as_deref(), Ok(expected), "{typed:?}");
        }
        assert!(prefix("00E0%").unwrap_err().contains("'%'"));
        assert!(prefix("00_E0").unwrap_err().contains("'_'"));
        assert!(prefix(&"0".repeat(27)).unwrap_err().contains("at most 26"));
        // Longer than any unit ID but within the bound: a start that matches none.
        assert_eq!(prefix("0123456789ABCDEFGHIJ").unwrap().len(), 20);
    }
}
