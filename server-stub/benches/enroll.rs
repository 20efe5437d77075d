//! Benchmark: EST enrollments per second over a new TLS connection each, against the bare TLS
//! handshake rate of the same server in the same run.
//!
//! `cargo bench -p ums-stub --bench enroll` starts an in-process server on loopback (SQLite store
//! in a temporary data directory, its default durability), creates one one-time key per device, and
//! for concurrency 64 and 256 runs, each over a fresh connection with TLS session resumption off:
//! - bare TLS handshakes (connect, handshake, close), the physical ceiling;
//! - enrollments (connect, handshake, POST simpleenroll, certificate back);
//! - refusals (the same, presenting a key another device has used).
//!
//! The three alternate in rounds, so that the machine's noise falls on all of them alike. It prints
//! the rates, p50 and p99 latency, errors, the ratio of enrollments to handshakes (flagged when under
//! the 0.7 goal), and the refusal rate. Client and server share the machine's cores.
//!
//! Then, on the store alone (no TLS, no signing), one attempt at a time: the cost of one enrollment
//! (decide, consume, record the device, commit, fsync) against one refusal (decide, audit line,
//! commit, no fsync of its own), with the fsyncs the writer made for each.
//!
//! `ONLY=handshakes`, `ONLY=enrollments` or `ONLY=refusals` times that kind alone, for a profile
//! of it (`perf record`); `LEVELS=64` picks the concurrency levels.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use onboard_protocol::KeyKind;
use onboard_protocol::est;
use rustls::pki_types::ServerName;
use tokio::sync::Semaphore;
use ums_stub::ca::{IssueOnce, IssuedCertificate};
use ums_stub::config::Settings;
use ums_stub::http::Shared;
use ums_stub::rate_limit::{Limits, RateLimiter};
use ums_stub::store::{Actor, EnrollAttempt, EnrollOutcome, MakeKey, NewKey, SqliteStore, Store};
use ums_stub::stub::Stub;

const PER_RUN: usize = 2000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// The jobs of one kind over all rounds.
#[derive(Default)]
struct Run {
    latencies: Vec<Duration>,
    elapsed: Duration,
    errors: usize,
}

impl Run {
    fn add(&mut self, other: Run) {
        self.latencies.extend(other.latencies);
        self.elapsed += other.elapsed;
        self.errors += other.errors;
    }

    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at `p`; zero when this kind was not run (`ONLY`).
    fn percentile(&mut self, p: f64) -> Duration {
        self.latencies.sort();
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        percentile(&self.latencies, p)
    }
}

/// Rounds each kind of job is split into, alternating.
const ROUNDS: usize = 4;

