//! Many devices, one stick, as separate `onboard-agent enroll` processes.

use onboard_protocol::admin::KeyStatus;
use std::collections::HashSet;

use crate::util::{Ums, enroll_all, unit};

#[test]
fn two_hundred_devices_share_a_stick_of_two_hundred_one_time_keys() {
    let ums = Ums::start();
    let root = tempfile::tempdir().unwrap();
    let stick = root.path().join("STICK");
    ums.one_time_stick(200, &stick, None);
    let path = stick.join("icg.xml");
    let outputs = enroll_all(
        &ums.programs,
        root.path(),
        200,
        16,
        &[path.to_str().unwrap()],
    );
    for (n, output) in outputs.iter().enumerate() {
        assert_eq!(
            output.status.code(),
            Some(0),
            "device {n}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Every key used exactly once, by 200 distinct devices.
    let keys = ums.keys();
    assert_eq!(keys.len(), 200);
    assert!(
        keys.iter()
            .all(|key| key.usage_count == 1 && key.status == KeyStatus::Used)
    );
    let devices = ums.devices();
    let units: HashSet<&str> = devices.iter().map(|d| d.unit_id.as_str()).collect();
    assert_eq!(units.len(), 200);
    let used_keys: HashSet<i64> = devices.iter().map(|d| d.key_id.unwrap()).collect();
    assert_eq!(
        used_keys.len(),
        200,
        "each device enrolled with a key of its own"
    );
}

#[test]
fn a_hundred_keys_for_a_hundred_and_fifty_devices_leave_fifty_exhausted_without_looping() {
    let ums = Ums::start();
    let root = tempfile::tempdir().unwrap();
    let stick = root.path().join("STICK");
    ums.one_time_stick(100, &stick, None);
    let path = stick.join("icg.xml");
    // Sixteen devices on one address, each presenting up to a hundred keys a request, share one
    // guess budget: a guess is reserved for every key before any is read, so keys past the
    // budget are answered `rate_limited` (429) by design. With the default three passes a device
    // on a loaded machine can give up (exit 6) before it has walked every key. This test is
    // about running out of keys, so each device is patient enough to get there; the server
    // keeps its default limits.
    let outputs = enroll_all(
        &ums.programs,
        root.path(),
        150,
        16,
        &["--tries", "10", path.to_str().unwrap()],
    );
    let enrolled = outputs
        .iter()
        .filter(|o| o.status.code() == Some(0))
        .count();
    let exhausted: Vec<usize> = (0..150)
        .filter(|&n| outputs[n].status.code() == Some(3))
        .collect();
    let others: Vec<String> = (0..150)
        .filter(|&n| !matches!(outputs[n].status.code(), Some(0 | 3)))
        .map(|n| {
            format!(
                "device {n}: {}: {}",
                outputs[n].status,
                String::from_utf8_lossy(&outputs[n].stderr)
            )
        })
        .collect();
    assert_eq!(enrolled, 100, "{others:#?}");
    assert_eq!(
        exhausted.len(),
        50,
        "the others exit 3: no key left; {others:#?}"
    );
    for &n in &exhausted {
        let said = String::from_utf8_lossy(&outputs[n].stderr);
        assert!(
            said.contains("no key left to present"),
            "device {n}: {said}"
        );
    }
    assert!(ums.keys().iter().all(|key| key.usage_count == 1));
    // No looping: a device that ran out presented each key at most once.
    let audit = ums.enroll_audit();
    for &n in &exhausted {
        let attempts: Vec<i64> = audit
            .iter()
            .filter(|entry| entry.unit_id.as_deref() == Some(unit(n).as_str()))
            .filter_map(|entry| entry.key_id)
            .collect();
        let distinct: HashSet<i64> = attempts.iter().copied().collect();
        assert_eq!(
            attempts.len(),
            distinct.len(),
            "device {n} presented a key twice"
        );
        assert!(attempts.len() <= 100);
    }
    // And a second run of an exhausted device presents nothing: its refusals are remembered.
    let before = ums.enroll_audit().len();
    let n = exhausted[0];
    let output = crate::util::agent(
        &ums.programs,
        root.path(),
        n,
        &["enroll", path.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(
        ums.enroll_audit().len(),
        before,
        "device {n} presented a refused key again"
    );
}

#[test]
fn fleet_sim_runs_against_a_server_it_starts_and_against_a_running_one() {
    const FLEET_SIM: &str = env!("CARGO_BIN_EXE_fleet-sim");
    // Its own server.
    let output = std::process::Command::new(FLEET_SIM)
        .args(["--devices", "20", "--concurrency", "8", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["enrolled"], 20);
    assert_eq!(summary["keys_used_twice"], serde_json::json!([]));
    assert_eq!(summary["server_keys_serving_two_devices"], 0);
    assert_eq!(summary["server_devices"], 20);
    assert!(summary["handshakes_per_second"].as_f64().unwrap() > 0.0);

    // A running server and its export: 15 keys for 20 devices.
    let ums = Ums::start();
    let root = tempfile::tempdir().unwrap();
    let stick = root.path().join("STICK");
    ums.one_time_stick(15, &stick, Some("127.0.0.1:1"));
    let output = std::process::Command::new(FLEET_SIM)
        .args([
            "--devices",
            "20",
            "--concurrency",
            "8",
            "--json",
            "--handshakes",
            "0",
            "--key-file",
        ])
        .arg(stick.join("icg.xml"))
        .arg("--server")
        .arg(ums.addr().to_string())
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["enrolled"], 15);
    assert_eq!(summary["refused"]["keys_exhausted"], 5);
    assert_eq!(summary["keys_used_twice"], serde_json::json!([]));
    assert!(ums.keys().iter().all(|key| key.usage_count == 1));
    assert_eq!(ums.devices().len(), 15);
}

/// `fleet-sim --connect` against a running server: every enrolled device holds its connector
/// session, which the server lists online, while the fleet holds them; closed, they are offline.
#[test]
fn fleet_sim_connect_keeps_every_enrolled_device_online_while_it_holds() {
    const FLEET_SIM: &str = env!("CARGO_BIN_EXE_fleet-sim");
    let ums = Ums::start();
    let root = tempfile::tempdir().unwrap();
    let stick = root.path().join("STICK");
    ums.one_time_stick(30, &stick, Some("127.0.0.1:1"));
    let child = std::process::Command::new(FLEET_SIM)
        .args([
            "--devices",
            "30",
            "--json",
            "--handshakes",
            "0",
            "--connect",
        ])
        .args(["--hold", "4", "--key-file"])
        .arg(stick.join("icg.xml"))
        .arg("--server")
        .arg(ums.addr().to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // While it holds, the server shows all thirty online.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let online = ums.devices().iter().filter(|device| device.online).count();
        if online == 30 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{online} of 30 online"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["connector"]["devices_connected"], 30);
    assert_eq!(summary["connector"]["sessions_lost_while_holding"], 0);
    assert_eq!(ums.devices().len(), 30);
    // Closed: each goes offline as the server sees its session end.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ums.devices().iter().any(|device| device.online) {
        assert!(
            std::time::Instant::now() < deadline,
            "still online after the fleet closed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
