//! The flows of `apply.rs` over an in-memory transaction: which row operations each decision
//! comes to, in which order, and which audit lines it writes. The conformance suite
//! (`tests/stub/conformance.rs`) runs the same flows over both real backends.

use std::sync::{Arc, Mutex};

use onboard_protocol::KeyKind;
use onboard_protocol::admin::{KeyId, KeyStatus};
use time::Duration;

use super::fake::Fake;
use super::*;
use crate::ca::IssuedCertificate;
use crate::store::rows::NewKey;
use crate::store::tx::ready;

const NOW: OffsetDateTime = time::macros::datetime!(2026-06-01 12:00 UTC);
/// An expiry past the renewal grace period at [`NOW`].
const LAPSED: OffsetDateTime = time::macros::datetime!(2025-05-01 12:00 UTC);
/// An expiry to come.
const CURRENT: OffsetDateTime = time::macros::datetime!(2026-09-01 12:00 UTC);
const PAIR: &[u8] = b"the device's key pair";
const OTHER_PAIR: &[u8] = b"another key pair";

fn unit() -> UnitId {
    "00E0C5540B8B".parse().unwrap()
}

fn other_unit() -> UnitId {
    "00E0C5540B8C".parse().unwrap()
}

/// An attempt by [`unit`] with [`PAIR`], the keys `lookups` in order.
fn attempt(lookups: &[u8]) -> EnrollAttempt {
    EnrollAttempt {
        unit_id: unit(),
        lookup: [lookups[0]; 32],
        alternates: lookups[1..].iter().map(|&n| [n; 32]).collect(),
        public_key: PAIR.to_vec(),
        source: "192.0.2.7".to_owned(),
        lapsed_before: NOW - Duration::days(30),
    }
}

/// A certificate signed by the CA: notes `sign` in `fake`'s log when it is taken.
fn issue(fake: &Fake, serial: &str) -> IssueOnce {
    let (log, serial) = (fake.log.clone(), serial.to_owned());
    Box::new(move || {
        log.lock().unwrap().push("sign".to_owned());
        Ok(IssuedCertificate {
            der: serial.as_bytes().to_vec(),
            serial,
            not_after: NOW + Duration::days(365),
        })
    })
}

/// The record of [`unit`] enrolled with `public_key` and key `key_id`, its certificate expiring
/// at `not_after`.
fn enrolled(public_key: &[u8], key_id: KeyId, not_after: OffsetDateTime) -> DeviceRecord {
    DeviceRecord {
        unit_id: unit(),
        public_key: public_key.to_vec(),
        certificate: b"old".to_vec(),
        serial: "01D".to_owned(),
        not_after,
        previous_serial: None,
        key_id: Some(key_id),
        key_kind: KeyKind::OneTime,
        enrolled_at: NOW - Duration::days(800),
        last_seen: NOW - Duration::days(400),
        inventory: None,
        online_server: None,
        folder: None,
    }
}

/// What an outcome says, in short: `issued by key N` (`repeated` when answered from the record,
/// with the keys refused before it), or the refusals.
fn told(outcome: &EnrollOutcome) -> String {
    match outcome {
        EnrollOutcome::Issued {
            repeated,
            key,
            refused,
            device,
        } => format!(
            "{} {} by key {key}{}",
            if *repeated { "repeated" } else { "issued" },
            device.serial,
            if refused.is_empty() {
                String::new()
            } else {
                format!(" after {refused:?}")
            }
        ),
        EnrollOutcome::Refused(code) => format!("refused {code}"),
        EnrollOutcome::RefusedEach(each) => format!("refused each {each:?}"),
    }
}

