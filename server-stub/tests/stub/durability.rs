//! Crashes and sharing: SIGKILL in the middle of a large creation, several processes on one data
//! directory, and what a stolen database copy shows.

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ums_stub::store::{Actor, KeyFilter, PageRequest, SqliteStore, Store};

use crate::util::DataDir;

#[test]
fn sigkill_while_creating_100000_keys_leaves_all_or_nothing() {
    let dir = DataDir::new();
    dir.ok(&["keys", "create", "one-time", "--quantity", "5"]);
    let wal = dir.path().join("ums-stub.db-wal");
    let mut killed_mid_way = 0;
    for _ in 0..3 {
        let mut child = dir
            .command(&["keys", "create", "one-time", "--quantity", "100000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the transaction is writing pages to the WAL, then kill.
        let start = Instant::now();
        while fs::metadata(&wal).map(|m| m.len()).unwrap_or(0) < 1_000_000
            && start.elapsed() < Duration::from_secs(60)
        {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let still_running = child.try_wait().unwrap().is_none();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if still_running {
            killed_mid_way += 1;
        }

        let store = SqliteStore::open(&dir.path().join("ums-stub.db")).unwrap();
        store.integrity_check().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let count = runtime
            .block_on(store.keys(&KeyFilter::default(), &PageRequest::all()))
            .unwrap()
            .len();
        assert!(
            count == 5 || count == 100_005,
            "all or nothing, found {count} keys"
        );
        if count == 100_005 {
            // It committed before the kill landed; start over from the five.
            let ids: Vec<i64> = runtime
                .block_on(store.keys(&KeyFilter::default(), &PageRequest::all()))
                .unwrap()
                .iter()
                .skip(5)
                .map(|k| k.id)
                .collect();
            runtime
                .block_on(store.delete_keys(&ids, &Actor::cli()))
                .unwrap();
        }
    }
    assert!(
        killed_mid_way > 0,
        "at least one run was killed in the middle of its transaction"
    );
    // The store opens cleanly through the binary and takes new keys.
    dir.ok(&["keys", "create", "one-time", "--quantity", "1"]);
    assert_eq!(dir.list(&[]).len(), 6);
}

#[test]
fn commands_share_a_data_directory_another_process_is_writing() {
    let dir = DataDir::new();
    dir.ok(&["keys", "create", "one-time", "--quantity", "1"]);
    // A long writer in another process (standing in for a server busy with the database)...
    let mut writer = dir
        .command(&["keys", "create", "one-time", "--quantity", "100000"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // ...while an administrator lists, creates and edits.
    let listed = dir.list(&[]);
    assert!(!listed.is_empty());
    dir.ok(&[
        "keys",
        "create",
        "mass",
        "--password",
        "shared access for the lab",
    ]);
    dir.ok(&["keys", "edit", "1", "--comment", "edited meanwhile"]);
    assert!(
        writer.wait().unwrap().success(),
        "the long writer finished too"
    );
    let all = dir.list(&["--show", "--limit", "1000000"]);
    assert_eq!(all.len(), 100_002);
    assert_eq!(all[0].comment, "edited meanwhile");
    assert!(all.iter().any(|k| k.key == "shared access for the lab"));
}

#[test]
fn an_open_reader_and_a_held_write_lock_do_not_break_commands() {
    let dir = DataDir::new();
    dir.ok(&["keys", "create", "one-time", "--quantity", "1"]);
    let db = dir.path().join("ums-stub.db");
    let reader = rusqlite::Connection::open(&db).unwrap();
    reader
        .execute_batch("BEGIN; SELECT count(*) FROM keys;")
        .unwrap();
    let holder = std::thread::spawn(move || {
        let writer = rusqlite::Connection::open(&db).unwrap();
        writer.execute_batch("BEGIN IMMEDIATE;").unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        writer.execute_batch("COMMIT;").unwrap();
    });
    std::thread::sleep(Duration::from_millis(200));
    // Waits for the write lock instead of failing with "database is locked".
    dir.ok(&["keys", "create", "one-time", "--quantity", "2"]);
    holder.join().unwrap();
    reader.execute_batch("COMMIT;").unwrap();
    assert_eq!(dir.list(&[]).len(), 3);
}

#[test]
fn a_copy_of_the_database_reveals_no_key() {
    let dir = DataDir::new();
    dir.ok(&["keys", "create", "one-time", "--quantity", "20"]);
    dir.ok(&[
        "keys",
        "create",
        "device-bound",
        "--unit-id",
        "00e0c5540b8b",
    ]);
    dir.ok(&[
        "keys",
        "create",
        "mass",
        "--password",
        "Findable Password 123",
    ]);
    let values: Vec<String> = dir
        .list(&["--show"])
        .iter()
        .map(|k| k.key.clone())
        .collect();
    assert_eq!(values.len(), 22);
    let mut bytes = Vec::new();
    for entry in fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("ums-stub.db")
        {
            bytes.extend(fs::read(&path).unwrap());
        }
    }
    assert!(bytes.len() > 4096);
    for value in &values {
        assert!(
            !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
            "the database holds a key in the clear"
        );
    }
    // With the database alone (no UMS ID), the keys cannot be listed: a server with another UMS
    // ID refuses the database, naming both fingerprints (its sealed values would not open there
    // either: see vault.rs).
    let stolen = DataDir::new();
    fs::create_dir_all(stolen.path()).unwrap();
    fs::copy(
        dir.path().join("ums-stub.db"),
        stolen.path().join("ums-stub.db"),
    )
    .unwrap();
    let refused = stolen.fails(&["keys", "list", "--show"]);
    assert!(
        refused.contains(&format!("was made under UMS ID {}", dir.fingerprint()))
            && refused.contains(&stolen.fingerprint())
            && refused.contains("ums-stub ums-id restore"),
        "{refused}"
    );
    for value in &values {
        assert!(!refused.contains(value.as_str()));
    }
}
