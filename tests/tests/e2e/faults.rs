//! Fleets against a server in test-rig mode with faults (`fleet-sim` and its own in-process
//! server): lost answers and 503s on enrollment, connector sessions closed every few seconds,
//! a rotation drill, and a fault plan read from a file with the seed overridden. Each checks
//! from the server's database that no key serves two devices and none was burnt.
//!
//! The devices back off briefly (`--backoff-base-ms`, `--backoff-max-ms`, which also cap the
//! servers' `Retry-After`) so that a thousand devices under faults finish in well under a minute.

use std::process::Output;

const FLEET_SIM: &str = env!("CARGO_BIN_EXE_fleet-sim");

/// Runs `fleet-sim --json --handshakes 0` with `args` and short backoffs; its output.
fn fleet_sim(args: &[&str]) -> Output {
    std::process::Command::new(FLEET_SIM)
        .args(["--json", "--handshakes", "0"])
        .args(["--backoff-base-ms", "50", "--backoff-max-ms", "300"])
        .args(args)
        .output()
        .unwrap()
}

/// The JSON summary of a run that exited `code`.
fn summary(output: &Output, code: i32) -> serde_json::Value {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The stick holds twice as many one-time keys as there are devices. With as many keys as
/// devices, the last devices walk hundreds of keys others took, and a pass cut short by a fault
/// starts its batches small again: at 4 faults in 10 requests such a device refuses about one
/// key and a half per pass, and needs hundreds of passes.
#[test]
fn a_thousand_devices_enroll_under_lost_answers_and_503s_and_no_key_is_burnt_or_shared() {
    let output = fleet_sim(&[
        "--devices",
        "1000",
        "--keys",
        "2000",
        "--concurrency",
        "128",
        "--no-limits",
        "--lost-answers",
        "0.3",
        "--unavailable",
        "0.1",
        "--seed",
        "28",
        "--max-passes",
        "100",
    ]);
    let summary = summary(&output, 0);
    assert_eq!(summary["enrolled"], 1000);
    assert_eq!(summary["gave_up"], 0);
    assert_eq!(summary["refused"], serde_json::json!({}));
    assert_eq!(summary["server_devices"], 1000);
    assert_eq!(summary["server_keys_serving_two_devices"], 0);
    assert_eq!(summary["server_keys_burnt"], 0);
    // The faults were met: hundreds of passes ended in one (4 in 10 enrollment requests).
    assert!(summary["retries"].as_u64().unwrap() >= 400, "{summary}");
    assert_eq!(summary["fault_plan"]["seed"], 28);
}

#[test]
fn devices_whose_connector_sessions_are_closed_every_few_seconds_all_come_back() {
    let output = fleet_sim(&[
        "--devices",
        "40",
        "--connect",
        "--hold",
        "7",
        "--ping-seconds",
        "1",
        "--close-sessions-every",
        "2",
    ]);
    let summary = summary(&output, 0);
    assert_eq!(summary["enrolled"], 40);
    let connector = &summary["connector"];
    assert_eq!(connector["devices_connected"], 40);
    // Closed at least twice while held, each device reconnecting each time.
    assert!(
        connector["sessions_lost_while_holding"].as_u64().unwrap() >= 40,
        "{connector}"
    );
    assert!(
        connector["reconnections_while_holding"].as_u64().unwrap() >= 40,
        "{connector}"
    );
    assert_eq!(connector["devices_connected_after_hold"], 40);
    assert_eq!(connector["devices_refused"], 0);
}

#[test]
fn a_rotation_drill_mid_run_leaves_the_rest_refusing_the_chain_without_burning_a_key() {
    let output = fleet_sim(&[
        "--devices",
        "60",
        "--concurrency",
        "4",
        "--rotation-drill-after",
        "20",
        "--max-passes",
        "3",
    ]);
    let summary = summary(&output, 0);
    let enrolled = summary["enrolled"].as_u64().unwrap();
    let refused_pin = summary["pin_refused"].as_u64().unwrap();
    assert!(enrolled >= 20, "{summary}");
    assert!(refused_pin > 0, "{summary}");
    assert_eq!(enrolled + refused_pin, 60, "{summary}");
    // No key went to the server under the fresh UMS ID: each key used serves the device that
    // holds it, and those that did not enroll used none.
    assert_eq!(summary["server_devices"].as_u64(), Some(enrolled));
    assert_eq!(summary["server_keys_burnt"], 0);
    assert_eq!(summary["server_keys_serving_two_devices"], 0);
    let fresh = summary["rotation_drill"].as_str().unwrap();
    assert_eq!(fresh.len(), 64, "{fresh}");
    // The devices say why.
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("is not the pinned UMS ID"), "{said}");
}

