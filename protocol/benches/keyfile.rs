//! Benchmark: write and parse a 100,000-key export in each format.
//!
//! `cargo bench -p onboard-protocol --bench keyfile` prints, per format, the median and fastest of
//! 15 timed runs (after 3 warm-up runs) of writing the export to a string and of parsing it back.
//! The keys are a mix like a large rollout: 80% one-time, 15% device-bound, 5% mass.

use std::hint::black_box;
use std::time::{Duration, Instant};

use onboard_protocol::{Fingerprint, FirstAuthKey, Format, KeyEntry, KeyFile, Limits, Server};

const KEYS: usize = 100_000;
const WARM_UP: usize = 3;
const RUNS: usize = 15;

fn export() -> KeyFile {
    let keys = (0..KEYS)
        .map(|i| {
            let key = FirstAuthKey::new(format!(
                "{:017}",
                31_415_926_535_897_932u64 + i as u64 * 7919
            ))
            .unwrap();
            match i % 20 {
                0 => KeyEntry::mass(key),
                1..=3 => KeyEntry::device_bound(key, format!("00E0C5{:06X}", i).parse().unwrap()),
                _ => KeyEntry::one_time(key),
            }
        })
        .collect();
    KeyFile::new(
        vec![Server::new("ums.example.com", 8443).unwrap()],
        Fingerprint::of_der(b"benchmark UMS ID"),
        keys,
        Some(
            time::OffsetDateTime::now_utc()
                .replace_nanosecond(0)
                .unwrap(),
        ),
    )
}

/// Median and fastest of `RUNS` timings of `work`.
fn measure(mut work: impl FnMut()) -> (Duration, Duration) {
    for _ in 0..WARM_UP {
        work();
    }
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            work();
            start.elapsed()
        })
        .collect();
    times.sort();
    (times[RUNS / 2], times[0])
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing and wants a quick run.
    let quick = !std::env::args().any(|arg| arg == "--bench");
    let file = export();
    let limits = Limits {
        max_bytes: 64 * 1024 * 1024,
        ..Limits::default()
    };
    println!("key-file benchmark: {KEYS} keys, median (fastest) of {RUNS} runs");
    println!(
        "{:<6} {:>10} {:>22} {:>22}",
        "format", "size", "write", "parse"
    );
    for format in Format::ALL {
        let written = file.write(format);
        let parsed =
            KeyFile::parse(written.as_bytes(), &limits).expect("benchmark export reads back");
        assert_eq!(parsed.keys.len(), KEYS);
        if quick {
            continue;
        }
        let (write_median, write_best) = measure(|| {
            black_box(file.write(format));
        });
        let (parse_median, parse_best) = measure(|| {
            black_box(KeyFile::parse(black_box(written.as_bytes()), &limits).unwrap());
        });
        println!(
            "{:<6} {:>7.1} MB {:>22} {:>22}",
            format.as_str(),
            written.len() as f64 / 1e6,
            format!("{} ({})", ms(write_median), ms(write_best)),
            format!("{} ({})", ms(parse_median), ms(parse_best)),
        );
    }
}