/// Runs `jobs` at `concurrency`; each job returns its latency or an error.
async fn run<F, Fut>(jobs: usize, concurrency: usize, job: F) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let job = Arc::new(job);
    let gate = Arc::new(Semaphore::new(concurrency));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(jobs);
    for index in 0..jobs {
        let (job, gate) = (job.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            let began = Instant::now();
            job(index).await.map(|()| began.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(jobs);
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        match task.await.unwrap() {
            Ok(latency) => latencies.push(latency),
            Err(error) => {
                errors += 1;
                first_error.get_or_insert(error);
            }
        }
    }
    let elapsed = start.elapsed();
    if let Some(error) = first_error {
        eprintln!("first error: {error}");
    }
    Run {
        latencies,
        elapsed,
        errors,
    }
}

type Csrs = Arc<Vec<common::Request>>;

/// A job enrolling device `offset + index` of `csrs` (under unit ID prefix `other`, when given, in
/// place of its own), expecting HTTP `expect`. It connects exactly as a bare handshake does (the
/// same connector, an address, no name lookup) and speaks HTTP/1.1 with hyper's client, so the two
/// differ only by the enrollment.
fn enroll(
    connector: tokio_rustls::TlsConnector,
    addr: std::net::SocketAddr,
    csrs: Csrs,
    offset: usize,
    other: Option<&'static str>,
    expect: u16,
) -> impl Fn(usize) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
+ Send
+ Sync
+ 'static {
    use base64::Engine as _;
    use http_body_util::BodyExt as _;
    move |index| {
        let (connector, csrs) = (connector.clone(), csrs.clone());
        Box::pin(async move {
            let (unit, key, csr) = &csrs[offset + index];
            let unit = match other {
                Some(prefix) => format!("{prefix}{}", &unit[2..]),
                None => unit.clone(),
            };
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| e.to_string())?;
            let _ = tcp.set_nodelay(true);
            let tls = connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .map_err(|e| e.to_string())?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .map_err(|e| e.to_string())?;
            let driving = tokio::spawn(connection);
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{unit}:{key}"));
            let request = hyper::Request::post("/.well-known/est/simpleenroll")
                .header(hyper::header::HOST, "localhost")
                .header(hyper::header::AUTHORIZATION, format!("Basic {basic}"))
                .header(hyper::header::CONTENT_TYPE, "application/pkcs10")
                .body(http_body_util::Full::new(bytes::Bytes::from(csr.clone())))
                .unwrap();
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            drop(sender);
            let _ = driving.await;
            if status != expect {
                return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
            }
            if expect == 200 {
                est::parse_certs_only(&est::decode_base64(&body).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        })
    }
}

/// Attempts on the store alone, one at a time: one enrollment against one refusal.
const STORE_ATTEMPTS: usize = 300;

/// Times [`STORE_ATTEMPTS`] enrollments and as many refusals, one at a time, on a SQLite store of
/// its own at `database` (the server's default backend and durability), with the fsyncs its
/// writer made for each kind.
async fn store_costs(database: std::path::PathBuf) {
    let sqlite = tokio::task::spawn_blocking(move || SqliteStore::open(&database))
        .await
        .unwrap()
        .unwrap();
    let sqlite = Arc::new(sqlite);
    let store = sqlite.clone() as Arc<dyn Store>;
    let lookup = |n: usize| {
        let mut digest = [0u8; 32];
        digest[..8].copy_from_slice(&(n as u64).to_be_bytes());
        digest[31] = 0x5A;
        digest
    };
    let make: MakeKey = Box::new(move |index| NewKey {
        kind: KeyKind::OneTime,
        lookup: lookup(index),
        sealed: vec![0; 40],
        unit_id: None,
        comment: String::new(),
        generated: true,
        limits: ums_stub::claim::Limits::default(),
        folder: None,
    });
    store
        .insert_keys(STORE_ATTEMPTS, make, Box::new(|_| {}), &Actor::cli())
        .await
        .unwrap();
    let attempt = |n: usize, unit: &str| EnrollAttempt {
        unit_id: format!("{unit}{n:010X}").parse().unwrap(),
        lookup: lookup(n),
        alternates: Vec::new(),
        public_key: vec![n as u8; 65],
        source: "192.0.2.1".to_owned(),
        lapsed_before: time::OffsetDateTime::now_utc() - time::Duration::days(365),
    };
    let issue = |n: usize| -> IssueOnce {
        Box::new(move || {
            Ok(IssuedCertificate {
                der: vec![n as u8; 600],
                serial: format!("{n:016x}"),
                not_after: time::OffsetDateTime::now_utc() + time::Duration::days(365),
            })
        })
    };
    let mut enrolled = Vec::with_capacity(STORE_ATTEMPTS);
    let mut refused = Vec::with_capacity(STORE_ATTEMPTS);
    let (mut enroll_syncs, mut refusal_syncs) = (0, 0);
    for n in 0..STORE_ATTEMPTS {
        let syncs = sqlite.wal_syncs();
        let began = Instant::now();
        let outcome = store.enroll(attempt(n, "0C"), issue(n)).await.unwrap();
        enrolled.push(began.elapsed());
        assert!(
            matches!(
                outcome,
                EnrollOutcome::Issued {
                    repeated: false,
                    ..
                }
            ),
            "{outcome:?}"
        );
        enroll_syncs += sqlite.wal_syncs() - syncs;
        let syncs = sqlite.wal_syncs();
        let began = Instant::now();
        let outcome = store.enroll(attempt(n, "0D"), issue(n)).await.unwrap();
        refused.push(began.elapsed());
        assert!(matches!(outcome, EnrollOutcome::Refused(_)), "{outcome:?}");
        refusal_syncs += sqlite.wal_syncs() - syncs;
    }
    enrolled.sort();
    refused.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let (enroll_p50, refuse_p50) = (
        us(percentile(&enrolled, 0.5)),
        us(percentile(&refused, 0.5)),
    );
    println!();
    println!(
        "store alone (no TLS, no signing), one attempt at a time, {STORE_ATTEMPTS} each, alternating:"
    );
    println!(
        "{:>11} {:>10} {:>10} {:>14}",
        "", "p50", "p99", "WAL fsyncs"
    );
    println!(
        "{:>11} {:>7.0} us {:>7.0} us {:>14}",
        "enrollment",
        enroll_p50,
        us(percentile(&enrolled, 0.99)),
        enroll_syncs
    );
    println!(
        "{:>11} {:>7.0} us {:>7.0} us {:>14}",
        "refusal",
        refuse_p50,
        us(percentile(&refused, 0.99)),
        refusal_syncs
    );
    println!(
        "one refusal costs {:.2} of one enrollment (p50)",
        refuse_p50 / enroll_p50
    );
}

/// Whether this run times `kind`: all of them, unless `ONLY` names one (to profile it alone with
/// `perf record`; refusals need the enrollments before them).
fn wants(kind: &str) -> bool {
    std::env::var("ONLY").map_or(true, |only| only == kind)
}

fn main() {
    let quick = !std::env::args().any(|arg| arg == "--bench");
    let per_run = if quick { 20 } else { PER_RUN };
    let chosen: Vec<usize> = std::env::var("LEVELS")
        .ok()
        .map(|text| {
            text.split(',')
                .filter_map(|level| level.trim().parse().ok())
                .collect()
        })
        .unwrap_or_else(|| vec![64, 256]);
    let levels: &[usize] = if quick { &[8] } else { &chosen };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::load(dir.path().join("data"), None).unwrap();
        // 256 devices on one loopback address: no per-source connection caps.
        settings.connections.per_source = usize::MAX;
        settings.connections.handshakes_per_source = usize::MAX;
        let stub = Stub::open(settings.clone()).await.unwrap();
        let devices = per_run * levels.len();
        let keys = common::one_time_keys(&stub.keys(), devices).await;
        let hosts = vec!["localhost".to_owned()];
        let tls = ums_stub::tls::server_config(&settings.data_dir, &stub.ums_id, &hosts, Default::default(), time::Duration::days(365), ums_stub::rig::Clock::system()).unwrap();
        let ums_id = stub.ums_id.certificate_der().to_vec();
        let listener = ums_stub::serve::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits { per_source: u32::MAX, per_unit: u32::MAX, window: Duration::from_secs(1) };
        let shared = Arc::new(Shared { stub, limiter: RateLimiter::new(limits), logins: ums_stub::login_limit::LoginLimiter::new(Default::default()), certificate_lifetime: time::Duration::days(365), connector: ums_stub::connector::Sessions::new(Default::default(), ums_stub::connections::file_limit(), 4096, Vec::new()), metrics: Default::default(), rig: None, strict: None });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(ums_stub::serve::run(shared, listener, tls, async {
            let _ = stopped.await;
        }));

        // Device key pairs and requests are made before timing.
        let csrs = common::requests(&keys);
        let config = Arc::new(common::client_config(&ums_id));

        if !quick {
            println!("enrollment benchmark: {per_run} per run, new TLS connection each (resumption off), loopback, 2 cores shared by client and server, {ROUNDS} alternating rounds");
            println!("{:>11} {:>13} {:>14} {:>8} {:>8} {:>11} {:>7} {:>7}", "concurrency", "handshakes/s", "enrollments/s", "p50", "p99", "refusals/s", "errors", "ratio");
        }
        let chunk = per_run / ROUNDS;
        for (level_index, &concurrency) in levels.iter().enumerate() {
            let (mut handshakes, mut enrollments, mut refusals) = (Run::default(), Run::default(), Run::default());
            for round in 0..ROUNDS {
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                if wants("handshakes") { handshakes.add(run(chunk, concurrency, move |_| {
                    let connector = connector.clone();
                    async move {
                        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
                        let name = ServerName::try_from("localhost").unwrap();
                        let tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
                        drop(tls);
                        Ok(())
                    }
                })
                .await); }
                let offset = level_index * per_run + round * chunk;
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                if wants("enrollments") || wants("refusals") { enrollments.add(run(chunk, concurrency, enroll(connector.clone(), addr, csrs.clone(), offset, None, 200)).await); }
                // The keys just used, presented again under other unit IDs: refused as used.
                if wants("refusals") { refusals.add(run(chunk, concurrency, enroll(connector, addr, csrs.clone(), offset, Some("0B"), 403)).await); }
            }
            if !quick {
                let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
                let ratio = enrollments.rate() / handshakes.rate();
                println!(
                    "{concurrency:>11} {:>13.0} {:>14.0} {:>8} {:>8} {:>11.0} {:>7} {:>7.2}{}",
                    handshakes.rate(),
                    enrollments.rate(),
                    ms(enrollments.percentile(0.50)),
                    ms(enrollments.percentile(0.99)),
                    refusals.rate(),
                    enrollments.errors + handshakes.errors + refusals.errors,
                    ratio,
                    if ratio.is_nan() { "" } else if ratio < 0.7 { "  MISSES the 0.7 goal" } else { "  meets the 0.7 goal" },
                );
            }
            assert_eq!(enrollments.errors + refusals.errors, 0, "enrollments or refusals failed");
        }
        if !quick {
            store_costs(dir.path().join("store-costs.db")).await;
        }
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    });
}
