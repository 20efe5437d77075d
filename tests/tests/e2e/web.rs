//! The Web App in a real browser: the tests of `tests/web/` (Playwright for Python driving Debian's
//! chromium, axe-core for accessibility) against real `ums-stub serve` processes; the fleet
//! simulator holds device sessions for the devices page, and a throwaway PostgreSQL cluster gives
//! the Distributed UMS page its shared database.
//!
//! Needs Python with the packages of `tests/web/requirements.txt` (`$ONBOARD_PYTHON`, else
//! `python3`), chromium (`$ONBOARD_CHROMIUM`, else `/usr/bin/chromium`) and PostgreSQL;
//! `scripts/test` installs them. Screenshots and downloads go to `$ONBOARD_WEB_OUT`, else
//! `target/web-app/` (the 375 px screenshots in its `narrow-375/`).

use std::path::PathBuf;
use std::process::Command;

use onboard_tests::postgres::PgCluster;

use crate::util::programs;

#[test]
fn the_web_app_works_in_chromium() {
    let onboard_tests::programs::Programs::Binaries { agent, ums_stub } = programs() else {
        panic!("the web tests need the real binaries");
    };
    let python = std::env::var("ONBOARD_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::env::var_os("ONBOARD_WEB_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target").join("web-app"));
    // Screenshots of an earlier run do not count.
    let _ = std::fs::remove_dir_all(out.join("narrow-375"));
    std::fs::create_dir_all(&out).unwrap();
    let postgres = PgCluster::start();
    let output = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root.join("tests/web"))
        .env("UMS_STUB_BIN", &ums_stub)
        .env("ONBOARD_AGENT_BIN", &agent)
        .env("FLEET_SIM_BIN", env!("CARGO_BIN_EXE_fleet-sim"))
        .env("ONBOARD_PG_URL", postgres.database())
        .env("ONBOARD_WEB_OUT", &out)
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run {python}: {error}; install Python with pip install -r \
                 tests/web/requirements.txt and Debian's chromium (scripts/test does)"
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the browser tests failed (screenshots in {}):\n{stdout}\n{}",
        out.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    for shot in [
        "keys-page.png",
        "ums-id-page.png",
        "devices-1280.png",
        "devices-1920.png",
        "ums-id-in-sync.png",
        "not-in-sync-sign-in.png",
        "narrow-375/sign-in.png",
        "narrow-375/keys.png",
        "narrow-375/devices.png",
        "narrow-375/ums-id.png",
        "narrow-375/audit.png",
    ] {
        assert!(out.join(shot).exists(), "{shot} was not saved");
    }
}
