//! The server's footprint: `cargo bench -p ums-stub --bench footprint`.
//!
//! Runs the `ums-stub` binary built by `cargo bench` (the release profile) as `ums-stub serve`
//! (through `ums_stub::testing`), with its default settings, on a data directory of its own, and
//! prints two figures against their targets, each flagged when it falls short:
//!
//! - **ready to serve with 1,000,000 keys**: from spawning `serve` to its first answer to
//!   `GET /.well-known/est/cacerts` over TLS, with 1,000,000 one-time keys in its SQLite database
//!   (target 50 ms, median of `ROUNDS` starts, default 5); the same with an empty database is
//!   printed beside it, so the share the keys cost shows;
//! - **peak RSS at 256 concurrent enrollments**: the server's VmHWM after 1,024 enrollments made 256
//!   at a time, each over a new TLS connection (resumption off), from eight loopback addresses
//!   (target 16 MiB).
//!
//! `KEYS` changes the number of keys (for a quick look).

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ums_stub::config::Settings;
use ums_stub::store::Actor;
use ums_stub::stub::Stub;
use ums_stub::testing::{ServeCommand, ServeProcess};

const BIN: &str = env!("CARGO_BIN_EXE_ums-stub");
const MIB: f64 = 1024.0 * 1024.0;
/// Enrollments in flight at once for the RSS figure.
const CONCURRENT: usize = 256;
/// Enrollments made for the RSS figure.
const ENROLLMENTS: usize = 1024;

/// The peak resident set of a running process, from /proc, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `ums-stub serve` over `data_dir` on a free loopback port, through `ums_stub::testing`.
fn serve(data_dir: &Path) -> ServeProcess {
    ServeCommand::binary(BIN)
        .data_dir(data_dir)
        .hosts(&["localhost"])
        .stderr(Stdio::null())
        .start()
        .unwrap()
}

fn stop(server: ServeProcess) {
    let status = server.terminate().unwrap();
    assert!(
        status.success(),
        "the server did not stop cleanly: {status}"
    );
}

/// A client trusting `ums_id`, its connections from `source` (any loopback address).
fn client_from(ums_id: &[u8], source: std::net::IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(common::client_config(ums_id))
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .local_address(source)
        .build()
        .unwrap()
}

fn client(ums_id: &[u8]) -> reqwest::Client {
    client_from(ums_id, std::net::Ipv4Addr::LOCALHOST.into())
}

/// Loopback addresses the enrollments come from, so that no source goes over the default
/// per-source caps (256 devices behind one address would be a gateway, not a fleet).
const SOURCES: u8 = 8;

