//! The key rules, pure: which status a key has, whether it may go on a stick, and what one
//! enrollment attempt comes to.
//!
//! Every backend reads the key row and the device row inside its enrollment transaction, calls
//! [`decide`], and applies the answer; it decides nothing itself. A backend may repeat a rule in
//! its SQL as a second line of defence (the guarded `UPDATE` that consumes a key), with a comment
//! naming this module. No other file decides a key rule.
//!
//! The rules, from the UMS documentation:
//! - a one-time key enrolls one device, then it is Used; a device-bound one does the same for the
//!   one unit ID it names; a mass-deployment key stays usable and only counts its uses;
//! - a deactivated key is refused; activating a Used one-time key leaves it Used;
//! - a key may carry a lifetime and a mass-deployment key a usage limit ([`Limits`], each bound
//!   optional): before its `not_before` it is Not yet valid, from its `expires_at` on Expired, and
//!   a mass key that enrolled `usage_limit` devices is Exhausted; each is refused with its own
//!   code. Where several statuses fit, the first of Used, Inactive, Expired, Not yet valid,
//!   Exhausted is the key's status ([`status`]); these depend on the time, so they are decided at
//!   the time of reading and never stored (the store keeps only [`stored_status`]);
//! - a unit ID enrolled with one key pair is refused with any other key pair until an
//!   administrator deletes the device record;
//! - a device retrying with the key pair it enrolled with (its answer was lost) gets its stored
//!   certificate back and nothing is counted again;
//! - a record whose certificate lapsed (expired past the renewal grace period) gives way to the
//!   same key pair, or to a device-bound key naming the unit, enrolling with a key as if the unit ID
//!   were new (the record is replaced); to anyone else it is still a conflict, so that a key copied
//!   onto many sticks cannot take over a shelved device's unit ID;
//! - no two keys share a value (a password): a generated value that another key has is drawn
//!   again, at most [`DRAWS`] times for one key, and a typed one is refused ([`after_clash`]).

use onboard_protocol::admin::{KeyId, KeyStatus};
use onboard_protocol::{KeyKind, ProblemCode, UnitId};
use time::OffsetDateTime;

/// When a key may be used and how often; each bound optional, none meaning no bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Refused before this instant.
    pub not_before: Option<OffsetDateTime>,
    /// Refused from this instant on.
    pub expires_at: Option<OffsetDateTime>,
    /// Refused once this many devices enrolled with it (mass-deployment keys only: the store
    /// gives no other kind one).
    pub usage_limit: Option<u64>,
}

/// What the rules need of a key row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRow<'a> {
    /// Its number.
    pub id: KeyId,
    /// Its kind.
    pub kind: KeyKind,
    /// The unit ID a device-bound key names.
    pub bound_to: Option<&'a UnitId>,
    /// Whether an administrator left it activated.
    pub active: bool,
    /// Successful enrollments with it.
    pub usage_count: u64,
    /// Its lifetime and usage limit.
    pub limits: Limits,
}

/// What the rules need of the record of the unit ID that is enrolling, if it is enrolled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRow<'a> {
    /// The DER SubjectPublicKeyInfo its certificate certifies.
    pub public_key: &'a [u8],
    /// The key it enrolled with; `None` when that key was deleted since.
    pub key_id: Option<KeyId>,
    /// Whether its certificate expired longer ago than the renewal grace period
    /// ([`crate::renewal::lapsed`]): such a record no longer holds the unit ID.
    pub lapsed: bool,
}

/// An enrollment attempt: the unit ID claimed and the public key of its certificate request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt<'a> {
    /// The unit ID the device claims.
    pub unit_id: &'a UnitId,
    /// The DER SubjectPublicKeyInfo of its certificate request.
    pub public_key: &'a [u8],
}

/// What one enrollment attempt comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Refuse with this code; nothing changes but the audit log.
    Refuse(ProblemCode),
    /// Answer with the certificate already issued to this unit ID and key pair; consume nothing.
    Repeat,
    /// Issue a certificate, count one use of the key and record the device.
    Consume,
}

/// The part of a key's status that does not depend on the time, which the store keeps (so that
/// lists filter on it by index): Used wins over the activation flag, and a mass-deployment key is
/// never Used. Only Active, Inactive and Used.
pub fn stored_status(kind: KeyKind, active: bool, usage_count: u64) -> KeyStatus {
    if kind != KeyKind::MassDeployment && usage_count > 0 {
        KeyStatus::Used
    } else if active {
        KeyStatus::Active
    } else {
        KeyStatus::Inactive
    }
}

