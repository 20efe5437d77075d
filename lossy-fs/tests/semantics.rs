//! What the lossy filesystem promises, over real system calls through the kernel: a write is
//! durable once its file is synced, a directory entry once its directory is synced, and a cut
//! drops the rest. Each test fails where FUSE cannot be mounted, saying why.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use lossy_fs::LossyFs;

fn mounted() -> (tempfile::TempDir, LossyFs) {
    let dir = tempfile::tempdir().unwrap();
    let fs = LossyFs::mount(dir.path()).expect("the lossy filesystem must mount");
    (dir, fs)
}

fn sync_dir(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap()
}

#[test]
fn a_synced_write_survives_a_cut_and_a_later_one_is_lost() {
    let (_dir, fs) = mounted();
    let path = fs.path().join("file");
    let mut file = File::create(&path).unwrap();
    sync_dir(fs.path());
    file.write_all(b"synced").unwrap();
    file.sync_data().unwrap();
    file.write_all(b" and not").unwrap();
    assert_eq!(
        read(&path),
        b"synced and not",
        "every write is seen at once"
    );
    drop(file);
    let cut = fs.cut();
    assert_eq!(read(&path), b"synced");
    assert_eq!((cut.files, cut.entries), (1, 0), "{cut:?}");
}

#[test]
fn fsync_and_fdatasync_keep_the_length_too() {
    let (_dir, fs) = mounted();
    let path = fs.path().join("file");
    let mut file = File::create(&path).unwrap();
    sync_dir(fs.path());
    file.write_all(&[7u8; 40_000]).unwrap();
    file.sync_all().unwrap();
    file.set_len(10).unwrap();
    drop(file);
    fs.cut();
    assert_eq!(
        read(&path),
        vec![7u8; 40_000],
        "the truncation was not synced"
    );
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(10).unwrap();
    file.sync_data().unwrap();
    file.set_len(20_000).unwrap();
    drop(file);
    fs.cut();
    assert_eq!(read(&path), vec![7u8; 10]);
}

#[test]
fn a_new_file_is_lost_until_its_directory_is_synced() {
    let (_dir, fs) = mounted();
    let path = fs.path().join("new");
    let mut file = File::create(&path).unwrap();
    file.write_all(b"bytes").unwrap();
    file.sync_all().unwrap();
    drop(file);
    let cut = fs.cut();
    assert!(!path.exists(), "a file synced in a directory not synced");
    assert_eq!(cut.entries, 1, "{cut:?}");

    let mut file = File::create(&path).unwrap();
    file.write_all(b"bytes").unwrap();
    file.sync_all().unwrap();
    sync_dir(fs.path());
    drop(file);
    fs.cut();
    assert_eq!(read(&path), b"bytes");
}

#[test]
fn a_rename_and_a_removal_are_undone_until_the_directory_is_synced() {
    let (_dir, fs) = mounted();
    let (old, new, gone) = (
        fs.path().join("old"),
        fs.path().join("new"),
        fs.path().join("gone"),
    );
    for path in [&old, &gone] {
        let mut file = File::create(path).unwrap();
        file.write_all(b"kept").unwrap();
        file.sync_all().unwrap();
    }
    sync_dir(fs.path());
    fs::rename(&old, &new).unwrap();
    fs::remove_file(&gone).unwrap();
    fs.cut();
    assert!(old.exists() && gone.exists() && !new.exists());

    fs::rename(&old, &new).unwrap();
    fs::remove_file(&gone).unwrap();
    sync_dir(fs.path());
    fs.cut();
    assert!(!old.exists() && !gone.exists());
    assert_eq!(read(&new), b"kept");
}

#[test]
fn a_durable_copy_is_what_a_cut_leaves_and_changes_nothing() {
    let (dir, fs) = mounted();
    fs::create_dir(fs.path().join("sub")).unwrap();
    let path = fs.path().join("sub/file");
    let mut file = File::create(&path).unwrap();
    file.write_all(b"one").unwrap();
    file.sync_all().unwrap();
    sync_dir(&fs.path().join("sub"));
    sync_dir(fs.path());
    file.write_all(b" two").unwrap();
    let copy = tempfile::tempdir().unwrap();
    fs.durable_copy(copy.path()).unwrap();
    assert_eq!(read(&copy.path().join("sub/file")), b"one");
    assert_eq!(read(&path), b"one two", "the copy touched nothing");
    // The file is still open and writable after the copy.
    file.seek(SeekFrom::Start(0)).unwrap();
    file.write_all(b"ONE").unwrap();
    drop(file);
    let mut now = String::new();
    File::open(&path).unwrap().read_to_string(&mut now).unwrap();
    assert_eq!(now, "ONE two");
    drop(dir);
}

#[test]
fn a_failing_disk_answers_eio_and_keeps_nothing() {
    let (_dir, fs) = mounted();
    let path = fs.path().join("file");
    let mut file = File::create(&path).unwrap();
    sync_dir(fs.path());
    file.write_all(b"lost").unwrap();
    fs.fail_syncs(true);
    let error = file.sync_data().expect_err("the sync must fail");
    assert_eq!(error.raw_os_error(), Some(5), "EIO: {error}");
    assert_eq!(fs.syncs(Path::new("file")), Some(0));
    fs.fail_syncs(false);
    drop(file);
    fs.cut();
    assert_eq!(read(&path), b"");
}

#[test]
fn sqlite_keeps_what_it_committed_with_synchronous_full_and_loses_what_it_did_not() {
    let (_dir, fs) = mounted();
    let path = fs.path().join("db.sqlite");
    let setup = |db: &rusqlite::Connection| {
        let mode: String = db
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    };
    let db = rusqlite::Connection::open(&path).unwrap();
    setup(&db);
    db.execute_batch(
        "PRAGMA synchronous = FULL; CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (1);",
    )
    .unwrap();
    // The database file itself was created without a directory sync (SQLite leaves that to the
    // application); the WAL file's entry SQLite syncs itself.
    sync_dir(fs.path());
    db.execute_batch("PRAGMA synchronous = OFF; INSERT INTO t VALUES (2);")
        .unwrap();
    // A crash: the connection is leaked, never closed (closing would checkpoint and sync).
    std::mem::forget(db);
    let copy = tempfile::tempdir().unwrap();
    fs.durable_copy(copy.path()).unwrap();
    let after = rusqlite::Connection::open(copy.path().join("db.sqlite")).unwrap();
    let integrity: String = after
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let rows: Vec<i64> = after
        .prepare("SELECT n FROM t ORDER BY n")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows,
        [1],
        "the unsynced commit is lost, the synced one kept"
    );
}
