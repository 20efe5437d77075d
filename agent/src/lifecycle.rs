//! The agent's lifecycle: its phases, the named transitions between them, and the backoff policy.
//!
//! Pure: no I/O and no clock reads (times and random draws are passed in), so every transition
//! and every delay is tested as a table. The loop that does the I/O is in [`crate::enroll`] and
//! [`crate::daemon`]; it asks [`Phase::on`] for the next phase and persists it.
//!
//! ```text
//!  WaitingForKey --KeysFound--> Enrolling --Issued--> Enrolled --Reset--> WaitingForKey
//!        ^                      |  ^    \
//!        |          NetworkFault|  |RetryDue \--DeviceRefused / KeysExhausted / PinRefused--> Failed
//!        |                      v  |                                                       |
//!        |                    BackingOff                                                  |
//!        \-----------------------------------------KeysFound (a new stick) ---------------/
//! ```

use std::fmt;
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Where the agent is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Phase {
    /// No usable key file yet: watching for a stick.
    WaitingForKey,
    /// Presenting keys to the servers of a key file.
    Enrolling,
    /// A network fault, a 5xx or a 429: waiting before trying the same key again.
    BackingOff {
        /// How many faults in a row (1 for the first).
        attempt: u32,
        /// How long this wait is, in milliseconds.
        delay_ms: u64,
    },
    /// Holding a device certificate: from now on only mutual TLS.
    Enrolled,
    /// Held a device certificate the server no longer honours (neither its current nor its previous
    /// one, or expired past the renewal grace period): enrolls again with a key from the next
    /// stick, keeping its key pair.
    Orphaned {
        /// What the server said, without any key.
        detail: String,
    },
    /// Cannot go on with what it has; the reason says what would unblock it.
    Failed {
        /// Why.
        reason: Failure,
    },
}

/// Why the agent stopped trying.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Failure {
    /// The server holds this unit ID with another key pair (`unit_id_conflict`): an administrator
    /// must delete the device record before it can enroll again.
    UnitIdConflict,
    /// Every key this device may present was refused with a final code.
    KeysExhausted {
        /// How many keys were refused.
        refused: usize,
    },
    /// The stick names another UMS ID than the one this device holds as its pin.
    PinMismatch {
        /// The pinned UMS ID, short.
        pinned: String,
        /// The stick's, short.
        stick: String,
    },
    /// The server refused the request itself (`bad_request`, or an answer that is not EST).
    Rejected {
        /// What it said, without any key.
        detail: String,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::UnitIdConflict => f.write_str(
                "the server already holds this unit ID with another key pair (unit_id_conflict); \
                 an administrator must delete the device record (ums-stub devices delete UNIT_ID)",
            ),
            Failure::KeysExhausted { refused } => write!(
                f,
                "no key left to present: {refused} refused with a final code (used, unknown, \
                 inactive or bound to another device); plug in a stick with fresh keys"
            ),
            Failure::PinMismatch { pinned, stick } => write!(
                f,
                "the stick names UMS ID {stick}, but this device is pinned to {pinned}; the stick \
                 is refused (onboard-agent reset forgets a learned pin)"
            ),
            Failure::Rejected { detail } => write!(f, "the server rejected the request: {detail}"),
        }
    }
}

impl Phase {
    /// The phase's name as `status` prints it.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::WaitingForKey => "waiting_for_key",
            Phase::Enrolling => "enrolling",
            Phase::BackingOff { .. } => "backing_off",
            Phase::Enrolled => "enrolled",
            Phase::Orphaned { .. } => "orphaned",
            Phase::Failed { .. } => "failed",
        }
    }

    /// The phase after `event`, or why `event` cannot happen now.
    pub fn on(&self, event: &Event) -> Result<Phase, InvalidTransition> {
        use Event as E;
        use Phase as P;
        let next = match (self, event) {
            // A key file with keys this device may present: go (also out of a failure, since a
            // new stick may bring fresh keys; the loop decides whether a failure is lifted).
            (P::WaitingForKey | P::Failed { .. } | P::Orphaned { .. }, E::KeysFound) => {
                P::Enrolling
            }
            (P::BackingOff { .. }, E::KeysFound) => self.clone(),
            (P::Enrolling, E::KeysFound) => P::Enrolling,
            (P::Enrolling, E::Issued) => P::Enrolled,
            // A final refusal of one key: the loop moves to the next key, staying here.
            (P::Enrolling, E::KeyRefused) => P::Enrolling,
            (P::Enrolling | P::BackingOff { .. }, E::NetworkFault { attempt, delay }) => {
                P::BackingOff {
                    attempt: *attempt,
                    delay_ms: millis(*delay),
                }
            }
            (P::BackingOff { .. }, E::RetryDue) => P::Enrolling,
            (P::Enrolling | P::BackingOff { .. }, E::Refused(reason)) => P::Failed {
                reason: reason.clone(),
            },
            (P::WaitingForKey | P::Failed { .. } | P::Orphaned { .. }, E::Refused(reason)) => {
                P::Failed {
                    reason: reason.clone(),
                }
            }
            // The stick went before the work was done.
            (P::Enrolling | P::BackingOff { .. }, E::KeysGone) => P::WaitingForKey,
            (P::WaitingForKey, E::KeysGone) => P::WaitingForKey,
            (P::Failed { .. } | P::Orphaned { .. }, E::KeysGone) => self.clone(),
            (P::Enrolled, E::Renewed) => P::Enrolled,
            (P::Enrolled, E::Orphaned { detail }) => P::Orphaned {
                detail: detail.clone(),
            },
            (_, E::Reset) => P::WaitingForKey,
            _ => {
                return Err(InvalidTransition {
                    from: self.name(),
                    event: event.name(),
                });
            }
        };
        Ok(next)
    }

    /// Whether the agent holds a device certificate.
    pub fn is_enrolled(&self) -> bool {
        matches!(self, Phase::Enrolled)
    }
}

