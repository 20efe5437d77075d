//! The Web App in a real browser: `tests/web/test_web_app.py` (Playwright for Python driving
//! Debian's chromium) against a real `ums-stub serve`.
//!
//! Needs Python with the packages of `tests/web/requirements.txt` (`$ONBOARD_PYTHON`, else
//! `python3`) and chromium (`$ONBOARD_CHROMIUM`, else `/usr/bin/chromium`); `scripts/test` installs
//! them. Screenshots and downloads go to `$ONBOARD_WEB_OUT`, else `target/web-app/`.

use std::path::PathBuf;
use std::process::Command;

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
    std::fs::create_dir_all(&out).unwrap();
    let output = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root.join("tests/web/test_web_app.py"))
        .env("UMS_STUB_BIN", &ums_stub)
        .env("ONBOARD_AGENT_BIN", &agent)
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
    for shot in ["keys-page.png", "ums-id-page.png"] {
        assert!(out.join(shot).exists(), "{shot} was not saved");
    }
}