/// The status the key list shows at `now`: the first that fits of Used, Inactive ([`stored_status`]),
/// Expired, Not yet valid, Exhausted ([`Limits`]); Active when none does.
pub fn status(
    kind: KeyKind,
    active: bool,
    usage_count: u64,
    limits: Limits,
    now: OffsetDateTime,
) -> KeyStatus {
    match stored_status(kind, active, usage_count) {
        KeyStatus::Active => {
            beyond_limits(limits, usage_count, now).map_or(KeyStatus::Active, Beyond::status)
        }
        stored => stored,
    }
}

/// Which bound of its [`Limits`] a key is beyond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Beyond {
    /// Past `expires_at`.
    Expired,
    /// Before `not_before`.
    NotYetValid,
    /// At its usage limit.
    Exhausted,
}

impl Beyond {
    fn status(self) -> KeyStatus {
        match self {
            Beyond::Expired => KeyStatus::Expired,
            Beyond::NotYetValid => KeyStatus::NotYetValid,
            Beyond::Exhausted => KeyStatus::Exhausted,
        }
    }

    fn code(self) -> ProblemCode {
        match self {
            Beyond::Expired => ProblemCode::KeyExpired,
            Beyond::NotYetValid => ProblemCode::KeyNotYetValid,
            Beyond::Exhausted => ProblemCode::KeyExhausted,
        }
    }
}

/// The first bound of `limits` (expiry, start, usage limit) a key used `usage_count` times is
/// beyond at `now`; `None` within them all. Expired from the instant `expires_at` on; valid from
/// the instant `not_before` on.
fn beyond_limits(limits: Limits, usage_count: u64, now: OffsetDateTime) -> Option<Beyond> {
    if limits.expires_at.is_some_and(|end| now >= end) {
        Some(Beyond::Expired)
    } else if limits.not_before.is_some_and(|start| now < start) {
        Some(Beyond::NotYetValid)
    } else if limits.usage_limit.is_some_and(|limit| usage_count >= limit) {
        Some(Beyond::Exhausted)
    } else {
        None
    }
}

/// Whether a key with `status` may be exported to a stick: only keys a device can use now, or
/// will be able to once their lifetime begins (sticks are prepared before a rollout). Expired,
/// Exhausted, Used and Inactive keys are never exported.
pub fn exportable(status: KeyStatus) -> bool {
    matches!(status, KeyStatus::Active | KeyStatus::NotYetValid)
}

/// Whether a key of `kind` may carry a usage limit: only a mass-deployment key enrolls more than
/// one device.
pub fn may_limit_usage(kind: KeyKind) -> bool {
    kind == KeyKind::MassDeployment
}

/// The most times one new key's value is drawn when generated values clash with existing keys.
pub const DRAWS: u32 = 16;

/// Why a new key is refused: its value is another key's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Clash {
    /// The value was typed: two keys with one password would each enroll as the other, and which
    /// one a device used could not be told.
    #[error("another key already has this value; two keys cannot share a password")]
    Typed,
    /// Every draw of a generated value clashed (the random source is broken, or the key space
    /// nearly full).
    #[error("could not generate a unique key value after {0} attempts")]
    Exhausted(u32),
}

/// What a new key comes to when its value, drawn for the `draws`th time (1: the first value),
/// is another key's: a generated value is drawn again, up to [`DRAWS`] times for each key; a
/// typed one is refused.
pub fn after_clash(generated: bool, draws: u32) -> Result<(), Clash> {
    if !generated {
        Err(Clash::Typed)
    } else if draws >= DRAWS {
        Err(Clash::Exhausted(draws))
    } else {
        Ok(())
    }
}

