//! The systemd unit, `systemd/onboard-agent.service`: the lines it must have, and
//! `systemd-analyze verify` on a copy that runs the binary under test.

use std::process::Command;

#[test]
fn the_systemd_unit_is_valid_and_commented() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../systemd/onboard-agent.service"
    ))
    .unwrap();
    for line in [
        "Type=notify",
        "After=network-online.target",
        "Wants=network-online.target",
        "StateDirectory=onboard-agent",
        "Restart=on-failure",
        "ExecStart=/usr/bin/onboard-agent run",
    ] {
        assert!(
            unit.lines().any(|l| l.trim() == line),
            "the unit lacks {line}"
        );
    }
    assert!(
        unit.lines().filter(|l| l.starts_with('#')).count() >= 10,
        "the unit explains its choices in comments"
    );
    // The unit is verified or the test fails: a missing tool is not a pass.
    let probe = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run systemd-analyze ({error}): install Debian's systemd package \
                 (scripts/test does)"
            )
        });
    assert!(probe.status.success(), "systemd-analyze --version failed");
    // Verify a copy that runs the binary just built (verify checks that ExecStart exists).
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("onboard-agent.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/bin/onboard-agent", crate::util::BIN),
    )
    .unwrap();
    let output = Command::new("systemd-analyze")
        // The manual pages Documentation= names come with the package (whose test verifies the
        // installed unit, pages and all); here they are not installed.
        .args(["verify", "--man=no", copy.to_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    // Messages about other units on the machine are not ours.
    let ours: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("onboard-agent.service"))
        .collect();
    assert!(
        output.status.success() && ours.is_empty(),
        "systemd-analyze verify: {said}"
    );
}
