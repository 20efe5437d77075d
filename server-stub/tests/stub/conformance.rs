//! One conformance suite over both store backends: every case runs against a fresh SQLite file and
//! a fresh PostgreSQL database (a throwaway cluster, see `pg`), through the same `Store` trait.
//!
//! Covered: the UMS ID binding, key creation in order with redraws and typed clashes, all-or-none
//! batch changes, filters, paging and counts, enrollment exactly once under races, the repeat
//! after a lost answer, unit ID conflicts, checks of keys that read only, renewal and device contact, the audit log both ways
//! and its pruning, accounts, tokens and sessions.

use std::collections::HashSet;
use std::sync::Arc;

use onboard_protocol::admin::{KeyStatus, Right};
use onboard_protocol::{Fingerprint, KeyKind, ProblemCode, UnitId};
use time::OffsetDateTime;
use ums_stub::ca::{IssueOnce, IssuedCertificate};
use ums_stub::claim::{self, Limits};
use ums_stub::store::{
    AccountChange, AccountRow, Actor, AuditEntry, AuditFilter, DeviceFilter, EnrollAttempt,
    EnrollOutcome, KeyFilter, KeyPatch, MakeKey, NewKey, PageRequest, PostgresStore, RenewOutcome,
    RenewalRequest, SessionRow, SqliteStore, Store, StoreError, TokenRow,
};

use lossy_fs::LossyFs;

use crate::pg::PgCluster;

type Shared = Arc<dyn Store>;

fn lookup(n: u64) -> [u8; 32] {
    let mut digest = [0u8; 32];
    digest[..8].copy_from_slice(&n.to_be_bytes());
    digest[31] = 0xA5;
    digest
}

fn new_key(n: u64, kind: KeyKind, unit: Option<&str>, generated: bool) -> NewKey {
    NewKey {
        kind,
        lookup: lookup(n),
        sealed: vec![n as u8; 40],
        unit_id: unit.map(|text| text.parse().unwrap()),
        comment: format!("key {n}"),
        generated,
        limits: Limits::default(),
        folder: None,
    }
}

fn unit(n: usize) -> UnitId {
    format!("00E0C5{n:06X}").parse().unwrap()
}

fn issue(serial: String) -> IssueOnce {
    Box::new(move || {
        Ok(IssuedCertificate {
            der: serial.as_bytes().to_vec(),
            serial,
            not_after: OffsetDateTime::now_utc() + time::Duration::days(365),
        })
    })
}

fn attempt(unit_id: &UnitId, key: u64, public_key: &[u8]) -> EnrollAttempt {
    EnrollAttempt {
        unit_id: unit_id.clone(),
        lookup: lookup(key),
        alternates: Vec::new(),
        public_key: public_key.to_vec(),
        source: "192.0.2.1".to_owned(),
        lapsed_before: OffsetDateTime::now_utc() - time::Duration::days(365),
    }
}

async fn insert(store: &Shared, keys: Vec<NewKey>) -> Result<Vec<i64>, StoreError> {
    let count = keys.len();
    let make: MakeKey = Box::new(move |index| keys[index].clone());
    store
        .insert_keys(count, make, Box::new(|_| {}), &Actor::cli())
        .await
}

async fn binds_to_one_ums_id(store: Shared) {
    let ours = Fingerprint::from_bytes([1; 32]);
    assert_eq!(store.ums_id().await.unwrap(), None);
    store.bind_ums_id(&ours).await.unwrap();
    store.bind_ums_id(&ours).await.unwrap();
    assert_eq!(store.ums_id().await.unwrap(), Some(ours));
    let other = Fingerprint::from_bytes([2; 32]);
    assert!(matches!(
        store.bind_ums_id(&other).await,
        Err(StoreError::OtherUmsId { .. })
    ));
}

async fn creates_keys_in_order_redrawing_generated_clashes(store: Shared) {
    let ids = insert(
        &store,
        (1..=2500)
            .map(|n| new_key(n, KeyKind::OneTime, None, true))
            .collect(),
    )
    .await
    .unwrap();
    assert_eq!(ids.len(), 2500);
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "in order");
    // A generated value that clashes is drawn again; the make function is asked anew.
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = calls.clone();
    let make: MakeKey = Box::new(move |_| {
        let call = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // The first draw clashes with key 1; the second is new.
        new_key(
            if call == 0 { 1 } else { 90_000 },
            KeyKind::OneTime,
            None,
            true,
        )
    });
    let redrawn = store
        .insert_keys(1, make, Box::new(|_| {}), &Actor::cli())
        .await
        .unwrap();
    assert_eq!(redrawn.len(), 1);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    // A typed value that clashes is refused, and nothing of the batch is kept.
    let before = store.count_keys(&KeyFilter::default()).await.unwrap();
    let refused = insert(
        &store,
        vec![
            new_key(91_000, KeyKind::MassDeployment, None, false),
            new_key(2, KeyKind::MassDeployment, None, false),
        ],
    )
    .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    assert_eq!(
        store.count_keys(&KeyFilter::default()).await.unwrap(),
        before
    );
}

async fn batch_changes_are_all_or_none(store: Shared) {
    let ids = insert(
        &store,
        (1..=3)
            .map(|n| new_key(n, KeyKind::OneTime, None, true))
            .collect(),
    )
    .await
    .unwrap();
    let with_unknown = [ids[0], 999_999];
    assert!(matches!(
        store.set_active(&with_unknown, false, &Actor::cli()).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.delete_keys(&with_unknown, &Actor::cli()).await,
        Err(StoreError::NotFound(_))
    ));
    let active = KeyFilter {
        status: Some(KeyStatus::Active),
        ..KeyFilter::default()
    };
    assert_eq!(store.count_keys(&active).await.unwrap(), 3);
    store
        .set_active(&ids[..2], false, &Actor::cli())
        .await
        .unwrap();
    assert_eq!(store.count_keys(&active).await.unwrap(), 1);
    store.delete_keys(&ids[..1], &Actor::cli()).await.unwrap();
    assert_eq!(store.count_keys(&KeyFilter::default()).await.unwrap(), 2);
    store
        .set_comment(ids[2], "Lab Floor 2", &Actor::cli())
        .await
        .unwrap();
    let by_comment = KeyFilter {
        comment: Some("floor".to_owned()),
        ..KeyFilter::default()
    };
    let found = store.keys(&by_comment, &PageRequest::all()).await.unwrap();
    assert_eq!(found.iter().map(|key| key.id).collect::<Vec<_>>(), [ids[2]]);
}

async fn filters_page_and_count(store: Shared) {
    let mut keys: Vec<NewKey> = (1..=7)
        .map(|n| new_key(n, KeyKind::OneTime, None, true))
        .collect();
    keys.push(new_key(8, KeyKind::DeviceBound, Some("00E0C5540B8B"), true));
    keys.push(new_key(9, KeyKind::MassDeployment, None, true));
    insert(&store, keys).await.unwrap();
    let one_time = KeyFilter {
        kind: Some(KeyKind::OneTime),
        ..KeyFilter::default()
    };
    assert_eq!(store.count_keys(&one_time).await.unwrap(), 7);
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .keys(&one_time, &PageRequest { limit: 3, after })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|key| key.id);
        seen.extend(page.iter().map(|key| key.id));
    }
    assert_eq!(seen.len(), 7);
    assert!(seen.windows(2).all(|pair| pair[0] < pair[1]));
    let bound = KeyFilter {
        unit_id: Some("00:e0:c5:54:0b:8b".parse().unwrap()),
        ..KeyFilter::default()
    };
    let found = store.keys(&bound, &PageRequest::all()).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].kind, KeyKind::DeviceBound);
    assert_eq!(
        found[0].sealed,
        vec![8u8; 40],
        "the seal comes back as stored"
    );
    for (n, kind) in [
        (1, KeyKind::OneTime),
        (8, KeyKind::DeviceBound),
        (9, KeyKind::MassDeployment),
    ] {
        assert_eq!(store.key_kind(&lookup(n)).await.unwrap(), Some(kind));
    }
    assert_eq!(store.key_kind(&lookup(99)).await.unwrap(), None);
}

