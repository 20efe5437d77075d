//! Refusals of the server's endpoints (enrollment and administration): RFC 9457 problem details with a stable `code`.
//!
//! The agent branches on [`ProblemCode`], never on the human text.

use std::fmt;
use std::str::FromStr;

/// The media type of a refusal body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// Why the server refused an enrollment. The strings are stable: agents and scripts match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemCode {
    /// No key has this value.
    KeyUnknown,
    /// The key exists but is deactivated.
    KeyInactive,
    /// A one-time key another device already used.
    KeyUsed,
    /// A device-bound key presented by a device it does not name.
    KeyBoundToOtherDevice,
    /// The key's lifetime ended (its `expires_at` has passed).
    KeyExpired,
    /// The key's lifetime has not begun (its `not_before` is still ahead).
    KeyNotYetValid,
    /// A mass-deployment key that enrolled as many devices as its usage limit allows.
    KeyExhausted,
    /// This unit ID is already enrolled with another public key.
    UnitIdConflict,
    /// The request is malformed (body, CSR, authorization header).
    BadRequest,
    /// Too many failed attempts; retry after the `Retry-After` delay.
    RateLimited,
    /// An administrator's request names something that does not exist.
    NotFound,
    /// An administrator's request clashes with what exists (a mass key's password taken).
    Conflict,
    /// An administrator's request has a field that cannot be used; the detail names it.
    Invalid,
    /// The server cannot reach its database for now; retry later.
    Unavailable,
    /// An enrolled device's certificate is not one the server honours any more (neither its current
    /// nor its previous one, or expired past the renewal grace period): the device enrolls again
    /// with a key.
    CertificateNotCurrent,
    /// An admin API request without valid credentials (no token or session, or an expired,
    /// revoked or unknown one).
    Unauthorized,
    /// An admin API request whose account lacks the right it needs.
    Forbidden,
    /// This server of a Distributed UMS could not adopt the Main UMS ID (no or a wrong cluster
    /// secret): it issues no certificate a device pinned to the Main UMS ID would refuse. Another
    /// server, or this one restarted, will do.
    ServerNotInSync,
}

impl ProblemCode {
    /// Every code.
    pub const ALL: [ProblemCode; 18] = [
        ProblemCode::KeyUnknown,
        ProblemCode::KeyInactive,
        ProblemCode::KeyUsed,
        ProblemCode::KeyBoundToOtherDevice,
        ProblemCode::KeyExpired,
        ProblemCode::KeyNotYetValid,
        ProblemCode::KeyExhausted,
        ProblemCode::UnitIdConflict,
        ProblemCode::BadRequest,
        ProblemCode::RateLimited,
        ProblemCode::NotFound,
        ProblemCode::Conflict,
        ProblemCode::Invalid,
        ProblemCode::Unavailable,
        ProblemCode::CertificateNotCurrent,
        ProblemCode::Unauthorized,
        ProblemCode::Forbidden,
        ProblemCode::ServerNotInSync,
    ];

    /// The stable string carried in the problem body's `code` member.
    pub const fn as_str(self) -> &'static str {
        match self {
            ProblemCode::KeyUnknown => "key_unknown",
            ProblemCode::KeyInactive => "key_inactive",
            ProblemCode::KeyUsed => "key_used",
            ProblemCode::KeyBoundToOtherDevice => "key_bound_to_other_device",
            ProblemCode::KeyExpired => "key_expired",
            ProblemCode::KeyNotYetValid => "key_not_yet_valid",
            ProblemCode::KeyExhausted => "key_exhausted",
            ProblemCode::UnitIdConflict => "unit_id_conflict",
            ProblemCode::BadRequest => "bad_request",
            ProblemCode::RateLimited => "rate_limited",
            ProblemCode::NotFound => "not_found",
            ProblemCode::Conflict => "conflict",
            ProblemCode::Invalid => "invalid",
            ProblemCode::Unavailable => "unavailable",
            ProblemCode::CertificateNotCurrent => "certificate_not_current",
            ProblemCode::Unauthorized => "unauthorized",
            ProblemCode::Forbidden => "forbidden",
            ProblemCode::ServerNotInSync => "server_not_in_sync",
        }
    }

    /// The HTTP status that carries this code.
    pub const fn http_status(self) -> u16 {
        match self {
            ProblemCode::KeyUnknown
            | ProblemCode::KeyInactive
            | ProblemCode::KeyUsed
            | ProblemCode::KeyBoundToOtherDevice
            | ProblemCode::KeyExpired
            | ProblemCode::KeyNotYetValid
            | ProblemCode::KeyExhausted
            | ProblemCode::CertificateNotCurrent
            | ProblemCode::Forbidden => 403,
            ProblemCode::Unauthorized => 401,
            ProblemCode::UnitIdConflict | ProblemCode::Conflict => 409,
            ProblemCode::BadRequest => 400,
            ProblemCode::RateLimited => 429,
            ProblemCode::NotFound => 404,
            ProblemCode::Invalid => 422,
            ProblemCode::Unavailable | ProblemCode::ServerNotInSync => 503,
        }
    }

    /// Whether the key that drew this refusal will never work: the agent moves on to its next key
    /// and never tries this one again.
    pub const fn is_final_for_key(self) -> bool {
        matches!(
            self,
            ProblemCode::KeyUnknown
                | ProblemCode::KeyInactive
                | ProblemCode::KeyUsed
                | ProblemCode::KeyBoundToOtherDevice
                | ProblemCode::KeyExpired
                | ProblemCode::KeyNotYetValid
                | ProblemCode::KeyExhausted
        )
    }

    /// Whether the device cannot enroll with any key until an administrator acts.
    pub const fn is_final_for_device(self) -> bool {
        matches!(self, ProblemCode::UnitIdConflict)
    }
}