/// Spawns `serve` on `data_dir` and waits for its first `cacerts` answer: the time it took, and
/// the server, for the caller to stop.
async fn time_to_ready(data_dir: &Path, http: &reqwest::Client) -> (Duration, ServeProcess) {
    let start = Instant::now();
    let server = serve(data_dir);
    let url = format!(
        "https://localhost:{}/.well-known/est/cacerts",
        server.port()
    );
    loop {
        if let Ok(response) = http.get(&url).send().await
            && response.status() == 200
        {
            return (start.elapsed(), server);
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the server did not answer within 30 s"
        );
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let quick = !std::env::args().any(|arg| arg == "--bench");
    let keys: usize = std::env::var("KEYS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(if quick { 1000 } else { 1_000_000 })
        // The enrollments' own keys are among them.
        .max(ENROLLMENTS);
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(if quick { 1 } else { 5 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        let full = dir.path().join("full");

        // Keys for the enrollments first (their values listed), then the million.
        let settings = Settings::load(full.clone(), None).unwrap();
        let stub = Stub::open(settings).await.unwrap();
        let admin = stub.keys();
        let values = common::one_time_keys(&admin, ENROLLMENTS).await;
        let made = Instant::now();
        if keys > ENROLLMENTS {
            admin
                .create_one_time(keys - ENROLLMENTS, "", Box::new(|_| {}), &Actor::cli())
                .await
                .unwrap();
        }
        println!(
            "{keys} one-time keys in the database (made in {:.1} s)",
            made.elapsed().as_secs_f64()
        );
        let ums_id = stub.ums_id.certificate_der().to_vec();
        drop(admin);
        drop(stub);
        let settings = Settings::load(empty.clone(), None).unwrap();
        let empty_stub = Stub::open(settings).await.unwrap();
        let empty_ums_id = empty_stub.ums_id.certificate_der().to_vec();
        drop(empty_stub);

        // Ready to serve: each data directory's TLS leaf exists from a first start.
        let http = client(&ums_id);
        let empty_http = client(&empty_ums_id);
        stop(time_to_ready(&full, &http).await.1);
        stop(time_to_ready(&empty, &empty_http).await.1);
        let (mut with_keys, mut without) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let (took, child) = time_to_ready(&empty, &empty_http).await;
            stop(child);
            without.push(took);
            let (took, child) = time_to_ready(&full, &http).await;
            stop(child);
            with_keys.push(took);
        }
        let ready = median(with_keys.clone());
        println!(
            "ready to serve ({rounds} starts, spawn to first cacerts answer): {keys} keys median {:.1} ms (max {:.1} ms), empty database median {:.1} ms; target 50 ms: {}",
            ms(ready),
            ms(*with_keys.iter().max().unwrap()),
            ms(median(without)),
            if ready <= Duration::from_millis(50) { "met" } else { "MISSED" }
        );

        // Peak RSS at 256 concurrent enrollments.
        let (_, child) = time_to_ready(&full, &http).await;
        let port = child.port();
        let idle = peak_rss(child.pid()).unwrap_or(0);
        let requests = common::requests(&values);
        let clients: Arc<Vec<reqwest::Client>> = Arc::new(
            (0..SOURCES)
                .map(|n| client_from(&ums_id, std::net::Ipv4Addr::new(127, 0, 0, 2 + n).into()))
                .collect(),
        );
        let gate = Arc::new(tokio::sync::Semaphore::new(CONCURRENT));
        let mut tasks = Vec::with_capacity(ENROLLMENTS);
        let started = Instant::now();
        for index in 0..ENROLLMENTS {
            let (gate, clients, requests) = (gate.clone(), clients.clone(), requests.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.unwrap();
                let (unit, key, csr) = &requests[index];
                let http = &clients[index % clients.len()];
                let response = http
                    .post(format!("https://localhost:{port}/.well-known/est/simpleenroll"))
                    .basic_auth(unit, Some(key))
                    .body(csr.clone())
                    .send()
                    .await
                    .map_err(|e| format!("{:?}", anyhow::Error::from(e)))?;
                match response.status().as_u16() {
                    200 => Ok(()),
                    status => Err(format!("{status}")),
                }
            }));
        }
        let mut failed = 0;
        for task in tasks {
            if let Err(error) = task.await.unwrap() {
                if failed == 0 {
                    eprintln!("first failure: {error}");
                }
                failed += 1;
            }
        }
        let elapsed = started.elapsed();
        let peak = peak_rss(child.pid()).unwrap_or(0);
        let threads = std::fs::read_to_string(format!("/proc/{}/status", child.pid()))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix("Threads:").map(|n| n.trim().to_owned()))
            })
            .unwrap_or_default();
        stop(child);
        assert_eq!(failed, 0, "enrollments failed");
        println!(
            "peak RSS of `serve` over {ENROLLMENTS} enrollments, {CONCURRENT} at a time ({:.0}/s): {:.1} MiB (ready and idle: {:.1} MiB, {threads} threads after); target 16 MiB: {}",
            ENROLLMENTS as f64 / elapsed.as_secs_f64(),
            peak as f64 / MIB,
            idle as f64 / MIB,
            if peak as f64 <= 16.0 * MIB { "met" } else { "MISSED" }
        );
    });
}
