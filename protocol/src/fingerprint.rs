//! The UMS ID fingerprint: SHA-256 over the UMS ID certificate's DER.
//!
//! Devices pin this value. It is shown whole (64 lowercase hex digits), in four parts of 16 as the
//! UMS clipboard export prints them, short as the first and last 10 characters, and as the
//! communication token (part 3) that IGEL OS 12 asks for. Comparison is constant-time so a pin check
//! leaks nothing about how many leading digits matched.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// SHA-256 fingerprint of a UMS ID certificate.
#[derive(Clone, Copy, Eq)]
pub struct Fingerprint([u8; 32]);

/// Why a text is not a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FingerprintError {
    /// A character other than a hex digit, `:` or white space.
    #[error(
        "a UMS ID fingerprint holds only hex digits (with `:` or spaces allowed between them), found {0:?}"
    )]
    InvalidCharacter(char),
    /// The wrong number of hex digits.
    #[error("a UMS ID fingerprint has 64 hex digits (SHA-256), found {0}")]
    WrongLength(usize),
    /// One of the four parts is not 16 hex digits.
    #[error("part {part} of a UMS ID fingerprint must be 16 hex digits, found {found}")]
    WrongPartLength {
        /// Which part, 1 to 4.
        part: usize,
        /// How many hex digits it held.
        found: usize,
    },
}

impl Fingerprint {
    /// Fingerprint of a certificate given as DER.
    pub fn of_der(certificate_der: &[u8]) -> Self {
        Self(Sha256::digest(certificate_der).into())
    }

    /// Wraps a digest that was already computed.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 digest bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses the four 16-digit parts of the UMS clipboard export, in order.
    pub fn from_parts(parts: [&str; 4]) -> Result<Self, FingerprintError> {
        let mut whole = String::with_capacity(64);
        for (index, part) in parts.iter().enumerate() {
            let digits = hex_digits(part)?;
            if digits.len() != 16 {
                return Err(FingerprintError::WrongPartLength {
                    part: index + 1,
                    found: digits.len(),
                });
            }
            whole.push_str(&digits);
        }
        whole.parse()
    }

    /// The four parts of 16 lowercase hex digits, as the UMS clipboard export prints them.
    pub fn parts(&self) -> [String; 4] {
        let whole = self.to_string();
        std::array::from_fn(|i| whole[i * 16..(i + 1) * 16].to_owned())
    }

    /// The first and last 10 characters, as the UMS Console shows a UMS ID.
    pub fn short(&self) -> String {
        let whole = self.to_string();
        format!("{}...{}", &whole[..10], &whole[54..])
    }

    /// The communication token IGEL OS 12 asks for when onboarding by hand: part 3.
    pub fn communication_token(&self) -> String {
        let [_, _, token, _] = self.parts();
        token
    }

    /// Whether `token` (16 hex digits, any case) is this fingerprint's communication token.
    /// Constant-time over the token's digits.
    pub fn matches_communication_token(&self, token: &str) -> bool {
        let Ok(digits) = hex_digits(token) else {
            return false;
        };
        if digits.len() != 16 {
            return false;
        }
        let Ok(bytes) = decode_hex(&digits) else {
            return false;
        };
        bool::from(self.0[16..24].ct_eq(&bytes))
    }
}

/// The hex digits of `text` in lowercase, with `:` and white space dropped.
fn hex_digits(text: &str) -> Result<String, FingerprintError> {
    let mut digits = String::with_capacity(64);
    for c in text.chars() {
        match c {
            ':' => {}
            c if c.is_whitespace() => {}
            c if c.is_ascii_hexdigit() => digits.push(c.to_ascii_lowercase()),
            other => return Err(FingerprintError::InvalidCharacter(other)),
        }
    }
    Ok(digits)
}

fn decode_hex(digits: &str) -> Result<Vec<u8>, FingerprintError> {
    digits
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            let text =
                std::str::from_utf8(pair).map_err(|_| FingerprintError::InvalidCharacter('?'))?;
            u8::from_str_radix(text, 16).map_err(|_| FingerprintError::InvalidCharacter('?'))
        })
        .collect()
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    /// 64 hex digits in any case, with or without `:` or spaces between them.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let digits = hex_digits(text)?;
        if digits.len() != 64 {
            return Err(FingerprintError::WrongLength(digits.len()));
        }
        let bytes = decode_hex(&digits)?;
        let mut out = [0u8; 32];
        out.copy_from_slice(&bytes);
        Ok(Self(out))
    }
}

impl PartialEq for Fingerprint {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

impl std::hash::Hash for Fingerprint {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Display for Fingerprint {
    /// 64 lowercase hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Fingerprint {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[0-9a-f]{64}$"))
            .description(Some(
                "SHA-256 of the UMS ID certificate, 64 lowercase hex digits.",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Fingerprint {}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHOLE: &str = "0123456789abcdef00112233445566778899aabbccddeeff0f1e2d3c4b5a6978";

    #[test]
    fn parses_every_spelling_to_the_same_value() {
        let expected: Fingerprint = WHOLE.parse().unwrap();
        let upper = WHOLE.to_uppercase();
        let colons = WHOLE
            .as_bytes()
            .chunks(2)
            .map(|p| std::str::from_utf8(p).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        let spaced = expected.parts().join(" ");
        for spelling in [upper.as_str(), colons.as_str(), spaced.as_str()] {
            assert_eq!(
                spelling.parse::<Fingerprint>().unwrap(),
                expected,
                "{spelling}"
            );
        }
        let [a, b, c, d] = expected.parts();
        assert_eq!(Fingerprint::from_parts([&a, &b, &c, &d]).unwrap(), expected);
    }

    #[test]
    fn prints_whole_parts_short_and_token() {
        let fp: Fingerprint = WHOLE.to_uppercase().parse().unwrap();
        assert_eq!(fp.to_string(), WHOLE);
        assert_eq!(
            fp.parts(),
            [
                "0123456789abcdef",
                "0011223344556677",
                "8899aabbccddeeff",
                "0f1e2d3c4b5a6978"
            ]
        );
        assert_eq!(fp.short(), "0123456789...3c4b5a6978");
        assert_eq!(fp.communication_token(), "8899aabbccddeeff");
        assert!(fp.matches_communication_token("8899AABBCCDDEEFF"));
        assert!(!fp.matches_communication_token("8899aabbccddeef0"));
        assert!(!fp.matches_communication_token("0123456789abcdef"));
        assert!(!fp.matches_communication_token("xyz"));
    }

    #[test]
    fn refuses_what_is_not_a_fingerprint() {
        assert_eq!(
            "abc".parse::<Fingerprint>(),
            Err(FingerprintError::WrongLength(3))
        );
        assert_eq!(
            format!("{}g", &WHOLE[..63]).parse::<Fingerprint>(),
            Err(FingerprintError::InvalidCharacter('g'))
        );
        assert_eq!(
            Fingerprint::from_parts(["0123", "", "", ""]),
            Err(FingerprintError::WrongPartLength { part: 1, found: 4 })
        );
        let message = FingerprintError::WrongLength(3).to_string();
        assert!(message.contains("64 hex digits"), "{message}");
    }

    #[test]
    fn of_der_is_sha256() {
        // SHA-256 of the empty input.
        assert_eq!(
            Fingerprint::of_der(b"").to_string(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn equality_follows_the_bytes() {
        let a: Fingerprint = WHOLE.parse().unwrap();
        let mut bytes = *a.as_bytes();
        assert_eq!(a, Fingerprint::from_bytes(bytes));
        bytes[31] ^= 1;
        assert_ne!(a, Fingerprint::from_bytes(bytes));
    }
}
