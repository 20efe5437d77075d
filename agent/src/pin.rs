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

/// The trust decision between the pin a device holds (configured, or learned at enrollment) and
/// the pin a stick names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Use this pin for the stick's servers.
    Use(Pin),
    /// The stick names another UMS ID than the one the device holds: never used.
    Mismatch {
        /// The held pin, short.
        pinned: String,
        /// The stick's, short.
        stick: String,
    },
}

/// Decides which pin a stick naming `stick` may be used with (pure). A device that holds none
/// takes the stick's. One that holds a pin keeps it, and the stick must agree with it: a held
/// token agrees with a whole fingerprint whose part 3 it is, and then the whole fingerprint, the
/// stronger pin, is used. A stick never replaces a pin the device holds.
pub fn trust(held: Option<&Pin>, stick: &Pin) -> Trust {
    let Some(held) = held else {
        return Trust::Use(stick.clone());
    };
    let agrees = match (held, stick) {
        (held, Pin::Fingerprint(fingerprint)) => held.matches(fingerprint),
        (Pin::Fingerprint(fingerprint), Pin::Token(token)) => {
            fingerprint.matches_communication_token(token)
        }
        (Pin::Token(held), Pin::Token(token)) => held == token,
    };
    if !agrees {
        return Trust::Mismatch {
            pinned: held.short(),
            stick: stick.short(),
        };
    }
    Trust::Use(match (held, stick) {
        (Pin::Token(_), Pin::Fingerprint(_)) => stick.clone(),
        _ => held.clone(),
    })
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
    fn a_held_pin_decides_what_a_stick_may_be_used_with() {
        let ours = Fingerprint::of_der(b"our UMS ID");
        let theirs = Fingerprint::of_der(b"another UMS ID");
        let whole = Pin::Fingerprint(ours);
        let token = Pin::token(&ours.communication_token()).unwrap();
        let other_whole = Pin::Fingerprint(theirs);
        let other_token = Pin::token(&theirs.communication_token()).unwrap();
        let table = [
            // held, stick => trust
            (None, &whole, Some(&whole)),
            (None, &token, Some(&token)),
            (Some(&whole), &whole, Some(&whole)),
            (Some(&whole), &token, Some(&whole)),
            (Some(&token), &whole, Some(&whole)),
            (Some(&token), &token, Some(&token)),
            (Some(&whole), &other_whole, None),
            (Some(&whole), &other_token, None),
            (Some(&token), &other_whole, None),
            (Some(&token), &other_token, None),
        ];
        for (held, stick, expected) in table {
            let decided = trust(held, stick);
            match expected {
                Some(pin) => assert_eq!(decided, Trust::Use(pin.clone()), "{held:?} {stick:?}"),
                None => assert!(
                    matches!(decided, Trust::Mismatch { .. }),
                    "{held:?} {stick:?}: {decided:?}"
                ),
            }
        }
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
