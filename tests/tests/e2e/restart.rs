//! Restarts in the middle: the server killed under a fleet and started again on the same
//! address; an agent killed while it enrolls and started again.

use std::process::Stdio;
use std::time::{Duration, Instant};

use onboard_tests::programs::{Signal, send_signal, wait_with_deadline};

use crate::util::{Ums, agent, enroll_all};

#[test]
fn the_server_killed_and_restarted_under_a_fleet_loses_no_device_and_burns_no_key_twice() {
    let mut ums = Ums::start();
    let addr = ums.addr();
    let root = tempfile::tempdir().unwrap();
    let stick = root.path().join("STICK");
    ums.one_time_stick(60, &stick, None);
    let path = stick.join("icg.xml");
    let programs = ums.programs.clone();
    std::thread::scope(|scope| {
        let fleet = scope.spawn(|| {
            enroll_all(
                &programs,
                root.path(),
                60,
                8,
                &[path.to_str().unwrap(), "--tries", "60"],
            )
        });
        // Let part of the fleet through, then kill the server hard and bring it back.
        std::thread::sleep(Duration::from_millis(400));
        let serve = ums.serve.take().unwrap();
        serve.kill().unwrap();
        std::thread::sleep(Duration::from_millis(700));
        ums.serve_on(&addr.to_string());
        let outputs = fleet.join().unwrap();
        // The restart fell in the middle: some devices met the server down and retried.
        let retried = outputs
            .iter()
            .filter(|output| String::from_utf8_lossy(&output.stderr).contains("again in"))
            .count();
        assert!(retried > 0, "no device met the server down");
        for (n, output) in outputs.iter().enumerate() {
            assert_eq!(
                output.status.code(),
                Some(0),
                "device {n}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    });
    let keys = ums.keys();
    assert!(keys.iter().all(|key| key.usage_count == 1), "{keys:?}");
    assert_eq!(ums.devices().len(), 60);
}

#[test]
fn an_agent_killed_while_enrolling_and_restarted_enrolls_once() {
    let ums = Ums::start();
    let root = tempfile::tempdir().unwrap();
    let media = root.path().join("media");
    ums.one_time_stick(3, &media.join("STICK"), None);
    // What the last run says on standard error, to show when it does not stop cleanly.
    let said = root.path().join("agent.stderr");
    let run = |n| {
        agent(
            &ums.programs,
            root.path(),
            n,
            &["run", "--mount-root", media.to_str().unwrap()],
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&said).unwrap())
        .spawn()
        .unwrap()
    };
    let status = |n| {
        let output = agent(&ums.programs, root.path(), n, &["status", "--json"])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    // Killed at spread points of its first seconds: start-up, key generation, requests.
    for delay in [5u64, 20, 40, 80] {
        let mut child = run(0);
        std::thread::sleep(Duration::from_millis(delay));
        send_signal(child.id(), Signal::SIGKILL).unwrap();
        child.wait().unwrap();
    }
    let mut child = run(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while status(0)["phase"] != "enrolled" {
        assert!(Instant::now() < deadline, "not enrolled: {}", status(0));
        std::thread::sleep(Duration::from_millis(50));
    }
    send_signal(child.id(), Signal::SIGTERM).unwrap();
    let stopped = wait_with_deadline(&mut child, Duration::from_secs(10)).unwrap();
    assert!(
        stopped.success(),
        "{stopped}: {}",
        std::fs::read_to_string(&said).unwrap_or_default()
    );
    let used: u64 = ums.keys().iter().map(|key| key.usage_count).sum();
    assert_eq!(used, 1, "one key in all");
    assert_eq!(ums.devices().len(), 1);
    let certificate = std::fs::read_to_string(
        root.path()
            .join(crate::util::unit(0))
            .join("state/device-cert.pem"),
    )
    .unwrap();
    assert!(certificate.contains("BEGIN CERTIFICATE"));
}