async fn enrolls_exactly_once_under_races(store: Shared) {
    insert(
        &store,
        (1..=50)
            .map(|n| new_key(n, KeyKind::OneTime, None, true))
            .collect(),
    )
    .await
    .unwrap();
    // 400 devices race for 50 keys: each tries the keys from its own offset.
    let mut tasks = Vec::new();
    for device in 0..400usize {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let unit_id = unit(device);
            let public_key = format!("pk-{device}").into_bytes();
            for step in 0..50u64 {
                let key = (device as u64 + step) % 50 + 1;
                let outcome = store
                    .enroll(
                        attempt(&unit_id, key, &public_key),
                        issue(format!("{device:04x}{key:04x}")),
                    )
                    .await
                    .unwrap();
                match outcome {
                    EnrollOutcome::Issued { repeated, .. } => {
                        assert!(!repeated);
                        return Some(key);
                    }
                    EnrollOutcome::Refused(ProblemCode::KeyUsed) => continue,
                    other => panic!("refused with {other:?}"),
                }
            }
            None
        }));
    }
    let mut used = Vec::new();
    for task in tasks {
        if let Some(key) = task.await.unwrap() {
            used.push(key);
        }
    }
    assert_eq!(used.len(), 50, "exactly one device per key");
    assert_eq!(used.iter().collect::<HashSet<_>>().len(), 50);
    assert_eq!(store.count_devices().await.unwrap(), 50);
    let keys = store
        .keys(&KeyFilter::default(), &PageRequest::all())
        .await
        .unwrap();
    assert!(
        keys.iter()
            .all(|key| key.usage_count == 1 && key.status == KeyStatus::Used)
    );
}

/// A key with these limits and folder.
fn limited_key(n: u64, kind: KeyKind, limits: Limits, folder: Option<&str>) -> NewKey {
    NewKey {
        limits,
        folder: folder.map(|path| path.parse().unwrap()),
        ..new_key(n, kind, None, true)
    }
}

async fn a_usage_limit_holds_under_races(store: Shared) {
    let limits = Limits {
        usage_limit: Some(10),
        ..Limits::default()
    };
    insert(
        &store,
        vec![limited_key(1, KeyKind::MassDeployment, limits, None)],
    )
    .await
    .unwrap();
    // 100 devices, each its own unit ID, race for a mass key that enrolls 10.
    let mut tasks = Vec::new();
    for device in 0..100usize {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let unit_id = unit(device);
            let public_key = format!("pk-{device}").into_bytes();
            store
                .enroll(
                    attempt(&unit_id, 1, &public_key),
                    issue(format!("{device:04x}")),
                )
                .await
                .unwrap()
        }));
    }
    let (mut issued, mut exhausted) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            EnrollOutcome::Issued { repeated, .. } => {
                assert!(!repeated);
                issued += 1;
            }
            EnrollOutcome::Refused(ProblemCode::KeyExhausted) => exhausted += 1,
            other => panic!("refused with {other:?}"),
        }
    }
    assert_eq!((issued, exhausted), (10, 90), "exactly the limit");
    assert_eq!(store.count_devices().await.unwrap(), 10);
    let key = store
        .keys(&KeyFilter::default(), &PageRequest::all())
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(key.usage_count, 10);
    let exhausted = KeyFilter {
        status: Some(KeyStatus::Exhausted),
        ..KeyFilter::default()
    };
    assert_eq!(store.count_keys(&exhausted).await.unwrap(), 1);
}

async fn filters_statuses_as_the_claim_rule_decides_them(store: Shared) {
    let at = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let hour = time::Duration::HOUR;
    let limits = |expires: Option<i64>, start: Option<i64>, usage_limit: Option<u64>| Limits {
        expires_at: expires.map(|hours| at + hour * hours as i32),
        not_before: start.map(|hours| at + hour * hours as i32),
        usage_limit,
    };
    // n, kind, limits: every bound alone, together, and at its instant.
    let table = [
        (1, KeyKind::OneTime, Limits::default()),
        (2, KeyKind::OneTime, limits(Some(-1), None, None)),
        (3, KeyKind::OneTime, limits(Some(0), None, None)),
        (4, KeyKind::OneTime, limits(Some(1), None, None)),
        (5, KeyKind::OneTime, limits(None, Some(1), None)),
        (6, KeyKind::OneTime, limits(None, Some(0), None)),
        (7, KeyKind::OneTime, limits(Some(-1), Some(1), None)),
        (8, KeyKind::MassDeployment, limits(None, None, Some(1))),
        (9, KeyKind::MassDeployment, limits(None, None, Some(2))),
        (10, KeyKind::MassDeployment, limits(None, Some(1), Some(1))),
        (11, KeyKind::MassDeployment, limits(Some(-1), None, Some(1))),
        (12, KeyKind::OneTime, limits(Some(-1), None, None)),
        (13, KeyKind::OneTime, limits(Some(2), None, None)),
    ];
    let ids = insert(
        &store,
        table
            .iter()
            .map(|&(n, kind, limits)| limited_key(n, kind, limits, None))
            .collect(),
    )
    .await
    .unwrap();
    // Key 8 reaches its limit, key 9 not; key 12 is deactivated, key 13 used.
    for (n, key) in [(0, 8), (1, 9), (2, 13)] {
        let outcome = store
            .enroll(attempt(&unit(n), key, b"pair"), issue(format!("{n:04x}")))
            .await
            .unwrap();
        assert!(
            matches!(outcome, EnrollOutcome::Issued { .. }),
            "{outcome:?}"
        );
    }
    store
        .set_active(&[ids[11]], false, &Actor::cli())
        .await
        .unwrap();
    let all = store
        .keys(&KeyFilter::default(), &PageRequest::all())
        .await
        .unwrap();
    let decided = |key: &ums_stub::store::StoredKey| {
        claim::status(key.kind, key.active, key.usage_count, key.limits, at)
    };
    let expected: Vec<(i64, KeyStatus)> = all.iter().map(|key| (key.id, decided(key))).collect();
    use KeyStatus::{Active, Exhausted, Expired, Inactive, NotYetValid, Used};
    assert_eq!(
        expected
            .iter()
            .map(|(_, status)| *status)
            .collect::<Vec<_>>(),
        [
            Active,
            Expired,
            Expired,
            Active,
            NotYetValid,
            Active,
            Expired,
            Exhausted,
            Active,
            NotYetValid,
            Expired,
            Inactive,
            Used
        ]
    );
    for status in KeyStatus::ALL {
        let filter = KeyFilter {
            status: Some(status),
            at: Some(at),
            ..KeyFilter::default()
        };
        let listed: Vec<i64> = store
            .keys(&filter, &PageRequest::all())
            .await
            .unwrap()
            .iter()
            .map(|key| key.id)
            .collect();
        let wanted: Vec<i64> = expected
            .iter()
            .filter(|(_, decided)| *decided == status)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(listed, wanted, "{status}");
        assert_eq!(
            store.count_keys(&filter).await.unwrap(),
            wanted.len() as u64,
            "{status}"
        );
    }
    let expiring = |before: Option<i64>, after: Option<i64>| KeyFilter {
        expires_before: before.map(|hours| at + hour * hours as i32),
        expires_after: after.map(|hours| at + hour * hours as i32),
        ..KeyFilter::default()
    };
    for (filter, wanted) in [
        (expiring(Some(1), None), vec![2, 3, 7, 11, 12]),
        (expiring(None, Some(0)), vec![4, 13]),
        (expiring(Some(2), Some(0)), vec![4]),
    ] {
        let listed: Vec<i64> = store
            .keys(&filter, &PageRequest::all())
            .await
            .unwrap()
            .iter()
            .map(|key| key.id)
            .collect();
        let wanted: Vec<i64> = wanted.iter().map(|n: &usize| ids[n - 1]).collect();
        assert_eq!(listed, wanted, "{filter:?}");
    }
}