#[test]
fn enrollment_decisions_are_applied_in_order_and_audited() {
    // What each case sets up: the fake's rows.
    type Setup = fn(&mut Fake);
    let one_time: Setup = |fake| {
        fake.key(1, KeyKind::OneTime, None, false);
    };
    #[rustfmt::skip]
    // case, setup, keys presented => what the device is told, the row operations in order, the
    // audit lines (outcome, detail)
    type Case = (&'static str, Setup, &'static [u8], &'static str, &'static [&'static str], &'static [(&'static str, &'static str)]);
    let table: &[Case] = &[
        (
            "an unknown key writes only its refusal",
            |_| {},
            &[1],
            "refused key_unknown",
            &["key", "device", "audit"],
            &[("key_unknown", "")],
        ),
        (
            "a good key is consumed before the certificate is signed and the device recorded",
            one_time,
            &[1],
            "issued NEW by key 0",
            &["key", "device", "consume 1", "sign", "put device", "audit"],
            &[("ok", "certificate NEW")],
        ),
        (
            "a consume guard refusal signs nothing and is audited as used",
            |fake| {
                let id = fake.key(1, KeyKind::OneTime, None, false);
                fake.guard_refuses.insert(id);
            },
            &[1],
            "refused key_used",
            &["key", "device", "consume 1", "audit"],
            &[("key_used", "")],
        ),
        (
            "after a guard refusal the next key gets the one signature",
            |fake| {
                let id = fake.key(1, KeyKind::OneTime, None, false);
                fake.guard_refuses.insert(id);
                fake.key(2, KeyKind::OneTime, None, false);
            },
            &[1, 2],
            "issued NEW by key 1 after [(0, KeyUsed)]",
            &[
                "key",
                "device",
                "consume 1",
                "audit",
                "key",
                "device",
                "consume 2",
                "sign",
                "put device",
                "audit",
            ],
            &[("key_used", ""), ("ok", "certificate NEW")],
        ),
        (
            "a used key and an unknown one: each refused and audited, in order",
            |fake| {
                fake.key(1, KeyKind::OneTime, None, true);
            },
            &[1, 9],
            "refused each [(0, KeyUsed), (1, KeyUnknown)]",
            &["key", "device", "audit", "key", "device", "audit"],
            &[("key_used", ""), ("key_unknown", "")],
        ),
        (
            "a retry with the key pair and key it enrolled with is answered from the record",
            |fake| {
                let id = fake.key(1, KeyKind::OneTime, None, true);
                fake.devices.push(enrolled(PAIR, id, CURRENT));
            },
            &[1],
            "repeated 01D by key 0",
            &["key", "device", "audit"],
            &[("ok", "repeated answer, certificate 01D")],
        ),
        (
            "another key pair on an enrolled unit ID is a conflict that ends the tries",
            |fake| {
                let id = fake.key(1, KeyKind::OneTime, None, false);
                fake.devices.push(enrolled(OTHER_PAIR, id, CURRENT));
                fake.key(2, KeyKind::OneTime, None, false);
            },
            &[1, 2],
            "refused each [(0, UnitIdConflict)]",
            &["key", "device", "audit"],
            &[("unit_id_conflict", "")],
        ),
        (
            "a lapsed record gives way to its own key pair: replaced whole",
            |fake| {
                fake.key(1, KeyKind::OneTime, None, false);
                fake.devices.push(enrolled(PAIR, 99, LAPSED));
            },
            &[1],
            "issued NEW by key 0",
            &["key", "device", "consume 1", "sign", "put device", "audit"],
            &[("ok", "certificate NEW")],
        ),
        (
            "a lapsed record still holds its unit ID against another key pair",
            |fake| {
                fake.key(1, KeyKind::OneTime, None, false);
                fake.devices.push(enrolled(OTHER_PAIR, 99, LAPSED));
            },
            &[1],
            "refused unit_id_conflict",
            &["key", "device", "audit"],
            &[("unit_id_conflict", "")],
        ),
    ];
    for (case, setup, lookups, outcome, log, audit) in table {
        let mut fake = Fake::default();
        setup(&mut fake);
        let signature = issue(&fake, "NEW");
        let done = ready(enroll(&mut fake, &attempt(lookups), signature, NOW)).unwrap();
        assert_eq!(told(&done), *outcome, "{case}");
        assert_eq!(fake.log(), *log, "{case}");
        let lines: Vec<(String, String, String)> = audit
            .iter()
            .map(|(outcome, detail)| {
                (
                    "enroll".to_owned(),
                    (*outcome).to_owned(),
                    (*detail).to_owned(),
                )
            })
            .collect();
        assert_eq!(fake.audit_lines(), lines, "{case}");
        for entry in &fake.audit {
            assert_eq!(
                (entry.actor.as_str(), entry.source.as_str(), entry.at),
                ("00E0C5540B8B", "192.0.2.7", NOW),
                "{case}"
            );
        }
        if let EnrollOutcome::Issued {
            repeated: false, ..
        } = done
        {
            let device = &fake.devices[0];
            assert_eq!(
                (
                    device.public_key.as_slice(),
                    device.serial.as_str(),
                    device.enrolled_at
                ),
                (PAIR, "NEW", NOW),
                "{case}: the device recorded anew"
            );
            let consumed = fake.keys.iter().find(|key| key.row.usage_count == 1);
            assert_eq!(
                consumed.map(|key| key.status),
                Some(KeyStatus::Used),
                "{case}: the key consumed is Used"
            );
        }
    }
}

#[test]
fn renewals_write_nothing_when_refused_and_audit_the_rest() {
    let unit = unit();
    let request = |serial: &str, public_key: &[u8]| RenewalRequest {
        unit_id: unit.clone(),
        serial: serial.to_owned(),
        not_after: NOW + Duration::days(10),
        public_key: public_key.to_vec(),
        grace: Duration::days(30),
    };
    let mut fake = Fake::default();
    fake.devices
        .push(enrolled(PAIR, 1, NOW + Duration::days(10)));
    let actor = Actor::device(&unit, "192.0.2.7");
    // The signatures note themselves in the fake's log.
    let log = Fake {
        log: fake.log.clone(),
        ..Fake::default()
    };
    let renewed = ready(renew(
        &mut fake,
        request("01D", PAIR),
        &actor,
        issue(&log, "02E"),
        NOW,
    ));
    assert!(
        matches!(&renewed, Ok(RenewOutcome::Renewed(device)) if device.serial == "02E"
            && device.previous_serial.as_deref() == Some("01D")),
        "{renewed:?}"
    );
    // The answer was lost: the old certificate again gets the new one, nothing signed.
    let repeated = ready(renew(
        &mut fake,
        request("01D", PAIR),
        &actor,
        issue(&log, "03F"),
        NOW,
    ));
    assert!(
        matches!(&repeated, Ok(RenewOutcome::Repeated(device)) if device.serial == "02E"),
        "{repeated:?}"
    );
    let refused = ready(renew(
        &mut fake,
        request("777", PAIR),
        &actor,
        issue(&log, "040"),
        NOW,
    ));
    assert!(
        matches!(refused, Ok(RenewOutcome::Refused(_))),
        "{refused:?}"
    );
    assert_eq!(
        fake.log(),
        [
            "device",
            "sign",
            "replace certificate",
            "audit",
            "device",
            "audit",
            "device"
        ]
    );
    assert_eq!(
        fake.audit_lines(),
        [
            (
                "reenroll".to_owned(),
                "ok".to_owned(),
                "certificate 02E replaces 01D (presented 01D)".to_owned()
            ),
            (
                "reenroll".to_owned(),
                "ok".to_owned(),
                "repeated answer, certificate 02E (presented 01D)".to_owned()
            ),
        ]
    );
}

#[test]
fn a_device_is_seen_with_its_current_or_previous_certificate_only() {
    let unit = unit();
    let mut fake = Fake::default();
    let mut device = enrolled(PAIR, 1, NOW + Duration::days(10));
    device.previous_serial = Some("00A".to_owned());
    fake.devices.push(device);
    // serial presented => whether it counts
    let table = [("00A", true), ("777", false), ("01D", true), ("00A", false)];
    for (serial, held) in table {
        let touched = ready(touch(&mut fake, &unit, serial, None, None, NOW)).unwrap();
        assert_eq!(touched, held, "{serial}");
    }
    assert_eq!(
        fake.log(),
        [
            "device",
            "seen, forget previous false",
            "device",
            "device",
            "seen, forget previous true",
            "device"
        ]
    );
    assert!(fake.audit.is_empty());
    assert!(!ready(touch(&mut fake, &other_unit(), "01D", None, None, NOW)).unwrap());
}

#[test]
fn deleting_or_commanding_a_connected_device_reaches_its_server() {
    let actor = Actor::cli();
    let mut fake = Fake::default();
    let mut online = enrolled(PAIR, 1, NOW);
    online.online_server = Some("ums-2:8443".to_owned());
    fake.devices.push(online);
    let mut offline = enrolled(PAIR, 2, NOW);
    offline.unit_id = other_unit();
    fake.devices.push(offline);
    let server = ready(queue_command(&mut fake, &unit(), "inventory", &actor, NOW)).unwrap();
    assert_eq!(server.as_deref(), Some("ums-2:8443"));
    let server = ready(queue_command(
        &mut fake,
        &other_unit(),
        "inventory",
        &actor,
        NOW,
    ))
    .unwrap();
    assert_eq!(server, None);
    ready(delete_device(&mut fake, &unit(), &actor, NOW)).unwrap();
    ready(delete_device(&mut fake, &other_unit(), &actor, NOW)).unwrap();
    let gone = ready(delete_device(&mut fake, &unit(), &actor, NOW));
    assert!(
        matches!(&gone, Err(StoreError::NotFound(Missing::Device(u))) if *u == unit()),
        "{gone:?}"
    );
    let missing = ready(queue_command(&mut fake, &unit(), "inventory", &actor, NOW));
    assert!(matches!(missing, Err(StoreError::NotFound(_))));
    assert_eq!(
        fake.commands
            .iter()
            .map(|(server, unit, command)| format!("{command} {unit} on {server}"))
            .collect::<Vec<_>>(),
        [
            "inventory 00E0C5540B8B on ums-2:8443",
            "disconnect 00E0C5540B8B on ums-2:8443"
        ]
    );
    let lines: Vec<(&str, &str, Option<&str>)> = fake
        .audit
        .iter()
        .map(|e| (e.event.as_str(), e.outcome.as_str(), e.unit_id.as_deref()))
        .collect();
    assert_eq!(
        lines,
        [
            ("devices.command", "ok", Some("00E0C5540B8B")),
            ("devices.command", "offline", Some("00E0C5540B8C")),
            ("devices.delete", "ok", Some("00E0C5540B8B")),
            ("devices.delete", "ok", Some("00E0C5540B8C")),
        ]
    );
}

#[test]
fn key_changes_decide_statuses_and_are_all_or_nothing() {
    let actor = Actor::cli();
    let mut fake = Fake::default();
    let used = fake.key(1, KeyKind::OneTime, None, true);
    let mass = fake.key(2, KeyKind::MassDeployment, None, true);
    let fresh = fake.key(3, KeyKind::OneTime, None, false);
    let refused = ready(change_keys(
        &mut fake,
        &[used, 99, fresh],
        &KeyEdit::Active(false),
        &actor,
    ));
    assert!(
        matches!(&refused, Err(StoreError::NotFound(Missing::Keys(ids))) if *ids == [99]),
        "{refused:?}"
    );
    assert!(
        fake.keys.iter().all(|key| key.row.active),
        "nothing changed"
    );
    ready(change_keys(
        &mut fake,
        &[used, mass, fresh],
        &KeyEdit::Active(false),
        &actor,
    ))
    .unwrap();
    let statuses: Vec<KeyStatus> = fake.keys.iter().map(|key| key.status).collect();
    // A used one-time key stays Used; the others become Inactive.
    assert_eq!(
        statuses,
        [KeyStatus::Used, KeyStatus::Inactive, KeyStatus::Inactive]
    );
    ready(change_keys(
        &mut fake,
        &[mass],
        &KeyEdit::Comment("shelf 4".to_owned()),
        &actor,
    ))
    .unwrap();
    ready(change_keys(
        &mut fake,
        &[used, fresh],
        &KeyEdit::Delete,
        &actor,
    ))
    .unwrap();
    assert_eq!(
        fake.keys
            .iter()
            .map(|key| (key.row.id, key.comment.as_str()))
            .collect::<Vec<_>>(),
        [(mass, "shelf 4")]
    );
    let lines: Vec<(&str, Option<KeyId>, &str)> = fake
        .audit
        .iter()
        .map(|e| (e.event.as_str(), e.key_id, e.detail.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            ("keys.deactivate", None, "IDs 1, 2, 3"),
            ("keys.edit", Some(mass), ""),
            ("keys.delete", None, "IDs 1, 3"),
        ]
    );
}

/// A key whose look-up digest is `lookup`.
fn new_key(lookup: u8, generated: bool) -> NewKey {
    NewKey {
        kind: KeyKind::OneTime,
        lookup: [lookup; 32],
        sealed: vec![lookup],
        unit_id: None,
        comment: String::new(),
        generated,
        limits: claim::Limits::default(),
        folder: None,
    }
}

#[test]
fn clashing_values_are_drawn_again_per_key_or_refused() {
    let actor = Actor::cli();
    let sixteen = [1; claim::DRAWS as usize];
    // The values stored before, the values each new key draws in turn (once its own run out:
    // 200), whether they are generated => the values of the keys inserted, in the order made, or
    // the refusal.
    #[rustfmt::skip]
    type Case<'a> = (&'a [u8], &'a [&'a [u8]], bool, Result<&'a [u8], &'a str>);
    let table: &[Case] = &[
        (&[], &[&[1], &[2]], true, Ok(&[1, 2])),
        (&[1], &[&[1, 3], &[2]], true, Ok(&[3, 2])),
        // Two keys of one batch drawing one value: the second draws again.
        (&[], &[&[4], &[4, 5]], true, Ok(&[4, 5])),
        (
            &[1],
            &[&[2], &[1]],
            false,
            Err("two keys cannot share a password"),
        ),
        (
            &[1],
            &[&sixteen],
            true,
            Err("could not generate a unique key value after 16 attempts"),
        ),
        (&[1], &[&sixteen[1..]], true, Ok(&[200])),
    ];
    for (before, draws, generated, after) in table {
        let case = format!("{before:?} {draws:?} {generated}");
        let mut fake = Fake::default();
        for &lookup in *before {
            fake.key(lookup, KeyKind::OneTime, None, false);
        }
        let count = draws.len();
        let mut left: Vec<std::collections::VecDeque<u8>> = draws
            .iter()
            .map(|each| each.iter().copied().collect())
            .collect();
        let generated = *generated;
        let mut make: MakeKey =
            Box::new(move |index| new_key(left[index].pop_front().unwrap_or(200), generated));
        let progress: Progress = Box::new(|_| ());
        let inserted = ready(insert_keys(
            &mut fake, count, &mut make, &progress, &actor, NOW,
        ));
        match after {
            Ok(lookups) => {
                let made: Vec<u8> = inserted
                    .unwrap()
                    .iter()
                    .map(|id| {
                        fake.keys
                            .iter()
                            .find(|key| key.row.id == *id)
                            .unwrap()
                            .lookup[0]
                    })
                    .collect();
                assert_eq!(made, *lookups, "{case}");
                assert_eq!(fake.audit_lines()[0].0, "keys.create", "{case}");
            }
            Err(text) => {
                let error = inserted.unwrap_err();
                assert!(
                    matches!(&error, StoreError::Conflict(message) if message.contains(text)),
                    "{case}: {error:?}"
                );
                assert!(
                    fake.audit.is_empty(),
                    "{case}: nothing audited on a refusal"
                );
            }
        }
    }
}

#[test]
fn keys_are_inserted_in_chunks_and_progress_is_told_after_each() {
    let mut fake = Fake::default();
    let mut make: MakeKey = Box::new(|index| {
        let mut key = new_key(0, true);
        key.lookup[..8].copy_from_slice(&(index as u64 + 1).to_be_bytes());
        key
    });
    let told = Arc::new(Mutex::new(Vec::new()));
    let progress: Progress = {
        let told = told.clone();
        Box::new(move |done| told.lock().unwrap().push(done))
    };
    let count = INSERT_CHUNK * 2 + 5;
    let ids = ready(insert_keys(
        &mut fake,
        count,
        &mut make,
        &progress,
        &Actor::cli(),
        NOW,
    ))
    .unwrap();
    assert_eq!(ids, (1..=count as KeyId).collect::<Vec<_>>());
    assert_eq!(*told.lock().unwrap(), [1000, 2000, 2005]);
    assert_eq!(
        fake.log(),
        ["insert 1000", "insert 1000", "insert 5", "audit"]
    );
    assert_eq!(
        fake.audit_lines(),
        [(
            "keys.create".to_owned(),
            "ok".to_owned(),
            "2005 keys, IDs 1 to 2005".to_owned()
        )]
    );
}
