//! Idle wake-ups of the stick watcher, in real time: `cargo bench -p onboard-agent --bench idle`.
//!
//! Runs `run`'s loop in-process on a current-thread runtime (as the binary does) over a mount root
//! holding one stick, lets it settle, then counts over a quiet window (IDLE_SECS, default 5 s) the
//! agent's own wake-ups and rescans and every thread's context switches from /proc. Then it makes
//! one change to show the counters do move. The test suite checks the same on tokio's paused
//! clock (`watch::the_watcher_does_not_wake_while_nothing_happens`).
//!
//! Then the same for an enrolled device holding its device connector session with an in-process
//! `ums-stub` (on a runtime of its own): with the default ping interval (120 s) the connector
//! does not wake in the window; with a 1 s ping it wakes twice per ping (to send it, to read the
//! pong), which shows the counter moves. The test suite checks the same in real time
//! (`connector::a_connected_agent_wakes_only_to_ping_and_read_the_pong`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use onboard_agent::config::{Overrides, RawConfig};
use onboard_agent::daemon::{self, Observer};
use onboard_protocol::{Fingerprint, FirstAuthKey, Format, KeyEntry, KeyFile, KeyKind, Server};

/// Context switches (voluntary + involuntary) per thread of this process, by "tid name".
fn switches() -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let count: u64 = status
            .lines()
            .filter(|line| line.contains("ctxt_switches"))
            .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        out.insert(
            format!("{} {}", task.file_name().to_string_lossy(), name.trim()),
            count,
        );
    }
    out
}

fn key_file() -> String {
    let fingerprint: Fingerprint =
        "3f1a9c0e5b7d2468ace013579bdf2468a1b2c3d4e5f60718293a4b5c6d7e8f90"
            .parse()
            .unwrap();
    // Bound to another device: the agent finds it, has nothing to present, and goes idle.
    let keys = vec![KeyEntry::device_bound(
        FirstAuthKey::new("40512337860129621").unwrap(),
        "00E0C5000001".parse().unwrap(),
    )];
    let servers = vec![Server::new("127.0.0.1", 1).unwrap()];
    KeyFile::new(servers, fingerprint, keys, None).write(Format::Xml)
}

/// Agent settings for a device `unit` whose one mount root is `root` (state in `root/state`).
fn settings_for(root: &std::path::Path, unit: &str) -> onboard_agent::config::Settings {
    RawConfig::default()
        .validate(
            None,
            Overrides {
                mount_roots: vec![root.to_owned()],
                state_dir: Some(root.join("state")),
                unit_id: Some(unit.parse().unwrap()),
                ..Overrides::default()
            },
        )
        .unwrap()
}

/// `run` in a task with `settings`; its observer, the sender that stops it, and the task.
fn spawn_daemon(
    settings: onboard_agent::config::Settings,
) -> (
    Observer,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let observer = Observer::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn({
        let observer = observer.clone();
        async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            daemon::run(&settings, shutdown, observer).await.unwrap();
        }
    });
    (observer, stop, task)
}

fn main() {
    let seconds: u64 = std::env::var("IDLE_SECS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(5);
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("STICK")).unwrap();
    std::fs::write(root.path().join("STICK/icg.xml"), key_file()).unwrap();
    let settings = settings_for(root.path(), "00E0C5540B8B");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (observer, stop, task) = spawn_daemon(settings);
        let mut scans = observer.subscribe();
        scans.wait_for(Option::is_some).await.unwrap();
        // Let the blocking-pool thread of the first look finish and the log settle.
        tokio::time::sleep(Duration::from_millis(300)).await;

        let before = switches();
        let (wakeups, rescans) = (observer.wakeups(), observer.rescans());
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let window = start.elapsed();
        let after = switches();
        println!("quiet window: {window:.2?} of real time");
        println!(
            "  agent wake-ups: {}, rescans: {}",
            observer.wakeups() - wakeups,
            observer.rescans() - rescans
        );
        for (thread, count) in &after {
            let was = before.get(thread).copied().unwrap_or(0);
            println!("  thread {thread}: {} context switches", count - was);
        }
        println!("  (the runtime thread's few are this benchmark's own timer ending the window)");

        // One change: the counters must move, or the window proved nothing.
        std::fs::write(root.path().join("STICK/icg.txt"), b"not a key file").unwrap();
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            scans.wait_for(|_| observer.rescans() > rescans),
        )
        .await;
        println!(
            "after one file event: wake-ups {}, rescans {}",
            observer.wakeups() - wakeups,
            observer.rescans() - rescans
        );
        let _ = stop.send(());
        task.await.unwrap();
    });
    connected(seconds);
}

/// An enrolled device holding its connector session, idle for `seconds`, with the default ping,
/// then with a 1 s ping.
fn connected(seconds: u64) {
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (running, stick) = server_runtime.block_on(async {
        let running = ums_stub::testing::TestServer::builder()
            .hosts(&["127.0.0.1"])
            .without_rig()
            .start()
            .await
            .unwrap();
        let stick = running.key_file(KeyKind::MassDeployment, 1).await.unwrap();
        (running, stick)
    });
    for (unit, ping) in [("00E0C5540B01", 120), ("00E0C5540B02", 1)] {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("STICK")).unwrap();
        std::fs::write(root.path().join("STICK/icg.xml"), &stick).unwrap();
        let mut settings = settings_for(root.path(), unit);
        settings.connector_ping = Duration::from_secs(ping);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (observer, stop, task) = spawn_daemon(settings);
            let mut connected = observer.subscribe_connector();
            connected.wait_for(Option::is_some).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let before = switches();
            let (wakeups, connector) = (observer.wakeups(), observer.connector_wakeups());
            let start = Instant::now();
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            let window = start.elapsed();
            let after = switches();
            println!("enrolled and connected, ping every {ping} s: {window:.2?} of real time");
            println!(
                "  agent wake-ups: {}, connector wake-ups: {}",
                observer.wakeups() - wakeups,
                observer.connector_wakeups() - connector
            );
            // The runtime runs on the main thread, whose thread ID is the process ID.
            let main_thread = format!("{} ", std::process::id());
            let main: u64 = after
                .iter()
                .filter(|(thread, _)| thread.starts_with(&main_thread))
                .map(|(thread, count)| count - before.get(thread).copied().unwrap_or(0))
                .sum();
            println!(
                "  the agent's runtime thread: {main} context switches (a few are the window's own timer)"
            );
            let _ = stop.send(());
            task.await.unwrap();
        });
    }
    server_runtime.block_on(running.stop()).unwrap();
}
