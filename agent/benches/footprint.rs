//! The agent's footprint: `cargo bench -p onboard-agent --bench footprint`.
//!
//! Builds the agent as device images build it (`cargo build --profile device -p onboard-agent`:
//! the release profile with `opt-level = "z"`, LTO, one codegen unit, `panic = "abort"`, stripped,
//! and only the agent's own features) and prints three figures, each against its target and
//! flagged when it falls short:
//!
//! - the binary's size on disk (target: 4.0 MiB or less);
//! - the peak resident set (VmHWM) of `onboard-agent run` over start-up, an enrollment, the
//!   inventory report and idling after it, median of the runs (target: 6 MiB or less);
//! - the time from a key file appearing on a watched stick to `state.json` saying `enrolled`, on
//!   loopback against an in-process `ums-stub`, median of the runs (target: 50 ms or less, the
//!   watcher's settling included).
//!
//! ROUNDS runs (default 10), each a new state directory, stick and one-time key. `state.json` is
//! watched by polling every millisecond, so the times are up to 1 ms late.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use onboard_protocol::Format;
use ums_stub::rate_limit::Limits;
use ums_stub::store::Actor;

const MIB: f64 = 1024.0 * 1024.0;

/// Builds the agent with the `device` profile and returns the binary's path.
fn device_build() -> std::path::PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "build",
            "--profile",
            "device",
            "-p",
            "onboard-agent",
            "--bin",
            "onboard-agent",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("cannot run cargo");
    assert!(output.status.success(), "the device build failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|message| message.get("executable")?.as_str().map(Into::into))
        .next_back()
        .expect("cargo named no executable")
}

/// `met` or `MISSED`.
fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// The peak resident set of a running process, from /proc, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn enrolled(state_dir: &Path) -> bool {
    std::fs::read(state_dir.join("state.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|state| state["phase"]["name"] == "enrolled")
}

fn inventory_reported(state_dir: &Path) -> bool {
    std::fs::read(state_dir.join("state.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|state| state["inventory_reported_at"].is_string())
}

/// `onboard-agent run` over `dir`: its config, state and one mount root. Returns once it logs
/// that it watches for sticks.
fn start_agent(bin: &Path, dir: &Path, unit: &str) -> Child {
    std::fs::create_dir_all(dir.join("media")).unwrap();
    std::fs::write(dir.join("agent.toml"), "").unwrap();
    let mut child = Command::new(bin)
        .env("RUST_LOG", "info")
        .arg("--config")
        .arg(dir.join("agent.toml"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--unit-id", unit, "run", "--mount-root"])
        .arg(dir.join("media"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (watching, started) = mpsc::channel();
    // Drains the log for the agent's whole life.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("watching for sticks") {
                let _ = watching.send(());
            }
        }
    });
    started
        .recv_timeout(Duration::from_secs(10))
        .expect("the agent did not start watching within 10 s");
    child
}

fn wait_until(what: &str, deadline: Duration, mut test: impl FnMut() -> bool) -> Instant {
    let start = Instant::now();
    loop {
        if test() {
            return Instant::now();
        }
        assert!(start.elapsed() < deadline, "not {what} within {deadline:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(10);
    let bin = device_build();
    let size = std::fs::metadata(&bin).unwrap().len();
    println!(
        "binary: {}\n  size {:.2} MiB ({size} bytes); target 4.0 MiB: {}",
        bin.display(),
        size as f64 / MIB,
        verdict(size <= 4 * 1024 * 1024)
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(async {
        ums_stub::testing::TestServer::builder()
            .hosts(&["127.0.0.1"])
            .without_rig()
            .settings(|settings| {
                settings.rate_limits = Limits {
                    per_source: 1_000_000,
                    per_unit: 1_000_000,
                    window: Duration::from_secs(60),
                };
            })
            .start()
            .await
            .unwrap()
    });
    let keys = server.shared().stub.keys();

    let mut times = Vec::with_capacity(rounds);
    let mut peaks = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        let unit = format!("00E0C5{round:06X}");
        let file = runtime.block_on(async {
            let ids = keys
                .create_one_time(1, "", Box::new(|_| {}), &Actor::cli())
                .await
                .unwrap();
            keys.export(&ids, vec![server.server()], server.fingerprint())
                .await
                .unwrap()
                .write(Format::Xml)
        });
        let mut agent = start_agent(&bin, dir.path(), &unit);
        // The stick appears whole, as a mount makes it appear.
        let staging = dir.path().join("STICK");
        std::fs::create_dir(&staging).unwrap();
        std::fs::write(staging.join("icg.xml"), &file).unwrap();
        let start = Instant::now();
        std::fs::rename(&staging, dir.path().join("media/STICK")).unwrap();
        let done = wait_until("enrolled", Duration::from_secs(20), || {
            enrolled(&dir.path().join("state"))
        });
        times.push(done - start);
        wait_until("reported", Duration::from_secs(20), || {
            inventory_reported(&dir.path().join("state"))
        });
        std::thread::sleep(Duration::from_millis(100));
        peaks.push(peak_rss(agent.id()).unwrap_or(0));
        let _ = ums_stub::testing::send_signal(agent.id(), ums_stub::testing::Signal::SIGTERM);
        let status = agent.wait().unwrap();
        assert!(status.success(), "the agent did not stop cleanly: {status}");
    }
    times.sort();
    peaks.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (peak, time) = (peaks[rounds / 2], times[rounds / 2]);
    println!(
        "peak RSS of `run` over an enrollment ({rounds} runs): median {:.1} MiB, max {:.1} MiB; target 6 MiB: {}",
        peak as f64 / MIB,
        peaks[rounds - 1] as f64 / MIB,
        verdict(peak as f64 <= 6.0 * MIB)
    );
    println!(
        "key file appearing -> state stored ({rounds} runs): min {:.1} ms, median {:.1} ms, max {:.1} ms; target 50 ms: {}",
        ms(times[0]),
        ms(time),
        ms(times[rounds - 1]),
        verdict(time <= Duration::from_millis(50))
    );
    runtime.block_on(server.stop()).unwrap();
}