fn millis(delay: Duration) -> u64 {
    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
}

/// What happened, as the loop reports it to [`Phase::on`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A key file with keys this device may present was found.
    KeysFound,
    /// No key file any more.
    KeysGone,
    /// A key drew a final refusal (`key_unknown`, `key_inactive`, `key_used`,
    /// `key_bound_to_other_device`, `key_expired`, `key_not_yet_valid`, `key_exhausted`); the
    /// next key follows.
    KeyRefused,
    /// No server could be reached, or each answered 5xx or 429: wait `delay`, then retry the same
    /// key.
    NetworkFault {
        /// How many faults in a row, this one included (the loop counts them: a retry passes
        /// through [`Phase::Enrolling`], which does not hold the count).
        attempt: u32,
        /// The wait [`backoff`] chose for it.
        delay: Duration,
    },
    /// The wait is over.
    RetryDue,
    /// The server issued a certificate that checks out; it is stored.
    Issued,
    /// The certificate was renewed.
    Renewed,
    /// The server refused the device certificate for good (`certificate_not_current`, or the
    /// handshake refused it as expired).
    Orphaned {
        /// What the server said.
        detail: String,
    },
    /// Something the agent cannot get past on its own.
    Refused(Failure),
    /// `onboard-agent reset`.
    Reset,
}

impl Event {
    fn name(&self) -> &'static str {
        match self {
            Event::KeysFound => "keys_found",
            Event::KeysGone => "keys_gone",
            Event::KeyRefused => "key_refused",
            Event::NetworkFault { .. } => "network_fault",
            Event::RetryDue => "retry_due",
            Event::Issued => "issued",
            Event::Renewed => "renewed",
            Event::Orphaned { .. } => "orphaned",
            Event::Refused(_) => "refused",
            Event::Reset => "reset",
        }
    }
}

/// An event that cannot happen in a phase: a bug in the loop, reported rather than obeyed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no transition from {from} on {event}")]
pub struct InvalidTransition {
    /// The phase.
    pub from: &'static str,
    /// The event.
    pub event: &'static str,
}

/// How the agent waits after faults: exponential from `base`, capped at `max`, with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// The wait after the first fault (before jitter).
    pub base: Duration,
    /// The longest wait, also for a `Retry-After` that asks for more.
    pub max: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

/// The wait before retry number `attempt` (1 after the first fault): `base * 2^(attempt-1)`
/// capped at `max`, then "equal jitter" (half fixed, half drawn by `jitter` in `[0, 1]`) so that a
/// fleet that failed together does not retry together; never less than what the server asked for
/// with `Retry-After`, itself capped at `max`.
pub fn backoff(
    policy: &BackoffPolicy,
    attempt: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    let exponent = attempt.saturating_sub(1).min(31);
    let ceiling = policy.base.saturating_mul(1u32 << exponent).min(policy.max);
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let half = ceiling / 2;
    let drawn = half + (ceiling - half).mul_f64(jitter);
    match retry_after {
        Some(asked) => drawn.max(asked.min(policy.max)),
        None => drawn,
    }
}

