//! The SQLite backend on its own: migrations, permissions, batches, statuses and pages.

use super::*;
use crate::store::error::Missing;
use crate::store::rows::NewKey;

fn key(lookup: u8, kind: KeyKind, generated: bool) -> NewKey {
    NewKey {
        kind,
        lookup: [lookup; 32],
        sealed: vec![lookup],
        unit_id: (kind == KeyKind::DeviceBound).then(|| "00E0C5540B8B".parse().unwrap()),
        comment: String::new(),
        generated,
        limits: claim::Limits::default(),
        folder: None,
    }
}

fn all(store: &SqliteStore) -> Vec<StoredKey> {
    block(store.keys(&KeyFilter::default(), &PageRequest::all()))
}

/// Runs a store future to completion on a runtime of its own.
fn try_block<T>(
    future: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

/// The same, for a call that must succeed.
fn block<T>(future: impl std::future::Future<Output = Result<T, StoreError>>) -> T {
    try_block(future).unwrap()
}

fn insert(store: &SqliteStore, count: usize, make: MakeKey) -> Result<Vec<KeyId>, StoreError> {
    try_block(store.insert_keys(count, make, Box::new(|_| {}), &Actor::cli()))
}

#[test]
fn migrates_once_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), 9);
    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), 9);
    store.integrity_check().unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn refuses_a_database_from_a_newer_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    drop(SqliteStore::open(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .execute("INSERT INTO schema_migrations VALUES (99, 0)", [])
        .unwrap();
    let error = SqliteStore::open(&path).unwrap_err().to_string();
    assert!(
        error.contains("schema version 99")
            && error.contains("db.sqlite")
            && error.contains("upgrade ums-stub"),
        "{error}"
    );
}

#[test]
fn an_older_database_gets_the_statuses_the_claim_rule_decides() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    {
        // A database at schema version 2, as an earlier ums-stub left it.
        let connection = Connection::open(&path).unwrap();
        connection
            .execute_batch(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL);
                 INSERT INTO schema_migrations VALUES (1, 0), (2, 0);",
            )
            .unwrap();
        connection.execute_batch(MIGRATIONS[0].1).unwrap();
        connection.execute_batch(MIGRATIONS[1].1).unwrap();
        connection
            .execute_batch(
                "INSERT INTO keys (id, kind, lookup, sealed, active, usage_count, created_at) VALUES
                   (1, 'one-time', zeroblob(32), x'00', 1, 1, 0),
                   (2, 'mass', randomblob(32), x'00', 1, 3, 0),
                   (3, 'one-time', randomblob(32), x'00', 0, 0, 0);
                 INSERT INTO audit (at, event, unit_id, source, outcome) VALUES
                   (0, 'keys.create', NULL, 'cli', 'ok'),
                   (0, 'enroll', '00E0C5540B8B', '127.0.0.1', 'ok');",
            )
            .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let statuses: Vec<_> = all(&store).iter().map(|k| k.status).collect();
    assert_eq!(
        statuses,
        [KeyStatus::Used, KeyStatus::Active, KeyStatus::Inactive]
    );
    let log = block(store.audit(&AuditFilter::default(), &PageRequest::all()));
    assert_eq!(
        log.iter()
            .map(|e| (e.actor.as_str(), e.source.as_str()))
            .collect::<Vec<_>>(),
        [("cli", "local"), ("00E0C5540B8B", "127.0.0.1")]
    );
}

#[test]
fn accounts_that_could_export_still_can_and_the_migrating_open_may_seal_old_rows() {
    use onboard_protocol::admin::Right;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    {
        // A database at schema version 7, as the release before keys:export left it.
        let connection = Connection::open(&path).unwrap();
        connection
            .execute_batch(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL);
                 INSERT INTO schema_migrations VALUES (1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (6, 0), (7, 0);",
            )
            .unwrap();
        for (_, migration) in &MIGRATIONS[..7] {
            connection.execute_batch(migration).unwrap();
        }
        connection
            .execute_batch(
                "INSERT INTO accounts VALUES ('writer', '$argon2id$w', 'keys:read,keys:write', 0, 0),
                                             ('reader', '$argon2id$r', 'keys:read', 0, 0);
                 INSERT INTO tokens VALUES ('0123456789ab', zeroblob(32), 'writer', 'rig', 'keys:write', 0, NULL);
                 INSERT INTO sessions VALUES (zeroblob(32), 'reader', 0, 4102444800);",
            )
            .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let writer = block(store.account("writer")).unwrap();
    assert_eq!(
        writer.rights,
        [Right::KeysRead, Right::KeysWrite, Right::KeysExport]
    );
    assert_eq!(writer.mac, None);
    assert_eq!(
        block(store.account("reader")).unwrap().rights,
        [Right::KeysRead]
    );
    assert_eq!(
        block(store.token("0123456789ab")).unwrap().rights,
        [Right::KeysWrite, Right::KeysExport]
    );
    assert_eq!(block(store.session(&[0; 32])), None, "sessions end");
    let audit = block(store.audit(&AuditFilter::default(), &PageRequest::all()));
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert!(audit[0].detail.contains("account writer"), "{audit:?}");

    // This open applied the row-MAC migration: it may seal them, and seals them all.
    assert!(store.migrated_row_macs_now());
    let key = Arc::new(crate::row_mac::RowKey::derive(b"this UMS ID"));
    let sealed = block(store.seal_admin_rows(key.clone(), "at the upgrade", &Actor::cli()));
    assert_eq!((sealed.accounts.len(), sealed.tokens.len()), (2, 1));
    assert!(key.account_ok(&block(store.account("writer")).unwrap()));
    assert!(key.token_ok(&block(store.token("0123456789ab")).unwrap()));
    // Any later open did not migrate: it seals nothing on its own.
    drop(store);
    assert!(!SqliteStore::open(&path).unwrap().migrated_row_macs_now());
}

#[test]
fn a_clash_redraws_generated_values_and_refuses_typed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db")).unwrap();
    insert(&store, 1, Box::new(|_| key(1, KeyKind::OneTime, true))).unwrap();
    // The first draw clashes with the existing digest, the second does not.
    let mut draws = [1u8, 2].into_iter();
    let ids = insert(
        &store,
        1,
        Box::new(move |_| key(draws.next().unwrap(), KeyKind::OneTime, true)),
    )
    .unwrap();
    assert_eq!(ids.len(), 1);
    let refused = insert(
        &store,
        1,
        Box::new(|_| key(2, KeyKind::MassDeployment, false)),
    );
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    assert_eq!(all(&store).len(), 2);
}

