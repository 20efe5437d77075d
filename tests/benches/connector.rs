//! The device connector at scale: a fleet enrolls with one `ums-stub serve` (its own process, so
//! that its memory is its own), then every device holds its connector session, idle, for a while.
//! Prints the server's resident memory before and after the sessions opened and per idle session
//! (goal ≤ 32 KiB), how long the fleet took to connect, and the sessions lost over the idle time
//! (goal 0), each flagged when it misses its goal.
//!
//! `cargo bench -p onboard-tests --bench connector`; ONBOARD_BENCH_DEVICES (default 5000) and
//! ONBOARD_BENCH_IDLE_SECS (default 300). The server runs with its default settings (the session
//! budget, 10,000; the per-source caps, which a fleet on one loopback address meets while it
//! connects) from the release build; the devices ping every 120 s, the agent's default, so a
//! five-minute idle spans two pings of each. The fleet runs in this process: one machine carries
//! both ends.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use onboard_agent::enroll::KeySource;
use onboard_agent::enrolled::connector::ConnectorSettings;
use onboard_agent::lifecycle::BackoffPolicy;
use onboard_protocol::{KeyFile, Limits};
use onboard_tests::fleet::{self, FleetConfig, Outcome};
use onboard_tests::programs::Programs;

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

fn ums_stub(programs: &Programs, data: &Path, args: &[&str]) -> String {
    let output = programs
        .ums_stub()
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("ums-stub runs");
    assert!(
        output.status.success(),
        "ums-stub {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn flag(met: bool) -> &'static str {
    if met { "" } else { "  << MISSES THE GOAL" }
}

fn main() {
    let devices = env_number("ONBOARD_BENCH_DEVICES", 5000) as usize;
    let idle = Duration::from_secs(env_number("ONBOARD_BENCH_IDLE_SECS", 300));
    // The binaries of this profile, built now so a stale one is never measured.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args(["build", "-q", "--release", "-p", "ums-stub", "--bins"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building ums-stub failed");
    let programs = Programs::built().expect("the binaries");
    let files = ums_stub::connections::raise_file_limit();
    assert!(
        files as usize > devices + 256,
        "the open-files limit ({files}) is too low for {devices} sessions"
    );

    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let serve = programs
        .serve()
        .data_dir(&data)
        .start()
        .expect("serve starts");
    ums_stub(&programs, &data, &["keys", "create", "mass"]);
    let stick = root.path().join("icg.xml");
    ums_stub(
        &programs,
        &data,
        &[
            "keys",
            "export",
            "--out",
            stick.to_str().unwrap(),
            "--server",
            &serve.addr().to_string(),
        ],
    );
    let file = KeyFile::parse(&std::fs::read(&stick).unwrap(), &Limits::default()).unwrap();
    let source = KeySource::from_key_file("bench", &file);
    let states = fleet::state_folder("connector-bench-").unwrap();
    let config = FleetConfig {
        devices,
        concurrency: 64,
        source,
        state_root: states.path().to_owned(),
        first_unit: 0x02E0_C500_0000,
        backoff: BackoffPolicy {
            base: Duration::from_millis(200),
            max: Duration::from_secs(5),
        },
        max_passes: 20,
        progress: false,
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        eprintln!("connector bench: enrolling {devices} devices");
        let (runs, took) = fleet::run(&config).await;
        let enrolled = runs
            .iter()
            .filter(|run| matches!(run.outcome, Outcome::Enrolled { .. }))
            .count();
        assert_eq!(enrolled, devices, "every device enrolls");
        eprintln!("connector bench: enrolled in {:.1} s", took.as_secs_f64());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = rss_kib(serve.pid());

        let started = Instant::now();
        let connected = fleet::connect(&config, &runs, ConnectorSettings::default())
            .await
            .unwrap();
        let all = connected
            .wait_all_open(Duration::from_secs(600), false)
            .await;
        let connect_time = started.elapsed();
        assert!(all, "only {} of {devices} connected", connected.open());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = rss_kib(serve.pid());
        let lost_connecting = connected.lost();
        let opened = connected.opened();

        eprintln!("connector bench: {devices} connected; idle for {} s", idle.as_secs());
        let idle_started = Instant::now();
        while idle_started.elapsed() < idle {
            let left = idle.saturating_sub(idle_started.elapsed());
            tokio::time::sleep(left.min(Duration::from_secs(60))).await;
            eprintln!(
                "connector bench: {:>4} s idle, {} open, {} lost, server RSS {} KiB",
                idle_started.elapsed().as_secs(),
                connected.open(),
                connected.lost() - lost_connecting,
                rss_kib(serve.pid())
            );
        }
        let after_idle = rss_kib(serve.pid());
        let lost = connected.lost() - lost_connecting;
        let reconnected = connected.opened() - opened;
        let per_session = (after.saturating_sub(before)) as f64 / devices as f64;
        println!("device connector, {devices} devices on one server (release build, default settings, ping 120 s)");
        println!(
            "  connected in {:.1} s ({:.0} sessions/s); {} sessions opened (retries while connecting included)",
            connect_time.as_secs_f64(),
            devices as f64 / connect_time.as_secs_f64(),
            opened
        );
        println!(
            "  server RSS {:.1} MiB before, {:.1} MiB with every session open, {:.1} MiB after {} s idle",
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            after_idle as f64 / 1024.0,
            idle.as_secs()
        );
        println!(
            "  memory per idle session {per_session:.1} KiB (goal <= 32){}",
            flag(per_session <= 32.0)
        );
        println!(
            "  sessions lost over {} s idle: {lost} (goal 0), reconnections {reconnected}{}",
            idle.as_secs(),
            flag(lost == 0)
        );
        connected.stop().await;
    });
    serve.terminate().unwrap();
}
