//! Several keys in one enrollment request (our extension of EST; plain EST clients never send it
//! and see no change). Devices sharing a stick of N one-time keys meet about ln N taken keys each,
//! so a device may present up to [`MAX_KEYS_PER_REQUEST`] candidates at once:
//!
//! - the first in HTTP Basic as usual, the others in [`ALTERNATE_KEYS_HEADER`], each
//!   base64url-encoded (no padding), comma-separated, in the order to try;
//! - the server tries them in that order in one transaction and consumes at most one;
//! - a success carries [`KEY_INDEX_HEADER`] (0 is the Basic key);
//! - refusals of keys tried before it, or of all of them, are listed in [`KEYS_REFUSED_HEADER`]
//!   as `I=code,I=code`; a refusal with no usable key is the problem body of the last one tried.
//!
//! The encodings here are pure and table-tested; both sides use them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::key::FirstAuthKey;
use crate::problem::ProblemCode;

/// The request header holding the alternates.
pub const ALTERNATE_KEYS_HEADER: &str = "x-onboard-alternate-keys";
/// The answer header naming the key that enrolled (its index; 0 is the Basic key).
pub const KEY_INDEX_HEADER: &str = "x-onboard-key-index";
/// The answer header listing the keys refused, `I=code` comma-separated.
pub const KEYS_REFUSED_HEADER: &str = "x-onboard-keys-refused";
/// The most keys one request presents, the Basic key included.
pub const MAX_KEYS_PER_REQUEST: usize = 8;

/// Why an alternates or refusals header cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlternatesError {
    /// More keys than [`MAX_KEYS_PER_REQUEST`] allows.
    #[error("at most {} alternate keys may be presented", MAX_KEYS_PER_REQUEST - 1)]
    TooMany,
    /// An entry is not base64url without padding, or not a key (never quoted).
    #[error("alternate key {0} is not a base64url-encoded key")]
    Malformed(usize),
    /// A refusal entry is not `index=code` with a known code.
    #[error("refusal entry {0} is not index=code")]
    Refusal(usize),
}

/// The header value presenting `keys` as alternates.
pub fn encode_alternates<'a>(keys: impl IntoIterator<Item = &'a FirstAuthKey>) -> String {
    keys.into_iter()
        .map(|key| URL_SAFE_NO_PAD.encode(key.expose_secret()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The alternates of a header value, in order: at most [`MAX_KEYS_PER_REQUEST`] - 1, each a key.
pub fn decode_alternates(value: &str) -> Result<Vec<FirstAuthKey>, AlternatesError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(Vec::new());
    }
    let entries: Vec<&str> = value.split(',').map(str::trim).collect();
    if entries.len() >= MAX_KEYS_PER_REQUEST {
        return Err(AlternatesError::TooMany);
    }
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let bytes = URL_SAFE_NO_PAD
                .decode(entry)
                .map_err(|_| AlternatesError::Malformed(index + 1))?;
            let text =
                String::from_utf8(bytes).map_err(|_| AlternatesError::Malformed(index + 1))?;
            FirstAuthKey::new(text).map_err(|_| AlternatesError::Malformed(index + 1))
        })
        .collect()
}

/// The header value listing `refused` (index, code) pairs.
pub fn encode_refused(refused: &[(usize, ProblemCode)]) -> String {
    refused
        .iter()
        .map(|(index, code)| format!("{index}={}", code.as_str()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The (index, code) pairs of a refusals header value.
pub fn decode_refused(value: &str) -> Result<Vec<(usize, ProblemCode)>, AlternatesError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .enumerate()
        .map(|(n, entry)| {
            let (index, code) = entry
                .trim()
                .split_once('=')
                .ok_or(AlternatesError::Refusal(n))?;
            let index: usize = index.parse().map_err(|_| AlternatesError::Refusal(n))?;
            let code: ProblemCode = code.parse().map_err(|_| AlternatesError::Refusal(n))?;
            if index >= MAX_KEYS_PER_REQUEST {
                return Err(AlternatesError::Refusal(n));
            }
            Ok((index, code))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> FirstAuthKey {
        FirstAuthKey::new(text).unwrap()
    }

    #[test]
    fn alternates_round_trip_and_malformed_ones_are_refused_by_position() {
        let keys = [
            key("40512337860129621"),
            key("ABCD-EFGH-1234"),
            key("mass-key_0"),
        ];
        let value = encode_alternates(&keys);
        assert!(!value.contains('='), "no padding: {value}");
        let read = decode_alternates(&value).unwrap();
        let texts: Vec<&str> = read.iter().map(FirstAuthKey::expose_secret).collect();
        assert_eq!(texts, ["40512337860129621", "ABCD-EFGH-1234", "mass-key_0"]);
        // value => what the server makes of it
        let cases: &[(&str, Result<usize, AlternatesError>)] = &[
            ("", Ok(0)),
            ("  ", Ok(0)),
            ("NDA1MTIzMzc4NjAxMjk2MjE", Ok(1)),
            ("NDA1MTIzMzc4NjAxMjk2MjE , NDA1MTIzMzc4NjAxMjk2MjE", Ok(2)),
            (
                "NDA1MTIzMzc4NjAxMjk2MjE=",
                Err(AlternatesError::Malformed(1)),
            ),
            (
                "NDA1MTIzMzc4NjAxMjk2MjE,***",
                Err(AlternatesError::Malformed(2)),
            ),
            (
                "NDA1MTIzMzc4NjAxMjk2MjE,",
                Err(AlternatesError::Malformed(2)),
            ),
            ("YQ", Ok(1)),
        ];
        for (value, expected) in cases {
            assert_eq!(
                decode_alternates(value).map(|keys| keys.len()),
                *expected,
                "{value:?}"
            );
        }
        let seven = vec![key("k"); MAX_KEYS_PER_REQUEST - 1];
        assert_eq!(
            decode_alternates(&encode_alternates(&seven)).unwrap().len(),
            7
        );
        let eight = vec![key("k"); MAX_KEYS_PER_REQUEST];
        assert_eq!(
            decode_alternates(&encode_alternates(&eight)),
            Err(AlternatesError::TooMany)
        );
    }

    #[test]
    fn a_malformed_alternate_is_never_quoted() {
        let error = decode_alternates("c2VjcmV0LWtleQ,not base64!").unwrap_err();
        assert!(!error.to_string().contains("secret"));
        assert!(!error.to_string().contains("not base64"));
    }

    #[test]
    fn refusals_round_trip_and_bad_entries_are_refused() {
        let refused = [(0, ProblemCode::KeyUsed), (3, ProblemCode::KeyUnknown)];
        let value = encode_refused(&refused);
        assert_eq!(value, "0=key_used,3=key_unknown");
        assert_eq!(decode_refused(&value).unwrap(), refused);
        assert_eq!(decode_refused("").unwrap(), []);
        for bad in [
            "0",
            "x=key_used",
            "0=nonsense",
            "8=key_used",
            "0=key_used,,",
        ] {
            assert!(decode_refused(bad).is_err(), "{bad}");
        }
    }
}
