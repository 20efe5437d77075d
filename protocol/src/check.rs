//! Checking keys before a rollout (`onboard-agent check`): a device route that answers, for a unit
//! ID and the keys presented exactly as an enrollment presents them (HTTP Basic, then
//! [`crate::alternates::ALTERNATE_KEYS_HEADER`]), whether each key would be accepted now, and
//! consumes nothing.
//!
//! - `POST` [`crate::routes::DEVICE_CHECK_KEYS`], over TLS the device pinned, as enrollment;
//! - the body is empty (a device that would enroll with a new key pair) or, as enrollment's, a
//!   base64 PKCS#10 request of the key pair the device would enroll with;
//! - the answer is a JSON [`KeyCheckAnswer`]: per key, `accepted`, or the problem code an
//!   enrollment with that key alone would be refused with (`key_unknown`, `key_used`, …);
//! - the server admits a check as it admits an enrollment: each unknown key is a guess in the
//!   same budget, and a source or unit ID over budget is refused the same way (429
//!   `rate_limited` with `Retry-After`); a server not in sync answers 503 `server_not_in_sync`.

use crate::problem::ProblemCode;
use crate::unit_id::UnitId;

/// What a check found, for the unit ID checked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyCheckAnswer {
    /// The unit ID the keys were checked for.
    pub unit_id: UnitId,
    /// One entry per key presented, in the request's order.
    pub keys: Vec<CheckedKey>,
}

/// What one key would come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckedKey {
    /// Its place in the request: 0 the Basic key, then the alternates in order.
    pub place: usize,
    /// Whether an enrollment with it would be accepted now.
    pub accepted: bool,
    /// Accepted because this unit ID is enrolled already with the key pair of the request
    /// (an enrollment would get its certificate back and consume nothing).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enrolled: bool,
    /// Why not: the code an enrollment would be refused with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ProblemCode>,
}

impl CheckedKey {
    /// Key `place` would be accepted (`enrolled`: as the repeat of an enrollment).
    pub fn accepted(place: usize, enrolled: bool) -> Self {
        Self {
            place,
            accepted: true,
            enrolled,
            code: None,
        }
    }

    /// Key `place` would be refused with `code`.
    pub fn refused(place: usize, code: ProblemCode) -> Self {
        Self {
            place,
            accepted: false,
            enrolled: false,
            code: Some(code),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_read_back_as_written() {
        let answer = KeyCheckAnswer {
            unit_id: "00E0C5540B8B".parse().unwrap(),
            keys: vec![
                CheckedKey::accepted(0, false),
                CheckedKey::refused(1, ProblemCode::KeyUsed),
                CheckedKey::accepted(2, true),
            ],
        };
        let json = serde_json::to_value(&answer).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "unit_id": "00E0C5540B8B",
                "keys": [
                    {"place": 0, "accepted": true},
                    {"place": 1, "accepted": false, "code": "key_used"},
                    {"place": 2, "accepted": true, "enrolled": true},
                ]
            })
        );
        let back: KeyCheckAnswer = serde_json::from_value(json).unwrap();
        assert_eq!(back, answer);
    }
}
