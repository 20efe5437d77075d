//! Power cuts: `ums-stub serve` with its data directory on the lossy filesystem (`lossy-fs`), a
//! fleet of devices on one-time keys enrolling, and the server SIGKILLed and every write it had
//! not synced dropped, as a power cut would, then started again, over and over. Between two cuts
//! the server is SIGKILLed once more with no cut (a crash of the process alone), so that a server
//! answers retries from what its killed predecessor wrote but never synced.
//!
//! After every kill, on what a cut would leave: every device that holds a certificate is in the
//! database with that certificate, the key it used shows used, no one-time key serves two
//! devices, and SQLite's integrity check passes. At the end the whole fleet is enrolled and the
//! same holds for every device.
//!
//! CI runs 300 devices and 4 cuts (8 kills); `ONBOARD_POWER_CUTS` and `ONBOARD_POWER_CUT_DEVICES` scale it
//! (BENCHMARKS.md has the 100-cut run). Without FUSE (no `/dev/fuse`, no right to mount) the test
//! fails and says why.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use lossy_fs::LossyFs;
use onboard_agent::enroll::KeySource;
use onboard_agent::lifecycle::BackoffPolicy;
use onboard_protocol::{KeyFile, Limits};
use onboard_tests::fleet::{self, FleetConfig, Summary};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::util::Ums;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

/// The devices that hold a certificate, by unit ID: what their state directories say now.
fn certified(state_root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut held = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(state_root) else {
        return held;
    };
    for entry in entries {
        let entry = entry.unwrap();
        let file = entry.path().join(onboard_agent::state::DEVICE_CERT_FILE);
        // A certificate is stored by rename: it is there whole or not at all.
        if let Ok(pem) = std::fs::read(&file) {
            let der = CertificateDer::from_pem_slice(&pem)
                .unwrap_or_else(|error| panic!("{}: {error}", file.display()));
            held.insert(
                entry.file_name().to_string_lossy().into_owned(),
                der.to_vec(),
            );
        }
    }
    held
}

/// A device's row as the check reads it: certificate, key ID, key type, the key's status.
type StoredDevice = (Vec<u8>, Option<i64>, String, Option<String>);

