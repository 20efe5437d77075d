//! A rollout behind one address with the guess limits an administrator gets: 500 devices on
//! loopback (one source, as behind a site's NAT or the cloud gateway) share a stick of 500 one-time
//! keys. The devices are the fleet simulator's, in process: the agent's own enrollment code, each
//! with its own unit ID and state directory.

use std::time::Duration;

use onboard_agent::lifecycle::BackoffPolicy;
use onboard_protocol::KeyKind;
use onboard_tests::fleet::{self, FleetConfig, ServerLimits, Summary};

const DEVICES: usize = 500;

/// Runs the fleet against a server of its own with `limits`; what it did.
async fn rollout(limits: ServerLimits) -> Summary {
    let dir = tempfile::tempdir().unwrap();
    let (running, source) = fleet::own_server(dir.path(), KeyKind::OneTime, DEVICES, limits)
        .await
        .unwrap();
    let config = FleetConfig {
        devices: DEVICES,
        concurrency: 64,
        source: source.clone(),
        state_root: dir.path().join("devices"),
        first_unit: 0x02E0_C500_0000,
        backoff: BackoffPolicy {
            base: Duration::from_millis(200),
            max: Duration::from_secs(5),
        },
        max_passes: 20,
        progress: false,
    };
    let (runs, elapsed) = fleet::run(&config).await;
    running.stop().await.unwrap();
    Summary::of(&runs, &source, elapsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_devices_behind_one_address_enroll_with_the_default_limits() {
    let off = rollout(ServerLimits::Off).await;
    let defaults = rollout(ServerLimits::Defaults).await;
    for summary in [&off, &defaults] {
        assert_eq!(summary.enrolled, DEVICES, "{summary:?}");
        assert!(summary.keys_used_twice.is_empty());
    }
    assert_eq!(defaults.gave_up, 0);
    // Each device met taken keys on the way (refusals that are not guesses), far more in all
    // than the address's budget of 30.
    assert!(defaults.keys_refused > 30 * 10, "{defaults:?}");
    // The limits cost nothing: within twice the time without them (with 0.5 s for a noisy
    // machine, which shares its two cores between the server and 500 devices).
    let (with, without) = (
        Duration::from_secs_f64(defaults.seconds),
        Duration::from_secs_f64(off.seconds),
    );
    assert!(
        with <= without * 2 + Duration::from_millis(500),
        "default limits {with:?}, limits off {without:?}"
    );
}