/// A time as RFC 3339 (`2026-11-23T17:42:00Z`), as logs, the state file and `status` show it.
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.replace_nanosecond(0)
        .unwrap_or(at)
        .format(&Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> Failure {
        Failure::UnitIdConflict
    }

    fn orphaned() -> Phase {
        Phase::Orphaned {
            detail: "lapsed".into(),
        }
    }

    #[test]
    fn transitions_follow_the_table() {
        let backing = Phase::BackingOff {
            attempt: 2,
            delay_ms: 1500,
        };
        let failed = Phase::Failed { reason: refused() };
        let fault = |attempt| Event::NetworkFault {
            attempt,
            delay: Duration::from_millis(700),
        };
        let table: Vec<(Phase, Event, Phase)> = vec![
            (Phase::WaitingForKey, Event::KeysFound, Phase::Enrolling),
            (Phase::Enrolling, Event::Issued, Phase::Enrolled),
            (Phase::Enrolling, Event::KeyRefused, Phase::Enrolling),
            (
                Phase::Enrolling,
                fault(4),
                Phase::BackingOff {
                    attempt: 4,
                    delay_ms: 700,
                },
            ),
            (
                backing.clone(),
                fault(3),
                Phase::BackingOff {
                    attempt: 3,
                    delay_ms: 700,
                },
            ),
            (backing.clone(), Event::RetryDue, Phase::Enrolling),
            (backing.clone(), Event::KeysFound, backing.clone()),
            (backing.clone(), Event::KeysGone, Phase::WaitingForKey),
            (Phase::Enrolling, Event::Refused(refused()), failed.clone()),
            (failed.clone(), Event::KeysFound, Phase::Enrolling),
            (failed.clone(), Event::KeysGone, failed.clone()),
            (Phase::Enrolled, Event::Renewed, Phase::Enrolled),
            (Phase::Enrolled, Event::Reset, Phase::WaitingForKey),
            (failed.clone(), Event::Reset, Phase::WaitingForKey),
            (
                Phase::Enrolled,
                Event::Orphaned {
                    detail: "lapsed".into(),
                },
                orphaned(),
            ),
            (orphaned(), Event::KeysFound, Phase::Enrolling),
            (orphaned(), Event::KeysGone, orphaned()),
            (orphaned(), Event::Refused(refused()), failed.clone()),
            (orphaned(), Event::Reset, Phase::WaitingForKey),
        ];
        for (from, event, to) in table {
            assert_eq!(from.on(&event), Ok(to), "{from:?} on {event:?}");
        }
    }

    #[test]
    fn impossible_events_are_refused_not_obeyed() {
        let table: Vec<(Phase, Event)> = vec![
            (Phase::WaitingForKey, Event::Issued),
            (Phase::Enrolled, Event::KeysFound),
            (Phase::Enrolled, Event::Issued),
            (
                Phase::Enrolled,
                Event::NetworkFault {
                    attempt: 1,
                    delay: Duration::ZERO,
                },
            ),
            (Phase::WaitingForKey, Event::RetryDue),
            (Phase::Enrolling, Event::Renewed),
            (Phase::WaitingForKey, Event::Orphaned { detail: "x".into() }),
            (orphaned(), Event::Renewed),
            (orphaned(), Event::Issued),
        ];
        for (from, event) in table {
            let error = from.on(&event).unwrap_err();
            assert_eq!(error.from, from.name());
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_in_the_upper_half() {
        let policy = BackoffPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        let table: &[(u32, f64, u64)] = &[
            (1, 0.0, 500),
            (1, 1.0, 1000),
            (2, 0.0, 1000),
            (2, 0.5, 1500),
            (3, 1.0, 4000),
            (6, 1.0, 32_000),
            (7, 1.0, 60_000),
            (7, 0.0, 30_000),
            (u32::MAX, 1.0, 60_000),
            // A jitter out of range is clamped, never trusted.
            (1, 7.0, 1000),
            (1, f64::NAN, 500),
        ];
        for &(attempt, jitter, expected) in table {
            assert_eq!(
                backoff(&policy, attempt, None, jitter),
                Duration::from_millis(expected),
                "attempt {attempt}, jitter {jitter}"
            );
        }
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let policy = BackoffPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        let asked = |seconds| Some(Duration::from_secs(seconds));
        assert_eq!(backoff(&policy, 1, asked(20), 0.0), Duration::from_secs(20));
        assert_eq!(
            backoff(&policy, 1, asked(3600), 0.0),
            Duration::from_secs(60)
        );
        // A shorter Retry-After does not cut the backoff short.
        assert_eq!(backoff(&policy, 6, asked(1), 1.0), Duration::from_secs(32));
    }

    #[test]
    fn phases_round_trip_through_json() {
        let phases = [
            Phase::WaitingForKey,
            Phase::Enrolling,
            Phase::BackingOff {
                attempt: 3,
                delay_ms: 4000,
            },
            Phase::Enrolled,
            orphaned(),
            Phase::Failed {
                reason: Failure::KeysExhausted { refused: 4 },
            },
            Phase::Failed {
                reason: Failure::PinMismatch {
                    pinned: "a".into(),
                    stick: "b".into(),
                },
            },
        ];
        for phase in phases {
            let json = serde_json::to_string(&phase).unwrap();
            assert!(
                json.contains(&format!("\"name\":\"{}\"", phase.name())),
                "{json}"
            );
            assert_eq!(serde_json::from_str::<Phase>(&json).unwrap(), phase);
        }
    }

    #[test]
    fn times_print_as_rfc3339_in_utc() {
        let at = OffsetDateTime::from_unix_timestamp(1_795_000_000).unwrap();
        assert_eq!(rfc3339(at), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339(OffsetDateTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
