//! Distributed UMS against the embedded store, in one run: a fleet of simulated devices on one
//! server with SQLite, then the same fleet on two servers sharing one PostgreSQL database (a
//! throwaway cluster), half the devices with a stick naming A first and half B first. Prints
//! enrollments per second, p50 and p99 of each, the ratio of the two, the time PostgreSQL spent
//! executing statements (its share of the distributed run), and how many keys served more than
//! one device (must be 0).
//!
//! `cargo bench -p onboard-tests --bench distributed` (ONBOARD_BENCH_DEVICES, default 1000;
//! concurrency 64 in all, 32 per server in the distributed run). Both runs use the servers'
//! default limits, in the bench profile; one machine carries the servers, the database and the
//! fleet, so the figures compare the two set-ups, not what separate machines would do.

use std::time::{Duration, Instant};

use onboard_agent::enroll::KeySource;
use onboard_agent::lifecycle::BackoffPolicy;
use onboard_tests::fleet::{self, DeviceRun, FleetConfig, Summary};
use onboard_tests::postgres::PgCluster;
use ums_stub::store::Actor;
use ums_stub::testing::TestServer;

fn fleet_config(
    source: KeySource,
    devices: usize,
    concurrency: usize,
    root: &std::path::Path,
    first: u64,
) -> FleetConfig {
    FleetConfig {
        devices,
        concurrency,
        source,
        state_root: root.to_owned(),
        first_unit: first,
        backoff: BackoffPolicy {
            base: Duration::from_millis(200),
            max: Duration::from_secs(5),
        },
        max_passes: 20,
        progress: false,
    }
}

/// A plain server (no test-rig mode) over the data directory `dir`, through `ums_stub::testing`;
/// on the PostgreSQL database `url` with the cluster secret `secret` when given.
async fn server(dir: &std::path::Path, database: Option<(&str, &std::path::Path)>) -> TestServer {
    let mut builder = TestServer::builder()
        .data_dir(dir)
        .hosts(&["127.0.0.1"])
        .without_rig();
    if let Some((url, secret)) = database {
        let secret = secret.to_owned();
        builder = builder
            .postgres(url)
            .settings(move |settings| settings.cluster_secret = Some(secret));
    }
    builder.start().await.unwrap()
}

/// One-time keys `ids` of `running` as a stick naming `servers` in order.
async fn stick(running: &TestServer, ids: &[i64], servers: &[&TestServer]) -> KeySource {
    let servers = servers.iter().map(|server| server.server()).collect();
    let file = running
        .shared()
        .stub
        .keys()
        .export(ids, servers, running.fingerprint())
        .await
        .unwrap();
    KeySource::from_key_file("bench", &file)
}

/// Keys that more than one device recorded in the server's store.
async fn keys_used_twice(running: &TestServer) -> usize {
    let devices = running.devices().await.unwrap();
    let mut per_key = std::collections::HashMap::new();
    for device in devices {
        if let Some(key) = device.key_id {
            *per_key.entry(key).or_insert(0usize) += 1;
        }
    }
    per_key.values().filter(|count| **count > 1).count()
}