/// Decides an enrollment attempt at `now` from the key presented (`None`: no key has that value)
/// and the record of the unit ID (`None`: not enrolled).
///
/// The order matters and is part of the rule: an unknown key is refused before anything about the
/// device is said (a guess learns nothing); a unit ID enrolled with another key pair is refused
/// before the key's own state (the administrator must act whatever the key); a retry with the key
/// the device enrolled with is answered whatever that key's state is now (it may have just become
/// Used, Exhausted or Expired since this very device enrolled); a retry with another key is
/// answered only if that key would have been good, and consumes it not. The key's own state is
/// then refused in this order: inactive, bound to another unit, used, expired, not yet valid,
/// exhausted.
pub fn decide(
    attempt: Attempt<'_>,
    key: Option<KeyRow<'_>>,
    device: Option<DeviceRow<'_>>,
    now: OffsetDateTime,
) -> Decision {
    let Some(key) = key else {
        return Decision::Refuse(ProblemCode::KeyUnknown);
    };
    let bound_here = key.kind == KeyKind::DeviceBound && key.bound_to == Some(attempt.unit_id);
    let device = device.filter(|device| {
        !(device.lapsed && (device.public_key == attempt.public_key || bound_here))
    });
    if let Some(device) = device {
        if device.public_key != attempt.public_key {
            return Decision::Refuse(ProblemCode::UnitIdConflict);
        }
        if device.key_id.is_none_or(|id| id == key.id) {
            return Decision::Repeat;
        }
    }
    if !key.active {
        return Decision::Refuse(ProblemCode::KeyInactive);
    }
    if key.kind == KeyKind::DeviceBound && key.bound_to != Some(attempt.unit_id) {
        return Decision::Refuse(ProblemCode::KeyBoundToOtherDevice);
    }
    if stored_status(key.kind, key.active, key.usage_count) == KeyStatus::Used {
        return Decision::Refuse(ProblemCode::KeyUsed);
    }
    if let Some(beyond) = beyond_limits(key.limits, key.usage_count, now) {
        return Decision::Refuse(beyond.code());
    }
    if device.is_some() {
        Decision::Repeat
    } else {
        Decision::Consume
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProblemCode::{KeyBoundToOtherDevice, KeyInactive, KeyUnknown, KeyUsed, UnitIdConflict};

    const KEY: KeyId = 5;
    const OTHER_KEY: KeyId = 9;
    const PAIR: &[u8] = b"this device's key pair";
    const OTHER_PAIR: &[u8] = b"another key pair";

    /// The instant the tests decide at.
    const NOW: OffsetDateTime = time::macros::datetime!(2026-11-30 12:00 UTC);

    #[test]
    fn stored_status_follows_the_key_list() {
        use KeyKind::{DeviceBound, MassDeployment, OneTime};
        use KeyStatus::{Active, Inactive, Used};
        // kind, active, usage count => status
        let table = [
            (OneTime, true, 0, Active),
            (OneTime, false, 0, Inactive),
            (OneTime, true, 1, Used),
            (OneTime, false, 1, Used),
            (DeviceBound, true, 0, Active),
            (DeviceBound, false, 0, Inactive),
            (DeviceBound, true, 1, Used),
            (DeviceBound, false, 1, Used),
            (MassDeployment, true, 0, Active),
            (MassDeployment, false, 0, Inactive),
            (MassDeployment, true, 40, Active),
            (MassDeployment, false, 40, Inactive),
        ];
        for (kind, active, uses, expected) in table {
            assert_eq!(
                stored_status(kind, active, uses),
                expected,
                "{kind} {active} {uses}"
            );
        }
        assert!(exportable(Active) && exportable(KeyStatus::NotYetValid));
        assert!(may_limit_usage(MassDeployment));
        assert!(!may_limit_usage(OneTime) && !may_limit_usage(DeviceBound));
        for never in [Inactive, Used, KeyStatus::Expired, KeyStatus::Exhausted] {
            assert!(!exportable(never), "{never}");
        }
    }

    /// The device row an attempt meets.
    #[derive(Debug, Clone, Copy)]
    enum Device {
        /// The unit ID is not enrolled.
        Unknown,
        /// Enrolled with this key pair, with the key presented now.
        SamePairThisKey,
        /// Enrolled with this key pair, with a key deleted since.
        SamePairDeletedKey,
        /// Enrolled with this key pair, with another key.
        SamePairOtherKey,
        /// Enrolled with another key pair.
        OtherPair,
    }

    fn run(kind: &str, active: bool, used: bool, bound_here: bool, device: Device) -> Decision {
        let this_unit: UnitId = "00E0C5540B8B".parse().unwrap();
        let other_unit: UnitId = "00E0C5540B8C".parse().unwrap();
        let kind: KeyKind = kind.parse().unwrap();
        let key = KeyRow {
            id: KEY,
            kind,
            bound_to: (kind == KeyKind::DeviceBound).then_some(if bound_here {
                &this_unit
            } else {
                &other_unit
            }),
            active,
            usage_count: u64::from(used),
            limits: Limits::default(),
        };
        let device = match device {
            Device::Unknown => None,
            Device::SamePairThisKey => Some((PAIR, Some(KEY))),
            Device::SamePairDeletedKey => Some((PAIR, None)),
            Device::SamePairOtherKey => Some((PAIR, Some(OTHER_KEY))),
            Device::OtherPair => Some((OTHER_PAIR, Some(KEY))),
        }
        .map(|(public_key, key_id)| DeviceRow {
            public_key,
            key_id,
            lapsed: false,
        });
        let attempt = Attempt {
            unit_id: &this_unit,
            public_key: PAIR,
        };
        decide(attempt, Some(key), device, NOW)
    }

    /// Every combination of kind × active × used × bound unit × device record. `bound` is `-` for
    /// keys that name no unit, `here` or `other` for device-bound ones.
    #[test]
    fn every_combination_decides_as_the_rules_say() {
        use Decision::{Consume, Refuse, Repeat};
        use Device::{OtherPair, SamePairDeletedKey, SamePairOtherKey, SamePairThisKey, Unknown};
        let r = Refuse;
        #[rustfmt::skip]
        let table: &[(&str, bool, bool, &str, Device, Decision)] = &[
            // kind         active used   bound    device              => decision
            ("one-time",     true,  false, "-",     Unknown,            Consume),
            ("one-time",     true,  false, "-",     SamePairThisKey,    Repeat),
            ("one-time",     true,  false, "-",     SamePairDeletedKey, Repeat),
            ("one-time",     true,  false, "-",     SamePairOtherKey,   Repeat),
            ("one-time",     true,  false, "-",     OtherPair,          r(UnitIdConflict)),
            ("one-time",     true,  true,  "-",     Unknown,            r(KeyUsed)),
            ("one-time",     true,  true,  "-",     SamePairThisKey,    Repeat),
            ("one-time",     true,  true,  "-",     SamePairDeletedKey, Repeat),
            ("one-time",     true,  true,  "-",     SamePairOtherKey,   r(KeyUsed)),
            ("one-time",     true,  true,  "-",     OtherPair,          r(UnitIdConflict)),
            ("one-time",     false, false, "-",     Unknown,            r(KeyInactive)),
            ("one-time",     false, false, "-",     SamePairThisKey,    Repeat),
            ("one-time",     false, false, "-",     SamePairDeletedKey, Repeat),
            ("one-time",     false, false, "-",     SamePairOtherKey,   r(KeyInactive)),
            ("one-time",     false, false, "-",     OtherPair,          r(UnitIdConflict)),
            ("one-time",     false, true,  "-",     Unknown,            r(KeyInactive)),
            ("one-time",     false, true,  "-",     SamePairThisKey,    Repeat),
            ("one-time",     false, true,  "-",     SamePairDeletedKey, Repeat),
            ("one-time",     false, true,  "-",     SamePairOtherKey,   r(KeyInactive)),
            ("one-time",     false, true,  "-",     OtherPair,          r(UnitIdConflict)),
            ("device-bound", true,  false, "here",  Unknown,            Consume),
            ("device-bound", true,  false, "here",  SamePairThisKey,    Repeat),
            ("device-bound", true,  false, "here",  SamePairDeletedKey, Repeat),
            ("device-bound", true,  false, "here",  SamePairOtherKey,   Repeat),
            ("device-bound", true,  false, "here",  OtherPair,          r(UnitIdConflict)),
            ("device-bound", true,  false, "other", Unknown,            r(KeyBoundToOtherDevice)),
            ("device-bound", true,  false, "other", SamePairThisKey,    Repeat),
            ("device-bound", true,  false, "other", SamePairDeletedKey, Repeat),
            ("device-bound", true,  false, "other", SamePairOtherKey,   r(KeyBoundToOtherDevice)),
            ("device-bound", true,  false, "other", OtherPair,          r(UnitIdConflict)),
            ("device-bound", true,  true,  "here",  Unknown,            r(KeyUsed)),
            ("device-bound", true,  true,  "here",  SamePairThisKey,    Repeat),
            ("device-bound", true,  true,  "here",  SamePairDeletedKey, Repeat),
            ("device-bound", true,  true,  "here",  SamePairOtherKey,   r(KeyUsed)),
            ("device-bound", true,  true,  "here",  OtherPair,          r(UnitIdConflict)),
            ("device-bound", true,  true,  "other", Unknown,            r(KeyBoundToOtherDevice)),
            ("device-bound", true,  true,  "other", SamePairThisKey,    Repeat),
            ("device-bound", true,  true,  "other", SamePairDeletedKey, Repeat),
            ("device-bound", true,  true,  "other", SamePairOtherKey,   r(KeyBoundToOtherDevice)),
            ("device-bound", true,  true,  "other", OtherPair,          r(UnitIdConflict)),
            ("device-bound", false, false, "here",  Unknown,            r(KeyInactive)),
            ("device-bound", false, false, "here",  SamePairThisKey,    Repeat),
            ("device-bound", false, false, "here",  SamePairDeletedKey, Repeat),
            ("device-bound", false, false, "here",  SamePairOtherKey,   r(KeyInactive)),
            ("device-bound", false, false, "here",  OtherPair,          r(UnitIdConflict)),
            ("device-bound", false, false, "other", Unknown,            r(KeyInactive)),
            ("device-bound", false, false, "other", SamePairThisKey,    Repeat),
            ("device-bound", false, false, "other", SamePairDeletedKey, Repeat),
            ("device-bound", false, false, "other", SamePairOtherKey,   r(KeyInactive)),
            ("device-bound", false, false, "other", OtherPair,          r(UnitIdConflict)),
            ("device-bound", false, true,  "here",  Unknown,            r(KeyInactive)),
            ("device-bound", false, true,  "here",  SamePairThisKey,    Repeat),
            ("device-bound", false, true,  "here",  SamePairDeletedKey, Repeat),
            ("device-bound", false, true,  "here",  SamePairOtherKey,   r(KeyInactive)),
            ("device-bound", false, true,  "here",  OtherPair,          r(UnitIdConflict)),
            ("device-bound", false, true,  "other", Unknown,            r(KeyInactive)),
            ("device-bound", false, true,  "other", SamePairThisKey,    Repeat),
            ("device-bound", false, true,  "other", SamePairDeletedKey, Repeat),
            ("device-bound", false, true,  "other", SamePairOtherKey,   r(KeyInactive)),
            ("device-bound", false, true,  "other", OtherPair,          r(UnitIdConflict)),
            ("mass",         true,  false, "-",     Unknown,            Consume),
            ("mass",         true,  false, "-",     SamePairThisKey,    Repeat),
            ("mass",         true,  false, "-",     SamePairDeletedKey, Repeat),
            ("mass",         true,  false, "-",     SamePairOtherKey,   Repeat),
            ("mass",         true,  false, "-",     OtherPair,          r(UnitIdConflict)),
            ("mass",         true,  true,  "-",     Unknown,            Consume),
            ("mass",         true,  true,  "-",     SamePairThisKey,    Repeat),
            ("mass",         true,  true,  "-",     SamePairDeletedKey, Repeat),
            ("mass",         true,  true,  "-",     SamePairOtherKey,   Repeat),
            ("mass",         true,  true,  "-",     OtherPair,          r(UnitIdConflict)),
            ("mass",         false, false, "-",     Unknown,            r(KeyInactive)),
            ("mass",         false, false, "-",     SamePairThisKey,    Repeat),
            ("mass",         false, false, "-",     SamePairDeletedKey, Repeat),
            ("mass",         false, false, "-",     SamePairOtherKey,   r(KeyInactive)),
            ("mass",         false, false, "-",     OtherPair,          r(UnitIdConflict)),
            ("mass",         false, true,  "-",     Unknown,            r(KeyInactive)),
            ("mass",         false, true,  "-",     SamePairThisKey,    Repeat),
            ("mass",         false, true,  "-",     SamePairDeletedKey, Repeat),
            ("mass",         false, true,  "-",     SamePairOtherKey,   r(KeyInactive)),
            ("mass",         false, true,  "-",     OtherPair,          r(UnitIdConflict)),
        ];
        // 20 rows per (kind, bound) pair: one-time, device-bound here, device-bound other, mass.
        assert_eq!(table.len(), 4 * 2 * 2 * 5);
        for &(kind, active, used, bound, device, expected) in table {
            let decided = run(kind, active, used, bound == "here", device);
            assert_eq!(
                decided, expected,
                "{kind} active={active} used={used} bound={bound} device={device:?}"
            );
        }
    }

    /// An instant relative to [`NOW`]: `-` none, `past` an hour before, `now` itself, `future` an
    /// hour after.
    fn at(when: &str) -> Option<OffsetDateTime> {
        match when {
            "-" => None,
            "past" => Some(NOW - time::Duration::HOUR),
            "now" => Some(NOW),
            "future" => Some(NOW + time::Duration::HOUR),
            _ => panic!("no instant {when:?}"),
        }
    }

    /// Limits from the table's words; a usage limit `below` or `reached` by 3 uses.
    fn limits(expires: &str, not_before: &str, limit: &str) -> Limits {
        Limits {
            expires_at: at(expires),
            not_before: at(not_before),
            usage_limit: match limit {
                "-" => None,
                "below" => Some(4),
                "reached" => Some(3),
                _ => panic!("no limit {limit:?}"),
            },
        }
    }

    /// Every combination of expiry × start × usage limit, on an active mass-deployment key used 3
    /// times: its status at [`NOW`], and what a new unit ID presenting it comes to. Expired is
    /// from the instant of `expires_at` on, valid from the instant of `not_before` on.
    #[test]
    fn every_lifetime_and_limit_decides_as_the_rules_say() {
        use Decision::{Consume, Refuse, Repeat};
        use KeyStatus::{Active, Exhausted, Expired, NotYetValid};
        use ProblemCode::{KeyExhausted, KeyExpired, KeyNotYetValid};
        let r = Refuse;
        let unit: UnitId = "00E0C5540B8B".parse().unwrap();
        let attempt = Attempt {
            unit_id: &unit,
            public_key: PAIR,
        };
        #[rustfmt::skip]
        let table: &[(&str, &str, &str, KeyStatus, Decision)] = &[
            // expires  not_before  usage limit  => status    decision for a new unit
            ("-",      "-",      "-",       Active,      Consume),
            ("-",      "-",      "below",   Active,      Consume),
            ("-",      "-",      "reached", Exhausted,   r(KeyExhausted)),
            ("-",      "past",   "-",       Active,      Consume),
            ("-",      "past",   "below",   Active,      Consume),
            ("-",      "past",   "reached", Exhausted,   r(KeyExhausted)),
            ("-",      "now",    "-",       Active,      Consume),
            ("-",      "now",    "below",   Active,      Consume),
            ("-",      "now",    "reached", Exhausted,   r(KeyExhausted)),
            ("-",      "future", "-",       NotYetValid, r(KeyNotYetValid)),
            ("-",      "future", "below",   NotYetValid, r(KeyNotYetValid)),
            ("-",      "future", "reached", NotYetValid, r(KeyNotYetValid)),
            ("past",   "-",      "-",       Expired,     r(KeyExpired)),
            ("past",   "-",      "below",   Expired,     r(KeyExpired)),
            ("past",   "-",      "reached", Expired,     r(KeyExpired)),
            ("past",   "past",   "-",       Expired,     r(KeyExpired)),
            ("past",   "past",   "below",   Expired,     r(KeyExpired)),
            ("past",   "past",   "reached", Expired,     r(KeyExpired)),
            ("past",   "now",    "-",       Expired,     r(KeyExpired)),
            ("past",   "now",    "below",   Expired,     r(KeyExpired)),
            ("past",   "now",    "reached", Expired,     r(KeyExpired)),
            ("past",   "future", "-",       Expired,     r(KeyExpired)),
            ("past",   "future", "below",   Expired,     r(KeyExpired)),
            ("past",   "future", "reached", Expired,     r(KeyExpired)),
            ("now",    "-",      "-",       Expired,     r(KeyExpired)),
            ("now",    "-",      "below",   Expired,     r(KeyExpired)),
            ("now",    "-",      "reached", Expired,     r(KeyExpired)),
            ("now",    "past",   "-",       Expired,     r(KeyExpired)),
            ("now",    "past",   "below",   Expired,     r(KeyExpired)),
            ("now",    "past",   "reached", Expired,     r(KeyExpired)),
            ("now",    "now",    "-",       Expired,     r(KeyExpired)),
            ("now",    "now",    "below",   Expired,     r(KeyExpired)),
            ("now",    "now",    "reached", Expired,     r(KeyExpired)),
            ("now",    "future", "-",       Expired,     r(KeyExpired)),
            ("now",    "future", "below",   Expired,     r(KeyExpired)),
            ("now",    "future", "reached", Expired,     r(KeyExpired)),
            ("future", "-",      "-",       Active,      Consume),
            ("future", "-",      "below",   Active,      Consume),
            ("future", "-",      "reached", Exhausted,   r(KeyExhausted)),
            ("future", "past",   "-",       Active,      Consume),
            ("future", "past",   "below",   Active,      Consume),
            ("future", "past",   "reached", Exhausted,   r(KeyExhausted)),
            ("future", "now",    "-",       Active,      Consume),
            ("future", "now",    "below",   Active,      Consume),
            ("future", "now",    "reached", Exhausted,   r(KeyExhausted)),
            ("future", "future", "-",       NotYetValid, r(KeyNotYetValid)),
            ("future", "future", "below",   NotYetValid, r(KeyNotYetValid)),
            ("future", "future", "reached", NotYetValid, r(KeyNotYetValid)),
        ];
        assert_eq!(table.len(), 4 * 4 * 3);
        for &(expires, not_before, limit, status_then, decision) in table {
            let limits = limits(expires, not_before, limit);
            let kind = KeyKind::MassDeployment;
            assert_eq!(
                status(kind, true, 3, limits, NOW),
                status_then,
                "{expires} {not_before} {limit}"
            );
            let key = KeyRow {
                id: KEY,
                kind,
                bound_to: None,
                active: true,
                usage_count: 3,
                limits,
            };
            let device = |public_key, key_id| {
                Some(DeviceRow {
                    public_key,
                    key_id,
                    lapsed: false,
                })
            };
            assert_eq!(
                decide(attempt, Some(key), None, NOW),
                decision,
                "new unit: {expires} {not_before} {limit}"
            );
            // A retry with the key the device enrolled with is answered whatever its state now.
            for key_id in [Some(KEY), None] {
                assert_eq!(
                    decide(attempt, Some(key), device(PAIR, key_id), NOW),
                    Repeat,
                    "retry: {expires} {not_before} {limit}"
                );
            }
            // A retry with another key: answered only if that key would have been good.
            let other_key = if decision == Consume {
                Repeat
            } else {
                decision
            };
            assert_eq!(
                decide(attempt, Some(key), device(PAIR, Some(OTHER_KEY)), NOW),
                other_key,
                "retry with another key: {expires} {not_before} {limit}"
            );
            assert_eq!(
                decide(attempt, Some(key), device(OTHER_PAIR, Some(KEY)), NOW),
                r(UnitIdConflict),
                "another key pair: {expires} {not_before} {limit}"
            );
        }
    }

    /// The older refusals come first: a key that is inactive, bound to another unit or used is
    /// refused as such, and shown Used or Inactive, whatever its lifetime says; one-time and
    /// device-bound keys expire and start like mass ones.
    #[test]
    fn lifetime_refusals_come_after_the_key_s_own_state() {
        use KeyKind::{DeviceBound, MassDeployment, OneTime};
        use ProblemCode::{KeyExpired, KeyNotYetValid};
        let this_unit: UnitId = "00E0C5540B8B".parse().unwrap();
        let other_unit: UnitId = "00E0C5540B8C".parse().unwrap();
        let attempt = Attempt {
            unit_id: &this_unit,
            public_key: PAIR,
        };
        let expired = limits("past", "future", "reached");
        let early = limits("future", "future", "-");
        #[rustfmt::skip]
        /// kind, active, uses, bound to, limits => status, refusal
        type Row<'u> = (KeyKind, bool, u64, Option<&'u UnitId>, Limits, KeyStatus, ProblemCode);
        let table: &[Row<'_>] = &[
            // kind         active uses bound to          limits   => status              refusal
            (
                OneTime,
                false,
                0,
                None,
                expired,
                KeyStatus::Inactive,
                KeyInactive,
            ),
            (OneTime, true, 1, None, expired, KeyStatus::Used, KeyUsed),
            (OneTime, false, 1, None, early, KeyStatus::Used, KeyInactive),
            (
                OneTime,
                true,
                0,
                None,
                expired,
                KeyStatus::Expired,
                KeyExpired,
            ),
            (
                OneTime,
                true,
                0,
                None,
                early,
                KeyStatus::NotYetValid,
                KeyNotYetValid,
            ),
            (
                DeviceBound,
                true,
                0,
                Some(&other_unit),
                expired,
                KeyStatus::Expired,
                KeyBoundToOtherDevice,
            ),
            (
                DeviceBound,
                true,
                1,
                Some(&this_unit),
                early,
                KeyStatus::Used,
                KeyUsed,
            ),
            (
                DeviceBound,
                true,
                0,
                Some(&this_unit),
                expired,
                KeyStatus::Expired,
                KeyExpired,
            ),
            (
                DeviceBound,
                true,
                0,
                Some(&this_unit),
                early,
                KeyStatus::NotYetValid,
                KeyNotYetValid,
            ),
            (
                MassDeployment,
                false,
                3,
                None,
                expired,
                KeyStatus::Inactive,
                KeyInactive,
            ),
            (
                MassDeployment,
                false,
                0,
                None,
                early,
                KeyStatus::Inactive,
                KeyInactive,
            ),
        ];
        for &(kind, active, uses, bound_to, limits, status_then, code) in table {
            assert_eq!(
                status(kind, active, uses, limits, NOW),
                status_then,
                "{kind} active={active} uses={uses} {limits:?}"
            );
            let key = KeyRow {
                id: KEY,
                kind,
                bound_to,
                active,
                usage_count: uses,
                limits,
            };
            assert_eq!(
                decide(attempt, Some(key), None, NOW),
                Decision::Refuse(code),
                "{kind} active={active} uses={uses} {limits:?}"
            );
        }
    }

    #[test]
    fn a_lapsed_record_gives_way_to_its_key_pair_or_a_key_bound_to_the_unit_only() {
        let unit: UnitId = "00E0C5540B8B".parse().unwrap();
        let attempt = Attempt {
            unit_id: &unit,
            public_key: PAIR,
        };
        for kind in KeyKind::ALL {
            for (active, uses) in [(true, 0), (true, 1), (false, 0)] {
                let key = KeyRow {
                    id: KEY,
                    kind,
                    bound_to: (kind == KeyKind::DeviceBound).then_some(&unit),
                    active,
                    usage_count: uses,
                    limits: Limits::default(),
                };
                let unknown_device = decide(attempt, Some(key), None, NOW);
                for (public_key, key_id) in
                    [(PAIR, Some(KEY)), (PAIR, Some(OTHER_KEY)), (PAIR, None)]
                {
                    let lapsed = DeviceRow {
                        public_key,
                        key_id,
                        lapsed: true,
                    };
                    assert_eq!(
                        decide(attempt, Some(key), Some(lapsed), NOW),
                        unknown_device,
                        "same pair: {kind} active={active} uses={uses}"
                    );
                }
                // Another key pair: only a device-bound key naming the unit takes the unit over.
                let other_pair = DeviceRow {
                    public_key: OTHER_PAIR,
                    key_id: Some(OTHER_KEY),
                    lapsed: true,
                };
                let expected = if kind == KeyKind::DeviceBound {
                    unknown_device
                } else {
                    Decision::Refuse(UnitIdConflict)
                };
                assert_eq!(
                    decide(attempt, Some(key), Some(other_pair), NOW),
                    expected,
                    "other pair: {kind} active={active} uses={uses}"
                );
            }
        }
    }

    #[test]
    fn an_unknown_key_says_nothing_about_the_device() {
        let unit: UnitId = "00E0C5540B8B".parse().unwrap();
        let attempt = Attempt {
            unit_id: &unit,
            public_key: PAIR,
        };
        for device in [
            None,
            Some(DeviceRow {
                public_key: OTHER_PAIR,
                key_id: Some(KEY),
                lapsed: false,
            }),
            Some(DeviceRow {
                public_key: PAIR,
                key_id: None,
                lapsed: false,
            }),
        ] {
            assert_eq!(
                decide(attempt, None, device, NOW),
                Decision::Refuse(KeyUnknown)
            );
        }
    }

    #[test]
    fn a_clashing_value_is_drawn_again_if_generated_and_refused_if_typed() {
        // generated, draws so far => what comes of the clash
        let table = [
            (true, 1, Ok(())),
            (true, 2, Ok(())),
            (true, DRAWS - 1, Ok(())),
            (true, DRAWS, Err(Clash::Exhausted(DRAWS))),
            (false, 1, Err(Clash::Typed)),
            (false, DRAWS, Err(Clash::Typed)),
        ];
        for (generated, draws, expected) in table {
            assert_eq!(
                after_clash(generated, draws),
                expected,
                "{generated} {draws}"
            );
        }
        assert_eq!(
            Clash::Typed.to_string(),
            "another key already has this value; two keys cannot share a password"
        );
        assert_eq!(
            Clash::Exhausted(DRAWS).to_string(),
            "could not generate a unique key value after 16 attempts"
        );
    }
}