async fn edits_terms_and_devices_keep_the_folder_they_landed_in(store: Shared) {
    let ids = insert(
        &store,
        vec![
            limited_key(
                1,
                KeyKind::MassDeployment,
                Limits::default(),
                Some("/Sites/Berlin"),
            ),
            limited_key(2, KeyKind::OneTime, Limits::default(), Some("/Sites%/x_y")),
            // A path holding another folder's path further in.
            limited_key(
                3,
                KeyKind::OneTime,
                Limits::default(),
                Some("/Archive/Sites/Berlin"),
            ),
        ],
    )
    .await
    .unwrap();
    let enrolled = |n: usize, key: u64| {
        let store = store.clone();
        async move {
            let outcome = store
                .enroll(attempt(&unit(n), key, b"pair"), issue(format!("{n:04x}")))
                .await
                .unwrap();
            assert!(
                matches!(outcome, EnrollOutcome::Issued { .. }),
                "{outcome:?}"
            );
        }
    };
    enrolled(1, 1).await;
    enrolled(2, 2).await;
    enrolled(4, 3).await;
    let until = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() + time::Duration::DAY;
    let patch = KeyPatch {
        expires_at: Some(Some(until)),
        usage_limit: Some(Some(5)),
        folder: Some(Some("/Sites/Hamburg".parse().unwrap())),
        ..KeyPatch::default()
    };
    store.edit_key(ids[0], patch, &Actor::cli()).await.unwrap();
    enrolled(3, 1).await;
    // Left out, a member stays; null clears it.
    let clear = KeyPatch {
        comment: Some("kept".to_owned()),
        usage_limit: Some(None),
        ..KeyPatch::default()
    };
    store.edit_key(ids[0], clear, &Actor::cli()).await.unwrap();
    let key = store
        .keys(
            &KeyFilter {
                ids: Some(vec![ids[0]]),
                ..KeyFilter::default()
            },
            &PageRequest::all(),
        )
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(key.limits.expires_at, Some(until));
    assert_eq!(key.limits.usage_limit, None);
    assert_eq!(
        key.folder.as_ref().map(|f| f.as_str()),
        Some("/Sites/Hamburg")
    );
    assert_eq!(key.comment, "kept");
    assert!(matches!(
        store
            .edit_key(999, KeyPatch::default(), &Actor::cli())
            .await,
        Err(StoreError::NotFound(_))
    ));
    store.delete_keys(&[ids[0]], &Actor::cli()).await.unwrap();
    let folders: Vec<Option<String>> = store
        .devices(&PageRequest::all())
        .await
        .unwrap()
        .into_iter()
        .map(|device| device.folder.map(|folder| folder.to_string()))
        .collect();
    assert_eq!(
        folders,
        [
            Some("/Sites/Berlin".to_owned()),
            Some("/Sites%/x_y".to_owned()),
            Some("/Sites/Hamburg".to_owned()),
            Some("/Archive/Sites/Berlin".to_owned())
        ]
    );
    let under = |folder: &str| DeviceFilter {
        folder: Some(folder.parse().unwrap()),
    };
    for (folder, wanted) in [
        ("/Sites", vec![1, 3]),
        ("/Sites/Berlin", vec![1]),
        ("/Sites%", vec![2]),
        ("/Sites_", vec![]),
        ("/Site", vec![]),
        ("/Archive", vec![4]),
    ] {
        let listed: Vec<UnitId> = store
            .devices_matching(&under(folder), &PageRequest::all())
            .await
            .unwrap()
            .into_iter()
            .map(|device| device.unit_id)
            .collect();
        let wanted: Vec<UnitId> = wanted.into_iter().map(unit).collect();
        assert_eq!(listed, wanted, "{folder}");
        assert_eq!(
            store.count_devices_matching(&under(folder)).await.unwrap(),
            wanted.len() as u64
        );
    }
}

