//! The pin: the UMS ID a device trusts, as the whole fingerprint or as the communication token.
//!
//! IGEL OS 12 asks for the *communication token* (part 3 of the fingerprint, 16 hex digits) when
//! a device is onboarded by hand; key files and the agent's state carry the whole fingerprint.
//! Either identifies the UMS ID certificate the server's chain must contain (ARCHITECTURE §3).

use std::fmt;
use std::str::FromStr;

use onboard_protocol::Fingerprint;

/// The UMS ID a device trusts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pin {
    /// The whole SHA-256 fingerprint of the UMS ID certificate.
    Fingerprint(Fingerprint),
    /// Part 3 of the fingerprint: 16 hex digits, upper case.
    Token(String),
}

/// A pin that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    /// Not a fingerprint (64 hex digits, any separators).
    #[error("not a UMS ID fingerprint: expected 64 hex digits (separators allowed)")]
    Fingerprint,
    /// Not a communication token.
    #[error("not a communication token: expected the 16 hex digits of the fingerprint's part 3")]
    Token,
}

impl Pin {
    /// Reads a communication token: 16 hex digits, with or without spaces or colons.
    pub fn token(text: &str) -> Result<Pin, PinError> {
        let digits: String = text
            .chars()
            .filter(|c| !matches!(c, ' ' | ':' | '-'))
            .collect();
        if digits.len() != 16 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(PinError::Token);
        }
        Ok(Pin::Token(digits.to_ascii_uppercase()))
    }

    /// Whether the certificate with fingerprint `fingerprint` is the pinned UMS ID.
    pub fn matches(&self, fingerprint: &Fingerprint) -> bool {
        match self {
            Pin::Fingerprint(pinned) => pinned == fingerprint,
            Pin::Token(token) => fingerprint.matches_communication_token(token),
        }
    }

    /// The whole fingerprint, when the pin holds it.
    pub fn fingerprint(&self) -> Option<&Fingerprint> {
        match self {
            Pin::Fingerprint(fingerprint) => Some(fingerprint),
            Pin::Token(_) => None,
        }
    }

    /// How logs show the pin: the short fingerprint, or the token.
    pub fn short(&self) -> String {
        match self {
            Pin::Fingerprint(fingerprint) => fingerprint.short(),
            Pin::Token(token) => format!("token {token}"),
        }
    }
}

impl FromStr for Pin {
    type Err = PinError;

    /// A whole fingerprint, or else a communication token.
    fn from_str(text: &str) -> Result<Pin, PinError> {
        if let Ok(fingerprint) = text.parse::<Fingerprint>() {
            return Ok(Pin::Fingerprint(fingerprint));
        }
        Pin::token(text).map_err(|_| PinError::Fingerprint)
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pin::Fingerprint(fingerprint) => write!(f, "{fingerprint}"),
            Pin::Token(token) => write!(f, "token {token}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_matches_part_three_only() {
        let fingerprint = Fingerprint::of_der(b"a UMS ID certificate");
        let [one, _, three, _] = fingerprint.parts();
        assert!(Pin::token(&three).unwrap().matches(&fingerprint));
        assert!(
            Pin::token(&three.to_lowercase())
                .unwrap()
                .matches(&fingerprint)
        );
        assert!(!Pin::token(&one).unwrap().matches(&fingerprint));
        assert!(Pin::Fingerprint(fingerprint).matches(&fingerprint));
        let other = Fingerprint::of_der(b"another");
        assert!(!Pin::Fingerprint(other).matches(&fingerprint));
    }

    #[test]
    fn pins_parse_whole_or_as_tokens() {
        let fingerprint = Fingerprint::of_der(b"x");
        let whole: Pin = fingerprint.to_string().parse().unwrap();
        assert_eq!(whole, Pin::Fingerprint(fingerprint));
        let token: Pin = fingerprint.communication_token().parse().unwrap();
        assert!(matches!(token, Pin::Token(_)));
        assert_eq!(Pin::token("12345"), Err(PinError::Token));
        assert_eq!(Pin::token("GGGGGGGGGGGGGGGG"), Err(PinError::Token));
        assert_eq!("nope".parse::<Pin>(), Err(PinError::Fingerprint));
    }
}
