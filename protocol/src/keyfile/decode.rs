//! Turns a key file's bytes into text: the encodings a Windows or Linux editor may have saved, and
//! the line and column of a byte offset for error messages.

use std::borrow::Cow;
use std::fmt;

use super::{KeyFileError, Limits, Reason};

/// A place in a key file: 1-based line and, where known, 1-based column in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The line, from 1.
    pub line: usize,
    /// The column in characters, from 1.
    pub column: Option<usize>,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.column {
            Some(column) => write!(f, "line {}, column {column}", self.line),
            None => write!(f, "line {}", self.line),
        }
    }
}

impl Position {
    /// The position of byte `offset` in `text` (clamped to the text, moved back to a character
    /// boundary).
    pub(super) fn at(text: &str, offset: usize) -> Position {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position {
            line: before.bytes().filter(|&b| b == b'\n').count() + 1,
            column: Some(before[line_start..].chars().count() + 1),
        }
    }

    /// A whole line.
    pub(super) fn line(line: usize) -> Position {
        Position { line, column: None }
    }
}

/// Decodes UTF-8 (with or without BOM) or UTF-16 LE/BE with BOM, after checking the size bound.
pub(super) fn decode<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Cow<'a, str>, KeyFileError> {
    if bytes.len() > limits.max_bytes {
        return Err(KeyFileError::whole(Reason::TooLarge {
            size: bytes.len(),
            limit: limits.max_bytes,
        }));
    }
    let text: Cow<'a, str> = match bytes {
        [0xEF, 0xBB, 0xBF, rest @ ..] => Cow::Borrowed(utf8(rest)?),
        [0xFF, 0xFE, rest @ ..] => Cow::Owned(utf16(rest, u16::from_le_bytes)?),
        [0xFE, 0xFF, rest @ ..] => Cow::Owned(utf16(rest, u16::from_be_bytes)?),
        _ => Cow::Borrowed(utf8(bytes)?),
    };
    if let Some(offset) = text.find('\0') {
        return Err(KeyFileError::at(
            Position::at(&text, offset),
            Reason::NulCharacter,
        ));
    }
    if text.trim().is_empty() {
        return Err(KeyFileError::whole(Reason::Empty));
    }
    Ok(text)
}

fn utf8(bytes: &[u8]) -> Result<&str, KeyFileError> {
    std::str::from_utf8(bytes).map_err(|error| {
        let valid = std::str::from_utf8(&bytes[..error.valid_up_to()]).unwrap_or_default();
        KeyFileError::at(Position::at(valid, valid.len()), Reason::InvalidUtf8)
    })
}

fn utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> Result<String, KeyFileError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(KeyFileError::whole(Reason::OddUtf16Length));
    }
    let units = bytes.chunks_exact(2).map(|pair| unit([pair[0], pair[1]]));
    let mut text = String::with_capacity(bytes.len() / 2);
    for decoded in char::decode_utf16(units) {
        match decoded {
            Ok(c) => text.push(c),
            Err(_) => {
                return Err(KeyFileError::at(
                    Position::at(&text, text.len()),
                    Reason::InvalidUtf16,
                ));
            }
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16le(text: &str) -> Vec<u8> {
        let mut out = vec![0xFF, 0xFE];
        out.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        out
    }

    #[test]
    fn positions_count_lines_and_characters() {
        let text = "ab\ncdé\nf";
        assert_eq!(
            Position::at(text, 0),
            Position {
                line: 1,
                column: Some(1)
            }
        );
        assert_eq!(
            Position::at(text, 3),
            Position {
                line: 2,
                column: Some(1)
            }
        );
        // 'é' is two bytes: the offset after it is column 4.
        assert_eq!(
            Position::at(text, 7),
            Position {
                line: 2,
                column: Some(4)
            }
        );
        // Inside a character: moved back to its start.
        assert_eq!(
            Position::at(text, 6),
            Position {
                line: 2,
                column: Some(3)
            }
        );
        assert_eq!(
            Position::at(text, 999),
            Position {
                line: 3,
                column: Some(2)
            }
        );
    }

    #[test]
    fn decodes_boms_and_refuses_bad_encodings() {
        let limits = Limits::default();
        assert_eq!(decode(b"\xEF\xBB\xBFHost: a", &limits).unwrap(), "Host: a");
        assert_eq!(decode(&utf16le("Host: é"), &limits).unwrap(), "Host: é");
        let mut be = vec![0xFE, 0xFF];
        be.extend("Host: é".encode_utf16().flat_map(u16::to_be_bytes));
        assert_eq!(decode(&be, &limits).unwrap(), "Host: é");

        let err = decode(b"ok\nab\xFFcd", &limits).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidUtf8);
        assert_eq!(
            err.position,
            Some(Position {
                line: 2,
                column: Some(3)
            })
        );

        assert_eq!(
            decode(&[0xFF, 0xFE, b'a'], &limits).unwrap_err().reason,
            Reason::OddUtf16Length
        );
        // A lone high surrogate.
        assert_eq!(
            decode(&[0xFF, 0xFE, 0x00, 0xD8, b'a', 0], &limits)
                .unwrap_err()
                .reason,
            Reason::InvalidUtf16
        );
        // UTF-16 without a BOM shows as NULs.
        assert_eq!(
            decode(b"H\0o\0s\0t\0", &limits).unwrap_err().reason,
            Reason::NulCharacter
        );
        assert_eq!(
            decode(b" \r\n ", &limits).unwrap_err().reason,
            Reason::Empty
        );
        let small = Limits {
            max_bytes: 4,
            ..Limits::default()
        };
        assert_eq!(
            decode(b"12345", &small).unwrap_err().reason,
            Reason::TooLarge { size: 5, limit: 4 }
        );
    }
}