fn line(name: &str, summary: &Summary) {
    println!(
        "{name:<34} {:>5}/{:<5} enrolled  {:>7.1} enrollments/s  p50 {:>6.0} ms  p99 {:>6.0} ms",
        summary.enrolled,
        summary.devices,
        summary.enrollments_per_second,
        summary.p50_ms,
        summary.p99_ms
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let devices: usize = std::env::var("ONBOARD_BENCH_DEVICES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(1000);
    let root = tempfile::tempdir().unwrap();

    // One server, SQLite.
    let single = server(&root.path().join("single"), None).await;
    let ids = single
        .shared()
        .stub
        .keys()
        .create_one_time(devices, "bench", Box::new(|_| {}), &Actor::cli())
        .await
        .unwrap();
    let source = stick(&single, &ids, &[&single]).await;
    let (runs, elapsed) = fleet::run(&fleet_config(
        source.clone(),
        devices,
        64,
        &root.path().join("fleet-sqlite"),
        0x02E0_C500_0000,
    ))
    .await;
    let sqlite = Summary::of(&runs, &source, elapsed);
    let sqlite_twice = keys_used_twice(&single).await;
    single.stop().await.unwrap();

    // Two servers, one PostgreSQL database.
    let cluster = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    let url = cluster.database();
    let secret = root.path().join("cluster.secret");
    ums_stub::cluster::ClusterSecret::create(&secret).unwrap();
    let a = server(&root.path().join("a"), Some((&url, &secret))).await;
    let b = server(&root.path().join("b"), Some((&url, &secret))).await;
    let ids = a
        .shared()
        .stub
        .keys()
        .create_one_time(devices, "bench", Box::new(|_| {}), &Actor::cli())
        .await
        .unwrap();
    let half = devices / 2;
    let first_a = stick(&a, &ids[..half], &[&a, &b]).await;
    let first_b = stick(&a, &ids[half..], &[&b, &a]).await;
    let config_a = fleet_config(
        first_a.clone(),
        half,
        32,
        &root.path().join("fleet-a"),
        0x02E0_C600_0000,
    );
    let config_b = fleet_config(
        first_b.clone(),
        devices - half,
        32,
        &root.path().join("fleet-b"),
        0x02E0_C700_0000,
    );
    // PostgreSQL counts the milliseconds its backends spent executing statements.
    let busy = "SELECT active_time FROM pg_stat_database WHERE datname = current_database()";
    let busy_before: f64 = cluster.query(&url, busy).parse().unwrap_or(0.0);
    let started = Instant::now();
    let (runs_a, runs_b) = tokio::join!(fleet::run(&config_a), fleet::run(&config_b));
    let elapsed = started.elapsed();
    // The statistics reach the view from each backend within a second or so.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let busy_ms = cluster.query(&url, busy).parse().unwrap_or(0.0) - busy_before;
    let summary_a = Summary::of(&runs_a.0, &first_a, elapsed);
    let summary_b = Summary::of(&runs_b.0, &first_b, elapsed);
    let mut all: Vec<DeviceRun> = runs_a.0;
    all.extend(runs_b.0);
    let mut keys = first_a.keys().to_vec();
    keys.extend_from_slice(first_b.keys());
    let both = KeySource::new(
        first_a.origin.clone(),
        first_a.servers.clone(),
        first_a.ums_id.clone(),
        keys,
    );
    let mut distributed = Summary::of(&all, &both, elapsed);
    // Each half's keys are indexed from 0 in their own stick: count uses twice per half.
    distributed.keys_used_twice = summary_a
        .keys_used_twice
        .iter()
        .chain(summary_b.keys_used_twice.iter())
        .copied()
        .collect();
    let pg_twice = keys_used_twice(&a).await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    drop(cluster);

    println!("fleet of {devices} devices on {devices} one-time keys, default server limits");
    line("one server, SQLite (c=64)", &sqlite);
    line("two servers, one PostgreSQL (c=2x32)", &distributed);
    println!(
        "ratio two-on-PostgreSQL / one-on-SQLite: {:.2} of the rate; keys serving two devices: \
         {} on SQLite, {} on PostgreSQL",
        distributed.enrollments_per_second / sqlite.enrollments_per_second.max(f64::MIN_POSITIVE),
        sqlite_twice,
        pg_twice
    );
    println!(
        "PostgreSQL busy executing statements: {:.1} s of {:.1} s wall time ({:.0}% of one core; \
         {:.2} ms per enrollment)",
        busy_ms / 1000.0,
        elapsed.as_secs_f64(),
        busy_ms / 10.0 / elapsed.as_secs_f64(),
        busy_ms / distributed.enrolled.max(1) as f64
    );
    assert_eq!(sqlite_twice + pg_twice, 0, "a key served two devices");
}
