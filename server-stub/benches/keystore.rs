//! Benchmark: the key store at 100,000 keys, and paging through 1,000,000.
//!
//! `cargo bench -p ums-stub --bench keystore`:
//! - creates 100,000 one-time keys in a fresh data directory (generation, HMAC, sealing and one
//!   SQLite transaction), lists all of them with a filter (`--type one-time --status active`:
//!   query, unseal, mask), and exports them to XML (select, unseal, write, fsync). Each step runs 5
//!   times on a fresh directory; the median and the fastest are printed.
//! - creates 1,000,000 one-time keys, deactivates every third, and times one page of 100 keys
//!   with the filter `type one-time, status active` (query, unseal, mask) at 200 random places in
//!   the list, and the filter's total count on its own. Target: the page in 10 ms or less.
//!
//! Without `--bench` (as `cargo test --benches` runs it) it does one small round as a smoke test.

use std::time::{Duration, Instant};

use onboard_protocol::Format;
use onboard_protocol::KeyKind;
use onboard_protocol::admin::KeyStatus;
use ums_stub::config::Settings;
use ums_stub::files;
use ums_stub::store::{Actor, KeyFilter, PageRequest};
use ums_stub::stub::Stub;

const KEYS: usize = 100_000;
const RUNS: usize = 5;
const PAGING_KEYS: usize = 1_000_000;
const PAGE: usize = 100;
const PAGES: usize = 200;
const PAGE_TARGET: Duration = Duration::from_millis(10);

async fn open(dir: &std::path::Path) -> Stub {
    Stub::open(Settings::load(dir.to_owned(), None).unwrap())
        .await
        .unwrap()
}

fn ms(duration: Duration) -> String {
    format!("{:.0} ms", duration.as_secs_f64() * 1000.0)
}

fn ms_fine(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

fn active_one_time() -> KeyFilter {
    KeyFilter {
        kind: Some(KeyKind::OneTime),
        status: Some(KeyStatus::Active),
        ..KeyFilter::default()
    }
}

/// Create, list and export `count` keys, `runs` times; the times of each step.
async fn whole_lists(count: usize, runs: usize) -> [Vec<Duration>; 3] {
    let mut create = Vec::new();
    let mut list = Vec::new();
    let mut export = Vec::new();
    for _ in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let stub = open(dir.path()).await;
        let admin = stub.keys();

        let start = Instant::now();
        let ids = admin
            .create_one_time(count, "", Box::new(|_| {}), &Actor::cli())
            .await
            .unwrap();
        create.push(start.elapsed());
        assert_eq!(ids.len(), count);

        let start = Instant::now();
        let listed = admin
            .list(&active_one_time(), &PageRequest::first(count), false)
            .await
            .unwrap();
        list.push(start.elapsed());
        assert_eq!(listed.items.len(), count);

        let out = dir.path().join("icg.xml");
        let start = Instant::now();
        let file = admin
            .export(
                &[],
                vec![stub.settings.public_server.clone()],
                stub.ums_id.fingerprint(),
            )
            .await
            .unwrap();
        files::write_private(&out, file.write(Format::Xml).as_bytes(), false).unwrap();
        export.push(start.elapsed());
        assert_eq!(file.keys.len(), count);
    }
    [create, list, export]
}

/// Pages of [`PAGE`] keys out of `count`, every third deactivated: the time of each page at
/// `pages` places, and of the total count.
async fn paging(count: usize, pages: usize) -> (Vec<Duration>, Duration, u64) {
    let dir = tempfile::tempdir().unwrap();
    let stub = open(dir.path()).await;
    let admin = stub.keys();
    let started = Instant::now();
    let ids = admin
        .create_one_time(count, "", Box::new(|_| {}), &Actor::cli())
        .await
        .unwrap();
    let inactive: Vec<i64> = ids.iter().copied().step_by(3).collect();
    admin.deactivate(&inactive, &Actor::cli()).await.unwrap();
    eprintln!(
        "paging: {count} keys made, {} deactivated, in {:.1} s",
        inactive.len(),
        started.elapsed().as_secs_f64()
    );
    let filter = active_one_time();
    let mut times = Vec::with_capacity(pages);
    let mut place = 0x9E37_79B9_7F4A_7C15_u64;
    for index in 0..pages {
        // The first page, then places spread over the list by a fixed pseudo-random walk.
        place = place
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        let after = (index > 0).then(|| ids[(place >> 33) as usize % count]);
        let start = Instant::now();
        let page = admin
            .list(&filter, &PageRequest { limit: PAGE, after }, false)
            .await
            .unwrap();
        times.push(start.elapsed());
        assert!(page.items.len() <= PAGE);
        assert!(page.items.iter().all(|key| key.status == KeyStatus::Active));
    }
    let start = Instant::now();
    let total = admin.count(&filter).await.unwrap();
    (times, start.elapsed(), total)
}

fn main() {
    let quick = !std::env::args().any(|arg| arg == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if quick {
        runtime.block_on(whole_lists(1000, 1));
        runtime.block_on(paging(3000, 5));
        return;
    }
    let [create, list, export] = runtime.block_on(whole_lists(KEYS, RUNS));
    println!("key-store benchmark: {KEYS} one-time keys, median (fastest) of {RUNS} runs");
    for (name, target, mut times) in [
        ("create", "2 s", create),
        ("list all, filtered", "0.5 s", list),
        ("export to XML", "1 s", export),
    ] {
        times.sort();
        println!(
            "{name:<20} {:>8} ({:>8})   target under {target}",
            ms(times[RUNS / 2]),
            ms(times[0])
        );
    }
    let (mut pages, count_time, total) = runtime.block_on(paging(PAGING_KEYS, PAGES));
    pages.sort();
    let median = pages[PAGES / 2];
    let p99 = pages[PAGES * 99 / 100];
    println!(
        "paging: one page of {PAGE} keys out of {PAGING_KEYS} (type one-time, status active; {total} match), {PAGES} pages at random places"
    );
    println!(
        "page                 median {}, p99 {}, max {}   target {} or less{}",
        ms_fine(median),
        ms_fine(p99),
        ms_fine(pages[PAGES - 1]),
        ms(PAGE_TARGET),
        if median <= PAGE_TARGET {
            ""
        } else {
            "   SHORT OF TARGET"
        }
    );
    println!("total count (own call) {}", ms_fine(count_time));
}
