//! The device-certificate rules, pure: what a renewal comes to, which certificate a device may
//! present, and when a record has lapsed. Backends read the device row, call these, and apply the
//! answer.
//!
//! A renewal must never orphan a device. The server keeps the serial of the device's previous
//! certificate until the new one has been seen (used for a renewal or the inventory): a device
//! whose renewed certificate never reached it still holds the previous one, and is answered as if
//! it had presented the current one. An expired certificate may still renew within the grace
//! period (default a year: a device shelved longer than its certificate's lifetime); past it the
//! record has lapsed, and the device enrolls again with a key.

use time::{Duration, OffsetDateTime};

/// What the rules need of a device's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The serial of its current certificate.
    pub serial: &'a str,
    /// The serial of the certificate before it, until the current one has been seen.
    pub previous_serial: Option<&'a str>,
    /// The DER SubjectPublicKeyInfo the current certificate certifies.
    pub public_key: &'a [u8],
}

/// A certificate a device presented over mutual TLS (already verified against the UMS ID).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presented<'a> {
    /// Its serial.
    pub serial: &'a str,
    /// Its expiry.
    pub not_after: OffsetDateTime,
}

/// Which of the record's certificates a presented one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// The current certificate: the device has seen it, so the previous one can be forgotten.
    Current,
    /// The previous certificate: the device has not received its renewal yet.
    Previous,
    /// Neither: an older certificate, or another device's.
    Neither,
}

/// Which of `record`'s certificates `presented` is.
pub fn held(presented: &str, record: &Record<'_>) -> Held {
    if presented == record.serial {
        Held::Current
    } else if record.previous_serial == Some(presented) {
        Held::Previous
    } else {
        Held::Neither
    }
}

/// Why a renewal is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The certificate is neither the current one nor the previous one.
    NotCurrent,
    /// The certificate expired longer ago than the grace period: enroll again with a key.
    Lapsed,
}

/// What a renewal comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// Refused.
    Refuse(Refusal),
    /// Answer with the current certificate again: the device renewed already and lost the answer.
    Repeat,
    /// Issue a new certificate; the record keeps `previous` as the previous serial.
    Issue {
        /// The serial to honour until the new certificate is seen.
        previous: String,
    },
}

/// Whether a certificate with `not_after` is past the grace period at `now`.
pub fn lapsed(not_after: OffsetDateTime, grace: Duration, now: OffsetDateTime) -> bool {
    not_after + grace < now
}

/// Decides a renewal: `presented` is the certificate the device authenticated with, `public_key`
/// the key of its request.
pub fn decide(
    presented: Presented<'_>,
    public_key: &[u8],
    record: &Record<'_>,
    grace: Duration,
    now: OffsetDateTime,
) -> Renewal {
    if lapsed(presented.not_after, grace, now) {
        return Renewal::Refuse(Refusal::Lapsed);
    }
    match held(presented.serial, record) {
        Held::Current => Renewal::Issue {
            previous: presented.serial.to_owned(),
        },
        // The renewed certificate never arrived. Asked for it again with its key: that one. With
        // another key: a new one, still honouring the certificate the device holds.
        Held::Previous if public_key == record.public_key => Renewal::Repeat,
        Held::Previous => Renewal::Issue {
            previous: presented.serial.to_owned(),
        },
        Held::Neither => Renewal::Refuse(Refusal::NotCurrent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewals_honour_the_previous_certificate_until_the_new_one_is_seen() {
        let now = time::macros::datetime!(2027-06-01 12:00 UTC);
        let grace = Duration::days(365);
        let record = Record {
            serial: "02",
            previous_serial: Some("01"),
            public_key: b"current key",
        };
        let valid = now + Duration::days(100);
        let expired_recently = now - Duration::days(30);
        let expired_long_ago = now - Duration::days(400);
        let issue = |previous: &str| Renewal::Issue {
            previous: previous.to_owned(),
        };
        // presented serial, its expiry, request key => decision
        let table: &[(&str, OffsetDateTime, &[u8], Renewal)] = &[
            ("02", valid, b"new key", issue("02")),
            ("02", valid, b"current key", issue("02")),
            ("01", valid, b"current key", Renewal::Repeat),
            ("01", valid, b"another key", issue("01")),
            (
                "00",
                valid,
                b"current key",
                Renewal::Refuse(Refusal::NotCurrent),
            ),
            (
                "99",
                valid,
                b"new key",
                Renewal::Refuse(Refusal::NotCurrent),
            ),
            ("02", expired_recently, b"new key", issue("02")),
            ("01", expired_recently, b"current key", Renewal::Repeat),
            (
                "02",
                expired_long_ago,
                b"new key",
                Renewal::Refuse(Refusal::Lapsed),
            ),
            (
                "01",
                expired_long_ago,
                b"current key",
                Renewal::Refuse(Refusal::Lapsed),
            ),
        ];
        for (serial, not_after, key, expected) in table {
            let presented = Presented {
                serial,
                not_after: *not_after,
            };
            assert_eq!(
                &decide(presented, key, &record, grace, now),
                expected,
                "{serial} {not_after}"
            );
        }
        // With nothing previous, only the current certificate renews.
        let fresh = Record {
            previous_serial: None,
            ..record
        };
        assert_eq!(held("01", &fresh), Held::Neither);
        assert_eq!(held("02", &fresh), Held::Current);
        assert_eq!(held("01", &record), Held::Previous);
    }

    #[test]
    fn a_record_lapses_only_after_the_grace_period() {
        let now = time::macros::datetime!(2027-06-01 12:00 UTC);
        let grace = Duration::days(365);
        assert!(!lapsed(now + Duration::days(1), grace, now));
        assert!(!lapsed(now - Duration::days(365), grace, now));
        assert!(lapsed(now - Duration::days(366), grace, now));
        assert!(lapsed(
            now - Duration::seconds(2),
            Duration::seconds(1),
            now
        ));
    }
}
