//! Benchmark: the key store at 100,000 keys.
//!
//! `cargo bench -p ums-stub --bench keystore` creates 100,000 one-time keys in a fresh data
//! directory (generation, HMAC, sealing and one SQLite transaction), lists them with a filter
//! (`--type one-time --status active`: query, unseal, mask), and exports them to XML (select,
//! unseal, write, fsync). Each step runs 5 times on a fresh directory; the median and the fastest
//! are printed.

use std::time::{Duration, Instant};

use onboard_protocol::{Format, KeyKind};
use ums_stub::config::Settings;
use ums_stub::files;
use ums_stub::store::{KeyFilter, KeyStatus};
use ums_stub::stub::Stub;

const KEYS: usize = 100_000;
const RUNS: usize = 5;

fn open(dir: &std::path::Path) -> Stub {
    Stub::open(Settings::load(dir.to_owned(), None).unwrap()).unwrap()
}

fn ms(duration: Duration) -> String {
    format!("{:.0} ms", duration.as_secs_f64() * 1000.0)
}

fn main() {
    let quick = !std::env::args().any(|arg| arg == "--bench");
    let runs = if quick { 1 } else { RUNS };
    let count = if quick { 1000 } else { KEYS };
    let mut create = Vec::new();
    let mut list = Vec::new();
    let mut export = Vec::new();
    for _ in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let stub = open(dir.path());
        let admin = stub.keys();

        let start = Instant::now();
        let ids = admin.create_one_time(count, "", &|_| {}).unwrap();
        create.push(start.elapsed());
        assert_eq!(ids.len(), count);

        let filter = KeyFilter {
            kind: Some(KeyKind::OneTime),
            status: Some(KeyStatus::Active),
            ..KeyFilter::default()
        };
        let start = Instant::now();
        let listed = admin.list(&filter).unwrap();
        let masked: Vec<String> = listed.iter().map(|view| view.key.masked()).collect();
        list.push(start.elapsed());
        assert_eq!(masked.len(), count);

        let out = dir.path().join("icg.xml");
        let start = Instant::now();
        let file = admin
            .export(
                &[],
                vec![stub.settings.public_server.clone()],
                stub.ums_id.fingerprint(),
            )
            .unwrap();
        files::write_private(&out, file.write(Format::Xml).as_bytes(), false).unwrap();
        export.push(start.elapsed());
        assert_eq!(file.keys.len(), count);
    }
    if quick {
        return;
    }
    println!("key-store benchmark: {KEYS} one-time keys, median (fastest) of {RUNS} runs");
    for (name, target, mut times) in [
        ("create", "2 s", create),
        ("list with filter", "0.5 s", list),
        ("export to XML", "1 s", export),
    ] {
        times.sort();
        println!(
            "{name:<18} {:>8} ({:>8})   target under {target}",
            ms(times[RUNS / 2]),
            ms(times[0])
        );
    }
}