/// Checks the database in `data` (a copy of what a cut leaves, or the data directory of a
/// stopped server) against the certificates the devices hold. `when` names the moment.
fn check(data: &Path, held: &BTreeMap<String, Vec<u8>>, when: &str) -> usize {
    let db = rusqlite::Connection::open(data.join("ums-stub.db")).unwrap();
    let integrity: String = db
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok", "{when}: the integrity check");
    for (unit_id, der) in held {
        let row: Option<StoredDevice> = db
            .query_row(
                "SELECT d.certificate, d.key_id, d.key_kind, k.status
                 FROM devices d LEFT JOIN keys k ON k.id = d.key_id WHERE d.unit_id = ?1",
                [unit_id],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .ok();
        let Some((certificate, key_id, kind, status)) = row else {
            panic!("{when}: device {unit_id} holds a certificate the database does not know");
        };
        assert!(
            certificate == *der,
            "{when}: device {unit_id} holds a certificate other than the database's"
        );
        assert!(key_id.is_some(), "{when}: device {unit_id} has no key");
        if kind != "mass" {
            assert_eq!(
                status.as_deref(),
                Some("used"),
                "{when}: the {kind} key of device {unit_id} shows unused"
            );
        }
    }
    let shared: i64 = db
        .query_row(
            "SELECT count(*) FROM (SELECT key_id FROM devices WHERE key_kind <> 'mass'
             GROUP BY key_id HAVING count(*) > 1)",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(shared, 0, "{when}: a one-time key served two devices");
    let overused: i64 = db
        .query_row(
            "SELECT count(*) FROM keys WHERE kind <> 'mass' AND usage_count > 1",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(overused, 0, "{when}: a one-time key used twice");
    db.query_row("SELECT count(*) FROM devices", [], |row| {
        row.get::<_, i64>(0)
    })
    .unwrap() as usize
}

#[test]
fn a_fleet_enrolls_through_power_cuts_and_the_database_knows_every_certificate() {
    let devices = setting("ONBOARD_POWER_CUT_DEVICES", 300);
    let cuts = setting("ONBOARD_POWER_CUTS", 4);
    let disk = tempfile::tempdir().unwrap();
    let fs = LossyFs::mount(disk.path()).unwrap_or_else(|error| {
        panic!("the power-cut test needs FUSE (/dev/fuse and the right to mount): {error}")
    });
    let mut ums = Ums::unstarted(Some(fs.path().join("data")));
    ums.serve_on("127.0.0.1:0");
    let addr = ums.addr();
    let root = tempfile::tempdir().unwrap();
    let stick = root.path().join("STICK");
    ums.one_time_stick(devices, &stick, None);
    // The set-up is on the disk before the first cut: a machine left running writes back.
    fs.sync_all();
    let bytes = std::fs::read(stick.join("icg.xml")).unwrap();
    let file = KeyFile::parse(&bytes, &Limits::default()).unwrap();
    let source = KeySource::from_key_file("the power-cut stick", &file);
    let state_root = root.path().join("devices");
    let config = FleetConfig {
        devices,
        concurrency: 64,
        source: source.clone(),
        state_root: state_root.clone(),
        first_unit: 0x06E0_C500_0000,
        backoff: BackoffPolicy {
            base: Duration::from_millis(50),
            max: Duration::from_secs(1),
        },
        max_passes: 10_000,
        progress: false,
    };
    let started = Instant::now();
    let mut lost = lossy_fs::Cut::default();
    let (summary, done) = std::thread::scope(|scope| {
        let fleet = scope.spawn(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let (runs, elapsed) = runtime.block_on(fleet::run(&config));
            Summary::of(&runs, &source, elapsed)
        });
        let mut done = 0;
        let mut crashes = 0;
        // Kills that landed while devices were still enrolling (a fast machine may finish the
        // fleet before the last ones; the checks after those still hold).
        let mut during = 0;
        while done < cuts {
            if !fleet.is_finished() {
                during += 1;
            }
            // Let the fleet come back and enroll a few more, then kill at a different point of
            // the enrollments each time.
            let before = certified(&state_root).len();
            let waiting = Instant::now();
            while certified(&state_root).len() < (before + 5).min(devices)
                && waiting.elapsed() < Duration::from_secs(20)
                && !fleet.is_finished()
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(((done + crashes) as u64 * 37) % 100));
            ums.serve.take().unwrap().kill().unwrap();
            // The server is dead: what the devices hold can only grow by answers already sent.
            std::thread::sleep(Duration::from_millis(50));
            let held = certified(&state_root);
            let copy = tempfile::tempdir().unwrap();
            fs.durable_copy(copy.path()).unwrap();
            // Every other kill is a crash of the process alone, the machine running on: the
            // next server answers retries from writes a cut after it would drop, unless it
            // syncs them first.
            let cutting = crashes > done;
            let when = if cutting {
                format!("at cut {}", done + 1)
            } else {
                format!("at crash {}", crashes + 1)
            };
            let known = check(&copy.path().join("data"), &held, &when);
            assert!(known >= held.len());
            if cutting {
                let cut = fs.cut();
                lost.files += cut.files;
                lost.bytes += cut.bytes;
                lost.entries += cut.entries;
                done += 1;
            } else {
                crashes += 1;
            }
            ums.serve_on(&addr.to_string());
        }
        assert!(during > 0, "no kill landed while the fleet enrolled");
        (fleet.join().unwrap(), done)
    });
    let took = started.elapsed();
    println!(
        "power cuts: {devices} devices, {done} cuts and as many crashes, {:.1} s, {} retries; the cuts dropped {} \
         KiB in {} files and {} directory entries",
        took.as_secs_f64(),
        summary.retries,
        lost.bytes / 1024,
        lost.files,
        lost.entries
    );
    // The whole fleet, once more after a last cut, and with the server stopped for good.
    ums.serve.take().unwrap().kill().unwrap();
    fs.cut();
    let held = certified(&state_root);
    assert_eq!(held.len(), devices);
    let copy = tempfile::tempdir().unwrap();
    fs.durable_copy(copy.path()).unwrap();
    let known = check(&copy.path().join("data"), &held, "after the last cut");
    assert_eq!(known, devices, "the database knows every device, no more");
    assert_eq!(summary.enrolled, devices, "{summary:?}");
    // Not asserted: which key a device *reports* it enrolled with. A retry answered `repeated`
    // through another key of its request (the rule in server-stub/src/claim.rs: answered, not
    // consumed) names that key, which another device may then consume. The database, checked
    // above device by device, is what says which key serves which device.
    println!(
        "keys two devices report enrolling with: {}",
        summary.keys_used_twice.len()
    );
}
