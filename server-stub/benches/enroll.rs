//! Benchmark: EST enrollments per second over a new TLS connection each, against the bare TLS
//! handshake rate of the same server in the same run.
//!
//! `cargo bench -p ums-stub --bench enroll` starts an in-process server on loopback (SQLite store
//! in a temporary data directory, synchronous=FULL), creates one one-time key per device, and for
//! concurrency 64 and 256: runs bare TLS handshakes (connect, handshake, close) and enrollments
//! (connect, handshake, POST simpleenroll, certificate back), each over a fresh connection with TLS
//! session resumption off. It prints the rates, p50 and p99 latency, errors, and the ratio of
//! enrollments to handshakes, the physical ceiling. Client and server share the machine's cores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use onboard_protocol::est;
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::sync::Semaphore;
use ums_stub::config::Settings;
use ums_stub::http::Shared;
use ums_stub::rate_limit::{Limits, RateLimiter};
use ums_stub::store::{Actor, PageRequest};
use ums_stub::stub::Stub;

const PER_RUN: usize = 2000;

fn client_config(ums_id: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ums_id.to_vec())).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(ums_stub::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

struct Run {
    rate: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

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
    latencies.sort();
    Run {
        rate: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        errors,
    }
}

fn main() {
    let quick = !std::env::args().any(|arg| arg == "--bench");
    let per_run = if quick { 20 } else { PER_RUN };
    let levels: &[usize] = if quick { &[8] } else { &[64, 256] };
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
        let admin = stub.keys();
        let ids = admin
            .create_one_time(devices, "", Box::new(|_| {}), &Actor::cli())
            .await
            .unwrap();
        let keys: Vec<String> = admin
            .list(&Default::default(), &PageRequest::all(), true)
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|view| ids.contains(&view.id))
            .map(|view| view.key)
            .collect();
        let hosts = vec!["localhost".to_owned()];
        let tls = ums_stub::tls::server_config(&settings.data_dir, &stub.ums_id, &hosts, Default::default(), time::Duration::days(365)).unwrap();
        let ums_id = stub.ums_id.certificate_der().to_vec();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits { per_source: u32::MAX, per_unit: u32::MAX, window: Duration::from_secs(1) };
        let shared = Arc::new(Shared { stub, limiter: RateLimiter::new(limits), logins: RateLimiter::new(limits), certificate_lifetime: time::Duration::days(365), connector: ums_stub::connector::Sessions::new(Default::default(), ums_stub::connections::file_limit(), 4096) });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(ums_stub::serve::run(shared, listener, tls, async {
            let _ = stopped.await;
        }));

        // Device key pairs and requests are made before timing.
        let csrs: Arc<Vec<(String, String, String)>> = Arc::new(
            (0..devices)
                .map(|n| {
                    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
                    let csr = CertificateParams::new(Vec::<String>::new()).unwrap().serialize_request(&key).unwrap();
                    (format!("0A{n:010X}"), keys[n].clone(), est::encode_base64(csr.der()))
                })
                .collect(),
        );
        let config = client_config(&ums_id);
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured((*config).clone())
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();

        if !quick {
            println!("enrollment benchmark: {per_run} per run, new TLS connection each, loopback, 2 cores shared by client and server");
            println!("{:>11} {:>14} {:>16} {:>9} {:>9} {:>7} {:>7}", "concurrency", "handshakes/s", "enrollments/s", "p50", "p99", "errors", "ratio");
        }
        for (level_index, &concurrency) in levels.iter().enumerate() {
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            let handshakes = run(per_run, concurrency, move |_| {
                let connector = connector.clone();
                async move {
                    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
                    let name = ServerName::try_from("localhost").unwrap();
                    let tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
                    drop(tls);
                    Ok(())
                }
            })
            .await;
            let (http, csrs) = (http.clone(), csrs.clone());
            let offset = level_index * per_run;
            let enrollments = run(per_run, concurrency, move |index| {
                let (http, csrs) = (http.clone(), csrs.clone());
                async move {
                    let (unit, key, csr) = &csrs[offset + index];
                    let response = http
                        .post(format!("https://localhost:{}/.well-known/est/simpleenroll", addr.port()))
                        .basic_auth(unit, Some(key))
                        .body(csr.clone())
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    let status = response.status();
                    let body = response.bytes().await.map_err(|e| e.to_string())?;
                    if status != 200 {
                        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
                    }
                    est::parse_certs_only(&est::decode_base64(&body).map_err(|e| e.to_string())?)
                        .map_err(|e| e.to_string())?;
                    Ok(())
                }
            })
            .await;
            if !quick {
                let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
                println!(
                    "{concurrency:>11} {:>14.0} {:>16.0} {:>9} {:>9} {:>7} {:>7.2}",
                    handshakes.rate,
                    enrollments.rate,
                    ms(enrollments.p50),
                    ms(enrollments.p99),
                    enrollments.errors + handshakes.errors,
                    enrollments.rate / handshakes.rate
                );
            }
            assert_eq!(enrollments.errors, 0, "enrollments failed");
        }
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    });
}
