//! A shared stick of one-time keys against one mass key, in one run: for each fleet size
//! (ONBOARD_BENCH_FLEETS, default "1000,5000") a fleet enrolls from a stick of as many one-time
//! keys, then an equal fleet from one mass key, each against a fresh in-process server with the
//! default limits, at concurrency 64. Prints enrollments per second, p99 and the keys refused on
//! the way, the one-time rate as a share of the mass-key rate (goal >= 0.9) and the one-time p99
//! (goal < 250 ms), flagging each miss.
//!
//! `cargo bench -p onboard-tests --bench fleet`. The fleet and the server share the machine's
//! cores; the devices keep their state on /dev/shm when it exists.

use std::time::Duration;

use onboard_agent::lifecycle::BackoffPolicy;
use onboard_protocol::KeyKind;
use onboard_tests::fleet::{self, FleetConfig, ServerLimits, Summary};

async fn fleet_of(devices: usize, kind: KeyKind) -> Summary {
    let dir = tempfile::tempdir().unwrap();
    let keys = if kind == KeyKind::MassDeployment {
        1
    } else {
        devices
    };
    let (running, source) = fleet::own_server(dir.path(), kind, keys, ServerLimits::Defaults)
        .await
        .unwrap();
    let states = fleet::state_folder("fleet-bench-").unwrap();
    let config = FleetConfig {
        devices,
        concurrency: 64,
        source: source.clone(),
        state_root: states.path().to_owned(),
        first_unit: 0x02E0_C500_0000,
        backoff: BackoffPolicy {
            base: Duration::from_millis(200),
            max: Duration::from_secs(5),
        },
        max_passes: 20,
        progress: false,
    };
    let (runs, elapsed) = fleet::run(&config).await;
    let summary = Summary::of(&runs, &source, elapsed);
    running.stop().await.unwrap();
    assert_eq!(summary.enrolled, devices, "every device enrolls");
    assert!(
        summary.keys_used_twice.is_empty(),
        "no key serves two devices"
    );
    summary
}

fn flag(met: bool) -> &'static str {
    if met { "" } else { "  << MISSES THE GOAL" }
}

fn main() {
    let sizes: Vec<usize> = std::env::var("ONBOARD_BENCH_FLEETS")
        .unwrap_or_else(|_| "1000,5000".to_owned())
        .split(',')
        .filter_map(|text| text.trim().parse().ok())
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for devices in sizes {
            let shared = fleet_of(devices, KeyKind::OneTime).await;
            let mass = fleet_of(devices, KeyKind::MassDeployment).await;
            let ratio = shared.enrollments_per_second / mass.enrollments_per_second;
            println!("{devices} devices, concurrency 64, default limits:");
            println!(
                "  one-time keys on a shared stick: {:.0}/s, p50 {:.0} ms, p99 {:.0} ms, {} keys refused on the way",
                shared.enrollments_per_second, shared.p50_ms, shared.p99_ms, shared.keys_refused
            );
            println!(
                "  one mass key:                    {:.0}/s, p50 {:.0} ms, p99 {:.0} ms",
                mass.enrollments_per_second, mass.p50_ms, mass.p99_ms
            );
            println!(
                "  one-time rate {ratio:.2} of the mass-key rate (goal >= 0.9){}",
                flag(ratio >= 0.9)
            );
            println!(
                "  one-time p99 {:.0} ms (goal < 250){}",
                shared.p99_ms,
                flag(shared.p99_ms < 250.0)
            );
        }
    });
}