async fn one_unit_racing_with_many_keys_uses_one(store: Shared) {
    insert(
        &store,
        (1..=8)
            .map(|n| new_key(n, KeyKind::OneTime, None, true))
            .collect(),
    )
    .await
    .unwrap();
    // One device, no record yet, presenting eight keys at once (the same key pair).
    let unit_id = unit(99);
    let mut tasks = Vec::new();
    for key in 1..=8u64 {
        let (store, unit_id) = (store.clone(), unit_id.clone());
        tasks.push(tokio::spawn(async move {
            store
                .enroll(
                    attempt(&unit_id, key, b"one-pair"),
                    issue(format!("cc{key:02}")),
                )
                .await
                .unwrap()
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let used = KeyFilter {
        status: Some(KeyStatus::Used),
        ..KeyFilter::default()
    };
    assert_eq!(
        store.count_keys(&used).await.unwrap(),
        1,
        "one key consumed"
    );
    assert_eq!(store.count_devices().await.unwrap(), 1);
}

async fn repeats_after_a_lost_answer_and_refuses_another_key_pair(store: Shared) {
    insert(
        &store,
        (1..=3)
            .map(|n| new_key(n, KeyKind::OneTime, None, true))
            .collect(),
    )
    .await
    .unwrap();
    let unit_id = unit(7);
    let first = store
        .enroll(attempt(&unit_id, 1, b"pair-a"), issue("aa01".to_owned()))
        .await
        .unwrap();
    let EnrollOutcome::Issued {
        device, repeated, ..
    } = first
    else {
        panic!("{first:?}")
    };
    assert!(!repeated);
    // The answer was lost; the same pair asks again with the same key: the same certificate.
    let again = store
        .enroll(attempt(&unit_id, 1, b"pair-a"), issue("aa02".to_owned()))
        .await
        .unwrap();
    let EnrollOutcome::Issued {
        device: again,
        repeated,
        ..
    } = again
    else {
        panic!("{again:?}")
    };
    assert!(repeated);
    assert_eq!(again.serial, device.serial);
    // Another key pair under the same unit ID, with a fresh key: refused, the key not consumed.
    let conflict = store
        .enroll(attempt(&unit_id, 2, b"pair-b"), issue("aa03".to_owned()))
        .await
        .unwrap();
    assert!(matches!(
        conflict,
        EnrollOutcome::Refused(ProblemCode::UnitIdConflict)
    ));
    let unused = KeyFilter {
        status: Some(KeyStatus::Active),
        ..KeyFilter::default()
    };
    assert_eq!(store.count_keys(&unused).await.unwrap(), 2);
    // An unknown key, and a deactivated one.
    let unknown = store
        .enroll(attempt(&unit(8), 77, b"pair-c"), issue("aa04".to_owned()))
        .await
        .unwrap();
    assert!(matches!(
        unknown,
        EnrollOutcome::Refused(ProblemCode::KeyUnknown)
    ));
    let ids: Vec<i64> = store
        .keys(&unused, &PageRequest::all())
        .await
        .unwrap()
        .iter()
        .map(|key| key.id)
        .collect();
    store
        .set_active(&ids[..1], false, &Actor::cli())
        .await
        .unwrap();
    let inactive = store
        .enroll(attempt(&unit(9), 2, b"pair-d"), issue("aa05".to_owned()))
        .await
        .unwrap();
    assert!(matches!(
        inactive,
        EnrollOutcome::Refused(ProblemCode::KeyInactive)
    ));
    // Every attempt is in the audit log.
    let lines = store
        .audit(&AuditFilter::default(), &PageRequest::all())
        .await
        .unwrap();
    let outcomes: Vec<&str> = lines
        .iter()
        .filter(|line| line.event == "enroll")
        .map(|line| line.outcome.as_str())
        .collect();
    assert_eq!(
        outcomes,
        [
            "ok",
            "ok",
            "unit_id_conflict",
            "key_unknown",
            "key_inactive"
        ]
    );
}

/// Every key row the store holds, as (id, usage count, status), by ID.
async fn key_rows(store: &Shared) -> Vec<(i64, u64, KeyStatus)> {
    store
        .keys(&KeyFilter::default(), &PageRequest::all())
        .await
        .unwrap()
        .iter()
        .map(|key| (key.id, key.usage_count, key.status))
        .collect()
}

async fn checks_keys_reading_only(store: Shared) {
    use ums_stub::claim::Decision;
    let ids = insert(
        &store,
        vec![
            new_key(1, KeyKind::OneTime, None, true),
            new_key(2, KeyKind::OneTime, None, true),
            new_key(3, KeyKind::DeviceBound, Some("00E0C5000007"), true),
            new_key(4, KeyKind::MassDeployment, None, false),
            new_key(5, KeyKind::OneTime, None, true),
        ],
    )
    .await
    .unwrap();
    // Key 2 used by another unit, key 5 deactivated.
    store
        .enroll(attempt(&unit(1), 2, b"pair-1"), issue("cc01".to_owned()))
        .await
        .unwrap();
    store
        .set_active(&ids[4..5], false, &Actor::cli())
        .await
        .unwrap();
    let rows_before = key_rows(&store).await;
    let audit_before = store.count_audit(&AuditFilter::default()).await.unwrap();
    let check = |unit_id: UnitId, keys: &[u64], public_key: &[u8]| ums_stub::store::KeyCheck {
        unit_id,
        lookups: keys.iter().map(|n| lookup(*n)).collect(),
        public_key: public_key.to_vec(),
        lapsed_before: OffsetDateTime::now_utc() - time::Duration::days(365),
    };
    let decisions = |checked: Vec<ums_stub::store::CheckedKey>| {
        checked
            .iter()
            .map(|key| (key.key_id, key.decision))
            .collect::<Vec<_>>()
    };
    // Unit 7 is not enrolled: each key as its enrollment would go.
    let checked = store
        .check_keys(&check(unit(7), &[1, 2, 3, 4, 5, 99], b""))
        .await
        .unwrap();
    assert_eq!(
        decisions(checked),
        [
            (Some(ids[0]), Decision::Consume),
            (Some(ids[1]), Decision::Refuse(ProblemCode::KeyUsed)),
            (Some(ids[2]), Decision::Consume),
            (Some(ids[3]), Decision::Consume),
            (Some(ids[4]), Decision::Refuse(ProblemCode::KeyInactive)),
            (None, Decision::Refuse(ProblemCode::KeyUnknown)),
        ]
    );
    // Unit 1 is enrolled with pair-1 (through key 2): a new pair conflicts, its own pair repeats.
    let checked = store
        .check_keys(&check(unit(1), &[1, 2, 99], b""))
        .await
        .unwrap();
    assert_eq!(
        decisions(checked),
        [
            (Some(ids[0]), Decision::Refuse(ProblemCode::UnitIdConflict)),
            (Some(ids[1]), Decision::Refuse(ProblemCode::UnitIdConflict)),
            (None, Decision::Refuse(ProblemCode::KeyUnknown)),
        ]
    );
    let checked = store
        .check_keys(&check(unit(1), &[2, 1, 3], b"pair-1"))
        .await
        .unwrap();
    assert_eq!(
        decisions(checked),
        [
            (Some(ids[1]), Decision::Repeat),
            (Some(ids[0]), Decision::Repeat),
            (
                Some(ids[2]),
                Decision::Refuse(ProblemCode::KeyBoundToOtherDevice)
            ),
        ]
    );
    // Nothing changed: no key used, no device recorded, no audit line (the caller writes it).
    assert_eq!(key_rows(&store).await, rows_before);
    assert_eq!(store.count_devices().await.unwrap(), 1);
    assert_eq!(
        store.count_audit(&AuditFilter::default()).await.unwrap(),
        audit_before
    );
    // Checks racing enrollments of one one-time key: still one device, and the checks either
    // see the key free or used by that device's unit.
    let racers = futures_join_all((0..16).map(|n| {
        let store = store.clone();
        async move {
            if n % 2 == 0 {
                let outcome = store
                    .enroll(
                        attempt(&unit(100 + n), 1, format!("pair-{n}").as_bytes()),
                        issue(format!("dd{n:02}")),
                    )
                    .await
                    .unwrap();
                matches!(outcome, EnrollOutcome::Issued { .. })
            } else {
                let checked = store
                    .check_keys(&ums_stub::store::KeyCheck {
                        unit_id: unit(100 + n),
                        lookups: vec![lookup(1)],
                        public_key: Vec::new(),
                        lapsed_before: OffsetDateTime::now_utc() - time::Duration::days(365),
                    })
                    .await
                    .unwrap();
                assert!(matches!(
                    checked[0].decision,
                    Decision::Consume | Decision::Refuse(ProblemCode::KeyUsed)
                ));
                false
            }
        }
    }))
    .await;
    assert_eq!(racers.iter().filter(|issued| **issued).count(), 1);
}

async fn renews_and_tracks_contact(store: Shared) {
    insert(
        &store,
        vec![new_key(1, KeyKind::MassDeployment, None, true)],
    )
    .await
    .unwrap();
    let unit_id = unit(3);
    let EnrollOutcome::Issued { device, .. } = store
        .enroll(attempt(&unit_id, 1, b"pair-a"), issue("bb01".to_owned()))
        .await
        .unwrap()
    else {
        panic!("not enrolled")
    };
    let request = |serial: &str, key: &[u8]| RenewalRequest {
        unit_id: unit_id.clone(),
        serial: serial.to_owned(),
        not_after: device.not_after,
        public_key: key.to_vec(),
        grace: time::Duration::days(30),
    };
    let renewed = store
        .renew(
            request("bb01", b"pair-b"),
            &Actor::cli(),
            issue("bb02".to_owned()),
        )
        .await
        .unwrap();
    let RenewOutcome::Renewed(record) = renewed else {
        panic!("{renewed:?}")
    };
    assert_eq!(record.serial, "bb02");
    assert_eq!(record.previous_serial.as_deref(), Some("bb01"));
    // The previous certificate is honoured until the new one is seen.
    assert!(
        store
            .touch_device(&unit_id, "bb01", None, None)
            .await
            .unwrap()
    );
    assert!(
        store
            .touch_device(&unit_id, "bb02", Some("{\"host_name\":\"pc\"}"), None)
            .await
            .unwrap()
    );
    assert!(
        !store
            .touch_device(&unit_id, "bb01", None, None)
            .await
            .unwrap()
    );
    let stored = store.device(&unit_id).await.unwrap().unwrap();
    assert_eq!(stored.previous_serial, None);
    assert_eq!(stored.inventory.as_deref(), Some("{\"host_name\":\"pc\"}"));
    let stale = store
        .renew(
            request("bb01", b"pair-c"),
            &Actor::cli(),
            issue("bb03".to_owned()),
        )
        .await
        .unwrap();
    assert!(matches!(stale, RenewOutcome::Refused(_)));
    store.delete_device(&unit_id, &Actor::cli()).await.unwrap();
    assert!(matches!(
        store.delete_device(&unit_id, &Actor::cli()).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn keeps_the_audit_log_both_ways_and_prunes_it(store: Shared) {
    let old = OffsetDateTime::now_utc() - time::Duration::days(400);
    for n in 0..6 {
        let mut entry = AuditEntry::new("test", &Actor::admin("jane", "192.0.2.9"));
        entry.outcome = if n % 2 == 0 { "ok" } else { "key_used" }.to_owned();
        if n < 2 {
            entry.at = old;
        }
        store.record(entry).await.unwrap();
    }
    let all = store
        .audit(&AuditFilter::default(), &PageRequest::all())
        .await
        .unwrap();
    let ids: Vec<i64> = all.iter().map(|line| line.id).collect();
    assert_eq!(ids.len(), 6);
    let newest = AuditFilter {
        newest_first: true,
        ..AuditFilter::default()
    };
    let page = store
        .audit(
            &newest,
            &PageRequest {
                limit: 2,
                after: Some(ids[4]),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|line| line.id).collect::<Vec<_>>(),
        [ids[3], ids[2]]
    );
    let failures = AuditFilter {
        outcome: Some("key_used".to_owned()),
        actor: Some("jane".to_owned()),
        ..AuditFilter::default()
    };
    assert_eq!(store.count_audit(&failures).await.unwrap(), 3);
    let pruned = store
        .prune_audit(OffsetDateTime::now_utc() - time::Duration::days(180))
        .await
        .unwrap();
    assert_eq!(pruned, 2);
    assert_eq!(store.count_audit(&AuditFilter::default()).await.unwrap(), 4);
}

async fn keeps_accounts_tokens_and_sessions(store: Shared) {
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let account = AccountRow {
        name: "jane".to_owned(),
        password_hash: "$argon2id$hash-one".to_owned(),
        rights: vec![Right::KeysRead, Right::AuditRead],
        created_at: now,
        changed_at: now,
        mac: Some([1; 32]),
    };
    store.create_account(&account, &Actor::cli()).await.unwrap();
    assert!(matches!(
        store.create_account(&account, &Actor::cli()).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.account("jane").await.unwrap(), Some(account.clone()));
    assert_eq!(store.count_accounts().await.unwrap(), 1);
    let token = TokenRow {
        id: "0123456789ab".to_owned(),
        digest: [7; 32],
        account: "jane".to_owned(),
        name: "rig".to_owned(),
        rights: vec![Right::KeysRead],
        created_at: now,
        expires_at: Some(now + time::Duration::days(1)),
        mac: Some([2; 32]),
    };
    store.create_token(&token, &Actor::cli()).await.unwrap();
    assert_eq!(
        store.token("0123456789ab").await.unwrap(),
        Some(token.clone())
    );
    let orphan = TokenRow {
        account: "nobody".to_owned(),
        id: "ffffffffffff".to_owned(),
        ..token.clone()
    };
    assert!(matches!(
        store.create_token(&orphan, &Actor::cli()).await,
        Err(StoreError::NotFound(_))
    ));
    let session = SessionRow {
        digest: [9; 32],
        account: "jane".to_owned(),
        created_at: now,
        expires_at: now + time::Duration::hours(8),
        mac: Some([3; 32]),
    };
    // Only while the account has the password the login checked.
    assert!(matches!(
        store
            .create_session(&session, "$argon2id$stale", &Actor::cli())
            .await,
        Err(StoreError::NotFound(_))
    ));
    store
        .create_session(&session, "$argon2id$hash-one", &Actor::cli())
        .await
        .unwrap();
    assert_eq!(
        store.session(&[9; 32]).await.unwrap(),
        Some(session.clone())
    );
    // A change ends the account's sessions, and carries the MAC of the row it makes.
    store
        .update_account(
            "jane",
            AccountChange {
                rights: Some(vec![Right::AuditRead]),
                password_hash: None,
                mac: [4; 32],
                previous: Some([1; 32]),
            },
            &Actor::cli(),
        )
        .await
        .unwrap();
    assert_eq!(store.session(&[9; 32]).await.unwrap(), None);
    let changed = store.account("jane").await.unwrap().unwrap();
    assert_eq!(changed.rights, vec![Right::AuditRead]);
    assert_eq!(changed.mac, Some([4; 32]));
    // A change made from a row that changed meanwhile is refused.
    assert!(matches!(
        store
            .update_account(
                "jane",
                AccountChange {
                    rights: Some(vec![Right::KeysRead]),
                    password_hash: None,
                    mac: [5; 32],
                    previous: Some([1; 32]),
                },
                &Actor::cli(),
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
    // A new password ends the account's tokens too.
    assert!(store.token("0123456789ab").await.unwrap().is_some());
    store
        .update_account(
            "jane",
            AccountChange {
                rights: None,
                password_hash: Some("$argon2id$hash-two".to_owned()),
                mac: [6; 32],
                previous: Some([4; 32]),
            },
            &Actor::cli(),
        )
        .await
        .unwrap();
    assert_eq!(store.token("0123456789ab").await.unwrap(), None);
    store.create_token(&token, &Actor::cli()).await.unwrap();
    // Deleting the account takes its tokens.
    store.delete_account("jane", &Actor::cli()).await.unwrap();
    assert_eq!(store.token("0123456789ab").await.unwrap(), None);
    assert!(matches!(
        store.revoke_token("0123456789ab", &Actor::cli()).await,
        Err(StoreError::NotFound(_))
    ));
}

fn admin_row(name: &str, mac: Option<[u8; 32]>) -> AccountRow {
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    AccountRow {
        name: name.to_owned(),
        password_hash: format!("$argon2id${name}"),
        rights: vec![Right::ServerAdmin, Right::KeysRead],
        created_at: now,
        changed_at: now,
        mac,
    }
}

/// The last-admin guard is atomic: two deletions racing for the last two accounts with
/// server:admin leave one, every one of 100 times.
async fn keeps_a_server_admin_under_racing_deletes(store: Shared) {
    store
        .create_account(&admin_row("admin-0", Some([1; 32])), &Actor::cli())
        .await
        .unwrap();
    let mut survivor = "admin-0".to_owned();
    for round in 1..=100 {
        let newcomer = format!("admin-{round}");
        store
            .create_account(&admin_row(&newcomer, Some([1; 32])), &Actor::cli())
            .await
            .unwrap();
        let deletions = [survivor.clone(), newcomer.clone()].map(|name| {
            let store = store.clone();
            tokio::spawn(async move {
                let deleted = store.delete_account(&name, &Actor::cli()).await;
                (name, deleted)
            })
        });
        let mut kept = Vec::new();
        for deletion in deletions {
            let (name, deleted) = deletion.await.unwrap();
            match deleted {
                Ok(()) => {}
                Err(StoreError::Conflict(detail)) => {
                    assert!(
                        detail.contains("last account with server:admin"),
                        "{detail}"
                    );
                    kept.push(name);
                }
                Err(error) => panic!("round {round}: {error}"),
            }
        }
        assert_eq!(kept.len(), 1, "round {round}: kept {kept:?}");
        survivor = kept.remove(0);
        assert!(store.account(&survivor).await.unwrap().is_some());
        assert_eq!(store.count_accounts().await.unwrap(), 1, "round {round}");
    }
    // Taking server:admin away from the last account holding it is refused too.
    assert!(matches!(
        store
            .update_account(
                &survivor,
                AccountChange {
                    rights: Some(vec![Right::KeysRead]),
                    password_hash: None,
                    mac: [2; 32],
                    previous: Some([1; 32]),
                },
                &Actor::cli(),
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
}

/// Rows without a MAC are listed, and sealed only when asked, with an audit line naming them.
async fn seals_rows_without_a_mac_when_told_and_audits(store: Shared) {
    let key = Arc::new(ums_stub::row_mac::RowKey::derive(
        b"the UMS ID's private key",
    ));
    // A new database: this open applied every migration, the row-MAC one included.
    assert!(store.migrated_row_macs_now());
    store
        .create_account(&admin_row("old", None), &Actor::cli())
        .await
        .unwrap();
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let token = TokenRow {
        id: "0123456789ab".to_owned(),
        digest: [7; 32],
        account: "old".to_owned(),
        name: "rig".to_owned(),
        rights: vec![Right::KeysRead],
        created_at: now,
        expires_at: None,
        mac: None,
    };
    store.create_token(&token, &Actor::cli()).await.unwrap();
    let unsealed = store.unsealed_admin_rows().await.unwrap();
    assert_eq!(
        (unsealed.accounts.len(), unsealed.tokens.len()),
        (1, 1),
        "{unsealed:?}"
    );
    // Listing seals nothing.
    assert_eq!(store.account("old").await.unwrap().unwrap().mac, None);
    let sealed = store
        .seal_admin_rows(key.clone(), "by command", &Actor::cli())
        .await
        .unwrap();
    assert_eq!(sealed, unsealed);
    assert!(key.account_ok(&store.account("old").await.unwrap().unwrap()));
    assert!(key.token_ok(&store.token("0123456789ab").await.unwrap().unwrap()));
    assert!(store.unsealed_admin_rows().await.unwrap().is_empty());
    let seals = |log: &[AuditEntry]| {
        log.iter()
            .filter(|entry| entry.event == "admin-rows.seal")
            .map(|entry| entry.detail.clone())
            .collect::<Vec<_>>()
    };
    let log = store
        .audit(&AuditFilter::default(), &PageRequest::all())
        .await
        .unwrap();
    assert_eq!(
        seals(&log),
        [
            "by command: accounts [old (server:admin,keys:read)], tokens [0123456789ab of old (keys:read)]"
        ]
    );
    // Nothing left: nothing sealed, no further line.
    let again = store
        .seal_admin_rows(key.clone(), "by command", &Actor::cli())
        .await
        .unwrap();
    assert!(again.is_empty());
    let log = store
        .audit(&AuditFilter::default(), &PageRequest::all())
        .await
        .unwrap();
    assert_eq!(seals(&log).len(), 1);
}

async fn tells_the_database_clock(store: Shared) {
    let clock = store.clock().await.unwrap();
    let now = OffsetDateTime::now_utc();
    assert!(
        (clock - now).abs() < time::Duration::seconds(5),
        "{clock} vs {now}"
    );
    assert_eq!(clock.nanosecond(), 0, "whole seconds");
}

fn session(server: &str, id: i64) -> ums_stub::store::SessionRef<'_> {
    ums_stub::store::SessionRef { server, id }
}

async fn tracks_connector_sessions_and_routes_commands(store: Shared) {
    insert(
        &store,
        vec![new_key(1, KeyKind::MassDeployment, None, true)],
    )
    .await
    .unwrap();
    let (one, two) = (unit(4), unit(5));
    for (n, unit_id) in [&one, &two].into_iter().enumerate() {
        let outcome = store
            .enroll(
                attempt(unit_id, 1, format!("pair-{n}").as_bytes()),
                issue(format!("cc0{n}")),
            )
            .await
            .unwrap();
        assert!(matches!(outcome, EnrollOutcome::Issued { .. }));
    }
    let online = |unit_id: UnitId| {
        let store = store.clone();
        async move { store.device(&unit_id).await.unwrap().unwrap().online_server }
    };
    // Offline: a command is audited as such and queued for nobody.
    assert_eq!(
        store
            .queue_command(&one, "renew-now", &Actor::cli())
            .await
            .unwrap(),
        None
    );
    // A session opens on A only with the device's certificate.
    assert!(
        !store
            .touch_device(&one, "ffff", None, Some(session("a:8443", 1)))
            .await
            .unwrap()
    );
    assert_eq!(online(one.clone()).await, None);
    assert!(
        store
            .touch_device(&one, "cc00", None, Some(session("a:8443", 1)))
            .await
            .unwrap()
    );
    assert!(
        store
            .touch_device(&two, "cc01", None, Some(session("b:8443", 1)))
            .await
            .unwrap()
    );
    assert_eq!(online(one.clone()).await.as_deref(), Some("a:8443"));
    // Commands go to the server holding the session, once.
    assert_eq!(
        store
            .queue_command(&one, "renew-now", &Actor::cli())
            .await
            .unwrap()
            .as_deref(),
        Some("a:8443")
    );
    store
        .queue_command(&one, "inventory-now", &Actor::cli())
        .await
        .unwrap();
    assert!(store.take_commands("b:8443").await.unwrap().is_empty());
    assert_eq!(
        store.take_commands("a:8443").await.unwrap(),
        [
            (one.clone(), "renew-now".to_owned()),
            (one.clone(), "inventory-now".to_owned())
        ]
    );
    assert!(store.take_commands("a:8443").await.unwrap().is_empty());
    assert!(matches!(
        store
            .queue_command(&unit(9), "renew-now", &Actor::cli())
            .await,
        Err(StoreError::NotFound(_))
    ));
    let audited: Vec<(String, String)> = store
        .audit(
            &AuditFilter {
                unit_id: Some(one.clone()),
                ..AuditFilter::default()
            },
            &PageRequest::all(),
        )
        .await
        .unwrap()
        .into_iter()
        .filter(|entry| entry.event == "devices.command")
        .map(|entry| (entry.outcome, entry.detail))
        .collect();
    assert_eq!(
        audited,
        [
            ("offline".to_owned(), "renew-now".to_owned()),
            ("ok".to_owned(), "renew-now".to_owned()),
            ("ok".to_owned(), "inventory-now".to_owned())
        ]
    );
    // A session that ended on another server, or an older one here, does not take the device
    // offline; its own does, and the time last seen is then.
    store
        .device_offline(&one, session("b:8443", 1))
        .await
        .unwrap();
    assert!(
        store
            .touch_device(&one, "cc00", None, Some(session("a:8443", 2)))
            .await
            .unwrap()
    );
    store
        .device_offline(&one, session("a:8443", 1))
        .await
        .unwrap();
    assert_eq!(online(one.clone()).await.as_deref(), Some("a:8443"));
    store
        .device_offline(&one, session("a:8443", 2))
        .await
        .unwrap();
    assert_eq!(online(one.clone()).await, None);
    // Deleting a connected device queues its disconnection for its server.
    store.delete_device(&two, &Actor::cli()).await.unwrap();
    assert_eq!(
        store.take_commands("b:8443").await.unwrap(),
        [(two.clone(), ums_stub::store::DISCONNECT.to_owned())]
    );
    // A server starting again releases what it held.
    assert!(
        store
            .touch_device(&one, "cc00", None, Some(session("a:8443", 1)))
            .await
            .unwrap()
    );
    store
        .queue_command(&one, "renew-now", &Actor::cli())
        .await
        .unwrap();
    assert_eq!(store.release_devices("a:8443", false).await.unwrap(), 1);
    assert_eq!(online(one.clone()).await, None);
    assert!(store.take_commands("a:8443").await.unwrap().is_empty());
}

async fn tries_alternates_in_order_and_consumes_at_most_one(store: Shared) {
    insert(
        &store,
        (1..=4)
            .map(|n| new_key(n, KeyKind::OneTime, None, true))
            .collect(),
    )
    .await
    .unwrap();
    assert_eq!(
        store
            .known_keys(&[lookup(1), lookup(99), lookup(3)])
            .await
            .unwrap(),
        [true, false, true]
    );
    // Key 1 goes to another device first.
    let other = store
        .enroll(attempt(&unit(7), 1, b"other"), issue("dd00".to_owned()))
        .await
        .unwrap();
    assert!(matches!(other, EnrollOutcome::Issued { key: 0, .. }));
    // Used, unknown (99), then two fresh ones: the third enrolls, the fourth stays unused.
    let mut several = attempt(&unit(8), 1, b"mine");
    several.alternates = vec![lookup(99), lookup(2), lookup(3)];
    let outcome = store
        .enroll(several, issue("dd01".to_owned()))
        .await
        .unwrap();
    let EnrollOutcome::Issued {
        key,
        refused,
        repeated,
        ..
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!((key, repeated), (2, false));
    assert_eq!(
        refused,
        [(0, ProblemCode::KeyUsed), (1, ProblemCode::KeyUnknown)]
    );
    let keys = store
        .keys(&KeyFilter::default(), &PageRequest::all())
        .await
        .unwrap();
    let uses: Vec<u64> = keys.iter().map(|key| key.usage_count).collect();
    assert_eq!(
        uses,
        [1, 1, 0, 0],
        "keys 1 and 2 used once each, 3 and 4 not"
    );
    // Each key tried was audited as if presented alone.
    let outcomes: Vec<String> = store
        .audit(
            &AuditFilter {
                unit_id: Some(unit(8)),
                ..AuditFilter::default()
            },
            &PageRequest::all(),
        )
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.outcome)
        .collect();
    assert_eq!(outcomes, ["key_used", "key_unknown", "ok"]);
    // A retry after a lost answer repeats the certificate from whichever key is first.
    let mut again = attempt(&unit(8), 1, b"mine");
    again.alternates = vec![lookup(2)];
    let outcome = store.enroll(again, issue("dd02".to_owned())).await.unwrap();
    assert!(
        matches!(outcome, EnrollOutcome::Issued { repeated: true, .. }),
        "{outcome:?}"
    );
    // Every key refused: each listed, in order.
    let mut spent = attempt(&unit(9), 1, b"third");
    spent.alternates = vec![lookup(2), lookup(98)];
    assert_eq!(
        format!(
            "{:?}",
            store.enroll(spent, issue("dd03".to_owned())).await.unwrap()
        ),
        format!(
            "{:?}",
            EnrollOutcome::RefusedEach(vec![
                (0, ProblemCode::KeyUsed),
                (1, ProblemCode::KeyUsed),
                (2, ProblemCode::KeyUnknown)
            ])
        )
    );
    // A refusal final for the device ends the tries: key 4 is not consumed.
    let mut conflict = attempt(&unit(8), 4, b"another pair");
    conflict.alternates = vec![lookup(4)];
    let outcome = store
        .enroll(conflict, issue("dd04".to_owned()))
        .await
        .unwrap();
    assert!(
        matches!(&outcome, EnrollOutcome::RefusedEach(each) if each == &[(0, ProblemCode::UnitIdConflict)]),
        "{outcome:?}"
    );
    let keys = store
        .keys(&KeyFilter::default(), &PageRequest::all())
        .await
        .unwrap();
    assert_eq!(keys[3].usage_count, 0);
}

async fn enrolls_exactly_once_with_alternates_under_races(store: Shared) {
    insert(
        &store,
        (1..=40)
            .map(|n| new_key(n, KeyKind::OneTime, None, true))
            .collect(),
    )
    .await
    .unwrap();
    // 120 devices race for 40 keys, each presenting 8 at once from its own offset, as many
    // requests as it takes.
    let mut tasks = Vec::new();
    for device in 0..120usize {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let unit_id = unit(device);
            let public_key = format!("pk-{device}").into_bytes();
            // Each device walks the keys by a stride of its own (coprime with 40), half of them
            // backwards, and every fifth presents one key at a time: attempts hold overlapping
            // keys in different orders, as agents sharing a stick do.
            let stride = [1u64, 3, 7, 9, 11, 13, 17, 19][device % 8];
            let per_request = if device % 5 == 0 { 1 } else { 8 };
            for round in 0..40u64 {
                let mut keys: Vec<u64> = (0..per_request)
                    .map(|step| {
                        (device as u64 * 3 + (round * per_request + step) * stride) % 40 + 1
                    })
                    .collect();
                if device % 2 == 1 {
                    keys.reverse();
                }
                let mut several = attempt(&unit_id, keys[0], &public_key);
                several.alternates = keys[1..].iter().map(|key| lookup(*key)).collect();
                let outcome = store
                    .enroll(several, issue(format!("{device:04x}{round:04x}")))
                    .await
                    .unwrap();
                match outcome {
                    EnrollOutcome::Issued { key, repeated, .. } => {
                        assert!(!repeated);
                        return Some(keys[key]);
                    }
                    EnrollOutcome::RefusedEach(each) => {
                        assert!(each.iter().all(|(_, code)| *code == ProblemCode::KeyUsed));
                    }
                    EnrollOutcome::Refused(ProblemCode::KeyUsed) => {}
                    other => panic!("{other:?}"),
                }
            }
            None
        }));
    }
    let mut used = Vec::new();
    for task in tasks {
        if let Some(key) = task.await.unwrap() {
            used.push(key);
        }
    }
    assert_eq!(used.len(), 40, "exactly one device per key");
    assert_eq!(used.iter().collect::<HashSet<_>>().len(), 40);
    assert_eq!(store.count_devices().await.unwrap(), 40);
    let keys = store
        .keys(&KeyFilter::default(), &PageRequest::all())
        .await
        .unwrap();
    assert!(keys.iter().all(|key| key.usage_count == 1));
}

/// Every case, each on a fresh store from `fresh`.
async fn run_all<F, Fut>(backend: &str, fresh: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Shared>,
{
    macro_rules! case {
        ($name:ident) => {
            eprintln!("{backend}: {}", stringify!($name));
            $name(fresh().await).await;
        };
    }
    case!(binds_to_one_ums_id);
    case!(creates_keys_in_order_redrawing_generated_clashes);
    case!(batch_changes_are_all_or_none);
    case!(filters_page_and_count);
    case!(enrolls_exactly_once_under_races);
    case!(a_usage_limit_holds_under_races);
    case!(filters_statuses_as_the_claim_rule_decides_them);
    case!(edits_terms_and_devices_keep_the_folder_they_landed_in);
    case!(one_unit_racing_with_many_keys_uses_one);
    case!(repeats_after_a_lost_answer_and_refuses_another_key_pair);
    case!(renews_and_tracks_contact);
    case!(keeps_the_audit_log_both_ways_and_prunes_it);
    case!(keeps_accounts_tokens_and_sessions);
    case!(keeps_a_server_admin_under_racing_deletes);
    case!(seals_rows_without_a_mac_when_told_and_audits);
    case!(tells_the_database_clock);
    case!(tracks_connector_sessions_and_routes_commands);
    case!(tries_alternates_in_order_and_consumes_at_most_one);
    case!(enrolls_exactly_once_with_alternates_under_races);
    case!(checks_keys_reading_only);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    run_all("sqlite", || {
        let path = dir.path().join(format!(
            "store{}.db",
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        async move {
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
                .await
                .unwrap()
                .unwrap();
            Arc::new(store) as Shared
        }
    })
    .await;
}

/// A SQLite store at `path` holding one-time keys 1 to `keys`, and the same store as a `Store`.
async fn sqlite_with_one_time_keys(
    path: &std::path::Path,
    keys: u64,
) -> (Arc<SqliteStore>, Shared) {
    let opened = path.to_owned();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&opened))
        .await
        .unwrap()
        .unwrap();
    let store = Arc::new(store);
    let shared = store.clone() as Shared;
    insert(
        &shared,
        (1..=keys)
            .map(|n| new_key(n, KeyKind::OneTime, None, true))
            .collect(),
    )
    .await
    .unwrap();
    (store, shared)
}

/// The SQLite store at `store.db` on a lossy filesystem mounted on `dir`, with `keys` one-time
/// keys, its set-up on the disk. Fails, saying why, where FUSE cannot run.
async fn sqlite_on_lossy_fs(
    dir: &std::path::Path,
    keys: u64,
) -> (LossyFs, Arc<SqliteStore>, Shared) {
    let fs = LossyFs::mount(dir).expect("the power-cut tests need FUSE");
    let (store, shared) = sqlite_with_one_time_keys(&fs.path().join("store.db"), keys).await;
    // The database file's directory entry: SQLite leaves it to whoever made the file (a server's
    // data directory is made long before any cut).
    fs.sync_all();
    (fs, store, shared)
}

/// What a power cut now would leave of `fs`'s `store.db`, opened (its integrity checked) from a
/// copy; the copy's folder is returned with it.
async fn after_a_cut(fs: &LossyFs) -> (tempfile::TempDir, Shared) {
    let copy = tempfile::tempdir().unwrap();
    fs.durable_copy(copy.path()).unwrap();
    let path = copy.path().join("store.db");
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
        .await
        .unwrap()
        .unwrap();
    store.integrity_check().unwrap();
    (copy, Arc::new(store))
}

/// The serial of the certificate `unit_id` holds in `store`, if any, and whether key `key` of
/// [`sqlite_with_one_time_keys`] shows used.
async fn device_and_key(store: &Shared, unit_id: &UnitId, key: u64) -> (Option<String>, bool) {
    let device = store.device(unit_id).await.unwrap();
    let used = store
        .keys(&KeyFilter::default(), &PageRequest::all())
        .await
        .unwrap()
        .iter()
        .any(|stored| stored.comment == format!("key {key}") && stored.usage_count == 1);
    (device.map(|device| device.serial), used)
}

/// SQLite's writer flushes its WAL file only for a write that must be on the disk before it is
/// answered (`Durability`), and such a write is on the disk when it is answered: a refusal, a
/// repeated answer or a refusal's audit line costs no fsync of its own; a consumed key and an
/// export's audit line each get theirs, and survive a power cut right after the answer. Both are
/// seen from the filesystem, not counted by the writer: the syncs the lossy filesystem served,
/// and what a cut would leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_writer_syncs_only_what_must_be_on_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (fs, store, shared) = sqlite_on_lossy_fs(dir.path(), 2).await;
    let path = fs.path().join("store.db");
    let wal = std::path::Path::new("store.db-wal");
    let wal_syncs = || fs.syncs(wal).expect("the WAL file exists");
    let refuse = |n: usize| {
        let shared = shared.clone();
        async move {
            let outcome = shared
                .enroll(
                    attempt(&unit(n), 1000 + n as u64, b"pair"),
                    issue(format!("r{n}")),
                )
                .await
                .unwrap();
            assert!(
                matches!(outcome, EnrollOutcome::Refused(ProblemCode::KeyUnknown)),
                "{outcome:?}"
            );
            let mut line = AuditEntry::new("enroll", &Actor::cli());
            line.outcome = ProblemCode::RateLimited.as_str().to_owned();
            shared.record(line).await.unwrap();
        }
    };
    // The writer's first batch is synced whatever it holds (a process killed before may have left
    // commits unsynced).
    let before = wal_syncs();
    refuse(0).await;
    assert_eq!(
        wal_syncs(),
        before + 1,
        "the writer's first batch was not synced"
    );

    // Refusals: unknown keys, and audit lines of refusals decided before the store was asked.
    for n in 1..20 {
        refuse(n).await;
    }
    assert_eq!(wal_syncs(), before + 1, "refusals were synced");

    // A key consumed: synced before the answer, so a power cut right after it keeps it.
    let unit_id = unit(100);
    let first = shared
        .enroll(attempt(&unit_id, 1, b"pair-a"), issue("aa01".to_owned()))
        .await
        .unwrap();
    assert!(
        matches!(
            first,
            EnrollOutcome::Issued {
                repeated: false,
                ..
            }
        ),
        "{first:?}"
    );
    assert_eq!(wal_syncs(), before + 2, "a consumed key was not synced");
    let (_copy, cut) = after_a_cut(&fs).await;
    assert_eq!(
        device_and_key(&cut, &unit_id, 1).await,
        (Some("aa01".to_owned()), true),
        "an answered certificate would not survive a power cut"
    );

    // Its retry, answered from the stored device, and a refusal of the used key: no sync.
    let again = shared
        .enroll(attempt(&unit_id, 1, b"pair-a"), issue("aa02".to_owned()))
        .await
        .unwrap();
    assert!(
        matches!(again, EnrollOutcome::Issued { repeated: true, .. }),
        "{again:?}"
    );
    let used = shared
        .enroll(attempt(&unit(101), 1, b"pair-b"), issue("aa03".to_owned()))
        .await
        .unwrap();
    assert!(
        matches!(used, EnrollOutcome::Refused(ProblemCode::KeyUsed)),
        "{used:?}"
    );
    assert_eq!(wal_syncs(), before + 2, "a repeat or a refusal was synced");

    // Something done, audited before it is shown: synced, and kept by a cut.
    shared
        .record(AuditEntry::new("keys.export", &Actor::cli()))
        .await
        .unwrap();
    assert_eq!(
        wal_syncs(),
        before + 3,
        "an export's audit line was not synced"
    );
    let (_copy, cut) = after_a_cut(&fs).await;
    let exports = cut
        .audit(&Default::default(), &PageRequest::all())
        .await
        .unwrap()
        .iter()
        .filter(|line| line.event == "keys.export")
        .count();
    assert_eq!(
        exports, 1,
        "an audited export would not survive a power cut"
    );

    // Nothing written without a sync of its own was lost by closing: the refusals are all in the
    // audit log, the key stays used.
    drop(shared);
    drop(store);
    let reopened = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
        .await
        .unwrap()
        .unwrap();
    let refusals = reopened
        .audit(&Default::default(), &PageRequest::all())
        .await
        .unwrap()
        .iter()
        .filter(|line| line.outcome != "ok")
        .count();
    assert_eq!(refusals, 41);
}

/// The gap across a restart: a process commits a consumed key and dies before its sync (here the
/// disk fails the sync, and the process closes without one reaching it), so the device row is
/// in the operating system's cache only. The next process answers the device's retry from that
/// row, `repeated`; the answer must not go out before the row is on the disk, or a power cut
/// leaves the device holding a certificate the database does not know and its key unused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_answered_after_a_crash_is_on_the_disk_before_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (fs, store, shared) = sqlite_on_lossy_fs(dir.path(), 2).await;
    let path = fs.path().join("store.db");
    let unit_id = unit(7);

    // The first process: committed, never synced, never answered.
    fs.fail_syncs(true);
    shared
        .enroll(attempt(&unit_id, 1, b"pair"), issue("cc01".to_owned()))
        .await
        .expect_err("a certificate that was not flushed must not be answered");
    drop(shared);
    drop(store);
    // Its connections close while the disk still fails (closing checkpoints, which syncs first).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while fs.open_handles() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the store never closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    fs.fail_syncs(false);
    let (_copy, cut) = after_a_cut(&fs).await;
    assert_eq!(
        device_and_key(&cut, &unit_id, 1).await,
        (None, false),
        "the first process's commit is not on the disk"
    );

    // The next process: the device's retry, answered from the row the first one committed.
    let opened = path.clone();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&opened))
        .await
        .unwrap()
        .unwrap();
    let shared: Shared = Arc::new(store);
    let again = shared
        .enroll(attempt(&unit_id, 1, b"pair"), issue("cc02".to_owned()))
        .await
        .unwrap();
    match &again {
        EnrollOutcome::Issued {
            device,
            repeated: true,
            ..
        } => assert_eq!(device.serial, "cc01"),
        other => panic!("expected the stored certificate again: {other:?}"),
    }
    // A power cut now: the device holds cc01.
    let (_copy, cut) = after_a_cut(&fs).await;
    assert_eq!(
        device_and_key(&cut, &unit_id, 1).await,
        (Some("cc01".to_owned()), true),
        "a certificate answered after a restart would not survive a power cut"
    );
}

/// A WAL file that cannot be flushed: the enrollment whose certificate was committed but not
/// flushed is answered with an error naming the WAL file (never with the certificate), and from
/// then on every batch is synced, the device's retry included, until a sync succeeds. The fault is
/// the WAL file moved away under the running store (SQLite keeps writing to the file it holds
/// open; the writer's flush opens it by name), then moved back. This relies on no connection
/// opening while the file is away: SQLite would make a new, empty WAL file by that name (the
/// writer keeps its connection after a failed batch, and the enrollments here run one by one).
#[tokio::test]
async fn a_failed_wal_sync_is_an_error_and_every_batch_syncs_until_one_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    // The writer names the WAL file from the path SQLite opened, links resolved.
    let folder = std::fs::canonicalize(dir.path()).unwrap();
    let path = folder.join("store.db");
    let (store, shared) = sqlite_with_one_time_keys(&path, 3).await;
    // A first enrollment opens the writer's connection and its WAL file, and is synced.
    let first = shared
        .enroll(attempt(&unit(1), 1, b"pair-1"), issue("bb01".to_owned()))
        .await
        .unwrap();
    assert!(matches!(first, EnrollOutcome::Issued { .. }), "{first:?}");
    let synced = store.wal_syncs();

    let wal = folder.join("store.db-wal");
    let away = folder.join("store.db-wal.away");
    std::fs::rename(&wal, &away).unwrap();
    let unit_id = unit(2);
    let failed = shared
        .enroll(attempt(&unit_id, 2, b"pair-2"), issue("bb02".to_owned()))
        .await
        .expect_err("a certificate that was not flushed must not be answered");
    // The error and its causes, as a log line shows them.
    let mut message = failed.to_string();
    let mut cause = std::error::Error::source(&failed);
    while let Some(error) = cause {
        message.push_str(&format!(": {error}"));
        cause = error.source();
    }
    assert!(
        message.contains(&wal.display().to_string()) && message.contains("flushed"),
        "the error names the WAL file that could not be flushed: {message}"
    );
    assert_eq!(store.wal_syncs(), synced, "no sync succeeded");
    std::fs::rename(&away, &wal).unwrap();

    // The device retries: answered from the device stored by the failed batch (a repeat, which
    // alone would not be synced), and synced before the answer.
    let retried = shared
        .enroll(attempt(&unit_id, 2, b"pair-2"), issue("bb03".to_owned()))
        .await
        .unwrap();
    match &retried {
        EnrollOutcome::Issued {
            device,
            repeated: true,
            ..
        } => assert_eq!(device.serial, "bb02", "the certificate committed before"),
        other => panic!("expected the stored certificate again: {other:?}"),
    }
    assert_eq!(
        store.wal_syncs(),
        synced + 1,
        "the batch after a failed sync was not synced"
    );

    // Once a sync has succeeded, a refusal is no longer synced.
    let refused = shared
        .enroll(attempt(&unit(3), 2, b"pair-3"), issue("bb04".to_owned()))
        .await
        .unwrap();
    assert!(
        matches!(refused, EnrollOutcome::Refused(ProblemCode::KeyUsed)),
        "{refused:?}"
    );
    assert_eq!(store.wal_syncs(), synced + 1, "a refusal was synced");

    // Nothing was lost: reopened, key 2 is used by the device that retried.
    drop(shared);
    drop(store);
    let reopened = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
        .await
        .unwrap()
        .unwrap();
    let again = reopened
        .enroll(attempt(&unit_id, 2, b"pair-2"), issue("bb05".to_owned()))
        .await
        .unwrap();
    match &again {
        EnrollOutcome::Issued {
            device,
            repeated: true,
            ..
        } => assert_eq!(device.serial, "bb02"),
        other => panic!("expected the stored certificate after reopening: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_postgres_store_conforms() {
    let cluster = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    let cluster = Arc::new(cluster);
    run_all("postgres", || {
        let cluster = cluster.clone();
        async move {
            let url = cluster.database();
            Arc::new(PostgresStore::open(&url).await.unwrap()) as Shared
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_migrates_once_and_refuses_a_newer_schema() {
    let cluster = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    let url = cluster.database();
    // Several servers opening one new database at once: the migrations run once.
    let opened = futures_join_all((0..4).map(|_| {
        let url = url.clone();
        async move { PostgresStore::open(&url).await }
    }))
    .await;
    for store in &opened {
        assert_eq!(store.as_ref().unwrap().schema_version().await.unwrap(), 5);
    }
    // Exactly one open applied the row-MAC migration, so only it may seal rows on its own.
    assert_eq!(
        opened
            .iter()
            .filter(|store| store.as_ref().unwrap().migrated_row_macs_now())
            .count(),
        1
    );
    assert!(
        !PostgresStore::open(&url)
            .await
            .unwrap()
            .migrated_row_macs_now()
    );
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)")
        .await
        .unwrap();
    let refused = PostgresStore::open(&url).await;
    assert!(
        matches!(refused, Err(StoreError::SchemaTooNew { found: 99, .. })),
        "{refused:?}"
    );
    assert!(cluster.data().exists());
}

/// Awaits every future (a few, so one at a time after starting them all).
async fn futures_join_all<T: Send + 'static>(
    futures: impl Iterator<Item = impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

/// A CA and a server certificate it issued for 127.0.0.1: (CA PEM, server certificate PEM,
/// server key PEM).
fn database_certificates() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let server_params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let server = server_params.signed_by(&server_key, &issuer).unwrap();
    (ca.pem(), server.pem(), server_key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_speaks_tls_to_a_database_it_trusts_only() {
    let (ca, certificate, key) = database_certificates();
    let (other_ca, _, _) = database_certificates();
    let cluster = tokio::task::spawn_blocking(move || PgCluster::start_tls(&certificate, &key))
        .await
        .unwrap();
    let url = format!("{}?sslmode=require", cluster.database());
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = (dir.path().join("ca.pem"), dir.path().join("other.pem"));
    std::fs::write(&ours, ca).unwrap();
    std::fs::write(&theirs, other_ca).unwrap();
    let store = PostgresStore::open_with(&url, Some(&ours)).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), 5);
    assert!(
        PostgresStore::open_with(&url, Some(&theirs)).await.is_err(),
        "a database whose certificate another CA issued is refused"
    );
    assert!(
        PostgresStore::open(&url).await.is_err(),
        "sslmode=require without TLS is refused"
    );
    // With a CA file, a server answering without TLS is refused even when the URL does not
    // insist: no downgrade.
    let plain = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    let plain_url = plain.database();
    assert!(
        PostgresStore::open_with(&plain_url, Some(&ours))
            .await
            .is_err(),
        "a database without TLS is refused when a CA is configured"
    );
}
