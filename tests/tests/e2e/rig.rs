//! The example rig of the documentation (`docs/examples/rig.py`, Python's standard library only)
//! run against the real `ums-stub` binary: it starts `ums-stub serve --test-rig`, puts a fault plan
//! in force, enrolls a device from a key file the control listener made, moves the clock past the
//! certificate's lifetime, reads its status, finds an unserved route in strict mode's counts, and
//! resets; the test passes when the script's every check held.
//!
//! Needs Python (`$ONBOARD_PYTHON`, else `python3`) and `openssl`; the test fails when either is
//! missing.

use std::path::PathBuf;
use std::process::Command;

use crate::util::programs;

#[test]
fn the_documented_python_rig_drives_a_test_rig_server() {
    let onboard_tests::programs::Programs::Binaries { ums_stub, .. } = programs() else {
        panic!("the example rig needs the real ums-stub binary");
    };
    let python = std::env::var("ONBOARD_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/rig.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg(&ums_stub)
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run {python}: {error}; install Python 3 (scripts/test does)")
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the example rig failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("rig: every check passed"), "{stdout}");
}