#[test]
fn batch_operations_are_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db")).unwrap();
    let ids = insert(
        &store,
        3,
        Box::new(|i| key(i as u8 + 10, KeyKind::OneTime, true)),
    )
    .unwrap();
    let refused =
        try_block(store.set_active(&[ids[0], 999, ids[1]], false, &Actor::cli())).unwrap_err();
    assert!(
        matches!(&refused, StoreError::NotFound(Missing::Keys(missing)) if missing == &vec![999])
    );
    assert!(all(&store).iter().all(|k| k.active));
    assert!(matches!(
        try_block(store.delete_keys(&[ids[2], 998], &Actor::cli())),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(all(&store).len(), 3);
    // A batch that fails half-way leaves nothing behind.
    let partial = insert(
        &store,
        3,
        Box::new(|i| {
            if i == 2 {
                key(10, KeyKind::MassDeployment, false)
            } else {
                key(i as u8 + 50, KeyKind::OneTime, true)
            }
        }),
    );
    assert!(partial.is_err());
    assert_eq!(all(&store).len(), 3);
}

#[test]
fn status_filter_matches_the_stored_status() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db")).unwrap();
    let kinds = [
        KeyKind::OneTime,
        KeyKind::MassDeployment,
        KeyKind::DeviceBound,
    ];
    let ids = insert(
        &store,
        3,
        Box::new(move |i| key(i as u8 + 1, kinds[i], true)),
    )
    .unwrap();
    // Used as the enrollment path uses them: through the claim rule's status.
    {
        let connection = store.inner.lock();
        for (id, kind) in [
            (ids[0], KeyKind::OneTime),
            (ids[1], KeyKind::MassDeployment),
        ] {
            connection
                .execute(
                    "UPDATE keys SET usage_count = 1, status = ?1 WHERE id = ?2",
                    params![claim::stored_status(kind, true, 1).as_str(), id],
                )
                .unwrap();
        }
    }
    block(store.set_active(&[ids[0], ids[2]], false, &Actor::cli()));
    let status = |status| {
        block(store.keys(
            &KeyFilter {
                status: Some(status),
                ..KeyFilter::default()
            },
            &PageRequest::all(),
        ))
        .iter()
        .map(|k| (k.id, k.status))
        .collect::<Vec<_>>()
    };
    // A used one-time key stays Used when deactivated; a used mass key stays Active.
    assert_eq!(status(KeyStatus::Used), vec![(ids[0], KeyStatus::Used)]);
    assert_eq!(status(KeyStatus::Active), vec![(ids[1], KeyStatus::Active)]);
    assert_eq!(
        status(KeyStatus::Inactive),
        vec![(ids[2], KeyStatus::Inactive)]
    );
}

#[test]
fn pages_follow_the_keyset_and_count_the_filter() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db")).unwrap();
    let kinds = [KeyKind::OneTime, KeyKind::MassDeployment];
    let ids = insert(
        &store,
        10,
        Box::new(move |i| key(i as u8 + 1, kinds[i % 2], true)),
    )
    .unwrap();
    let one_time = KeyFilter {
        kind: Some(KeyKind::OneTime),
        ..KeyFilter::default()
    };
    let page = |after| {
        block(store.keys(&one_time, &PageRequest { limit: 2, after }))
            .iter()
            .map(|k| k.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(page(None), [ids[0], ids[2]]);
    assert_eq!(page(Some(ids[2])), [ids[4], ids[6]]);
    assert_eq!(page(Some(ids[6])), [ids[8]]);
    assert_eq!(page(Some(ids[8])), Vec::<KeyId>::new());
    assert_eq!(block(store.count_keys(&one_time)), 5);
    assert_eq!(block(store.count_keys(&KeyFilter::default())), 10);
}

#[test]
fn the_database_keeps_the_ums_id_it_was_made_under() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let first = Fingerprint::from_bytes([1; 32]);
    let second = Fingerprint::from_bytes([2; 32]);
    let store = SqliteStore::open(&path).unwrap();
    block(store.bind_ums_id(&first));
    block(store.bind_ums_id(&first));
    let refused = try_block(store.bind_ums_id(&second)).unwrap_err();
    let message = refused.to_string();
    assert!(
        message.contains(&first.to_string())
            && message.contains(&second.to_string())
            && message.contains("db.sqlite")
            && message.contains("ums-stub ums-id restore"),
        "{message}"
    );
}