impl fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that is not a known problem code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a known problem code")]
pub struct UnknownProblemCode(String);

impl FromStr for ProblemCode {
    type Err = UnknownProblemCode;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ProblemCode::ALL
            .into_iter()
            .find(|code| code.as_str() == text)
            .ok_or_else(|| UnknownProblemCode(text.chars().take(40).collect()))
    }
}

impl serde::Serialize for ProblemCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ProblemCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An RFC 9457 problem details body with this project's `code` extension member.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// A URI naming the problem type; `about:blank` where the code says it all.
    #[serde(rename = "type", default = "about_blank")]
    pub problem_type: String,
    /// Short human summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// Human explanation of this occurrence. Never holds a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The stable code the agent branches on.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub code: ProblemCode,
}

fn about_blank() -> String {
    "about:blank".to_owned()
}

impl Problem {
    /// A problem for `code` with its standard title and status.
    pub fn new(code: ProblemCode) -> Self {
        let title = match code {
            ProblemCode::KeyUnknown => "Unknown first-authentication key",
            ProblemCode::KeyInactive => "First-authentication key is deactivated",
            ProblemCode::KeyUsed => "First-authentication key was already used",
            ProblemCode::KeyBoundToOtherDevice => {
                "First-authentication key is bound to another device"
            }
            ProblemCode::KeyExpired => "First-authentication key has expired",
            ProblemCode::KeyNotYetValid => "First-authentication key is not valid yet",
            ProblemCode::KeyExhausted => "First-authentication key reached its usage limit",
            ProblemCode::UnitIdConflict => "Unit ID is already enrolled with another key pair",
            ProblemCode::BadRequest => "Malformed enrollment request",
            ProblemCode::RateLimited => "Too many failed attempts",
            ProblemCode::NotFound => "Not found",
            ProblemCode::Conflict => "Conflicts with what exists",
            ProblemCode::Invalid => "Invalid request",
            ProblemCode::Unavailable => "Service unavailable",
            ProblemCode::CertificateNotCurrent => "Device certificate is not current",
            ProblemCode::Unauthorized => "Credentials missing or not valid",
            ProblemCode::Forbidden => "The account lacks the right for this",
            ProblemCode::ServerNotInSync => "Server not in sync with the Main UMS ID",
        };
        Self {
            problem_type: about_blank(),
            title: title.to_owned(),
            status: code.http_status(),
            detail: None,
            code,
        }
    }

    /// The same problem with a detail text.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_their_strings() {
        for code in ProblemCode::ALL {
            assert_eq!(code.as_str().parse::<ProblemCode>().unwrap(), code);
        }
        assert!("key_lost".parse::<ProblemCode>().is_err());
    }

    #[test]
    fn finality_follows_the_architecture() {
        let final_for_key: Vec<_> = ProblemCode::ALL
            .into_iter()
            .filter(|c| c.is_final_for_key())
            .map(ProblemCode::as_str)
            .collect();
        assert_eq!(
            final_for_key,
            [
                "key_unknown",
                "key_inactive",
                "key_used",
                "key_bound_to_other_device",
                "key_expired",
                "key_not_yet_valid",
                "key_exhausted"
            ]
        );
        assert!(ProblemCode::UnitIdConflict.is_final_for_device());
        assert!(!ProblemCode::RateLimited.is_final_for_key());
        assert!(!ProblemCode::BadRequest.is_final_for_device());
    }

    #[test]
    fn problem_body_is_rfc9457_json_with_code() {
        let body = Problem::new(ProblemCode::KeyUsed).with_detail("key 17 was used on 2026-11-01");
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["type"], "about:blank");
        assert_eq!(json["status"], 403);
        assert_eq!(json["code"], "key_used");
        let back: Problem = serde_json::from_value(json).unwrap();
        assert_eq!(back, body);
        let minimal: Problem =
            serde_json::from_str(r#"{"title":"x","status":429,"code":"rate_limited"}"#).unwrap();
        assert_eq!(minimal.code, ProblemCode::RateLimited);
    }
}