#[test]
fn fleet_sim_reads_a_fault_plan_from_a_file_and_the_seed_overrides_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("faults.json");
    std::fs::write(
        &plan,
        r#"{ "seed": 1,
             "routes": { "enrollment": [
               { "probability": 0.5, "fault": { "kind": "refuse", "status": 503, "retry_after_seconds": 1 } },
               { "probability": 0.2, "fault": { "kind": "delay", "millis": 20 } } ] } }"#,
    )
    .unwrap();
    let plan = plan.to_str().unwrap();
    let output = fleet_sim(&["--devices", "20", "--faults", plan, "--seed", "99"]);
    let summary = summary(&output, 0);
    assert_eq!(summary["enrolled"], 20);
    assert_eq!(summary["fault_plan"]["seed"], 99);
    assert_eq!(
        summary["fault_plan"]["routes"]["enrollment"][0]["fault"]["status"],
        503
    );
    // A 503 ends the pass (a 429 `rate_limited` would move a device to its next key instead,
    // which devices sharing one stick also do without any fault): retries show the plan held.
    assert!(summary["retries"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(summary["server_keys_burnt"], 0);
    // A plan out of bounds is refused, naming the field.
    std::fs::write(
        dir.path().join("bad.json"),
        r#"{ "routes": { "renewal": [ { "probability": 1.5, "fault": { "kind": "hold" } } ] } }"#,
    )
    .unwrap();
    let output = fleet_sim(&[
        "--devices",
        "1",
        "--faults",
        dir.path().join("bad.json").to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("routes.renewal[0].probability"), "{said}");
}

/// The burnt-key check reads the database: a key used with no device record holding it (here:
/// the device deleted after it enrolled) is counted, and a key serving its device is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_check_counts_a_key_used_that_no_device_holds_as_burnt() {
    use onboard_agent::lifecycle::BackoffPolicy;
    use onboard_protocol::KeyKind;
    use onboard_tests::fleet::{self, FleetConfig, ServerLimits};
    let dir = tempfile::tempdir().unwrap();
    let (running, source) = fleet::own_server_with_faults(
        dir.path(),
        KeyKind::OneTime,
        3,
        ServerLimits::Defaults,
        Some(ums_stub::rig::FaultPlan::default()),
    )
    .await
    .unwrap();
    assert!(
        running.rig().is_some(),
        "a plan puts the server in test-rig mode"
    );
    let config = FleetConfig {
        devices: 2,
        concurrency: 2,
        source,
        state_root: dir.path().join("devices"),
        first_unit: 0x02E0_C500_0000,
        backoff: BackoffPolicy::default(),
        max_passes: 3,
        progress: false,
    };
    let (runs, _) = fleet::run(&config).await;
    assert_eq!(runs.len(), 2);
    let check = fleet::server_check(&running).await.unwrap();
    assert_eq!(
        check,
        fleet::ServerCheck {
            devices: 2,
            keys_serving_two_devices: 0,
            keys_burnt: 0
        }
    );
    running
        .shared()
        .stub
        .devices()
        .delete(&runs[0].unit_id, &ums_stub::store::Actor::cli())
        .await
        .unwrap();
    let check = fleet::server_check(&running).await.unwrap();
    assert_eq!((check.devices, check.keys_burnt), (1, 1));
    running.stop().await.unwrap();
}
