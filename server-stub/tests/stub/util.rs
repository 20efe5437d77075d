//! Running the binary against a temporary data directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use onboard_protocol::admin::{KeyView, Page, UmsIdView};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_ums-stub");

/// A temporary data directory (inside a temporary folder, so it starts absent).
pub(crate) struct DataDir {
    root: tempfile::TempDir,
}

impl DataDir {
    pub(crate) fn new() -> Self {
        Self {
            root: tempfile::tempdir().unwrap(),
        }
    }

    /// The data directory itself.
    pub(crate) fn path(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// A scratch folder beside it (a stand-in USB stick, backups).
    pub(crate) fn scratch(&self) -> &Path {
        self.root.path()
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .env_remove("UMS_STUB_DATA_DIR")
            .env_remove("UMS_STUB_CONFIG")
            .arg("--data-dir")
            .arg(self.path())
            .args(args);
        command
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs and asserts success; returns standard output.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "ums-stub {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs and asserts exit code 1; returns standard error.
    pub(crate) fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert_eq!(
            output.status.code(),
            Some(1),
            "ums-stub {args:?} should fail: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8(output.stderr).unwrap()
    }

    /// The keys `keys list --json` prints with extra arguments (one page).
    pub(crate) fn list(&self, extra: &[&str]) -> Vec<KeyView> {
        self.list_page(extra).items
    }

    /// The page `keys list --json` prints with extra arguments.
    pub(crate) fn list_page(&self, extra: &[&str]) -> Page<KeyView> {
        let mut args = vec!["keys", "list", "--json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&self.ok(&args)).unwrap()
    }

    /// The UMS ID `ums-id show --json` prints.
    pub(crate) fn ums_id(&self) -> UmsIdView {
        serde_json::from_str(&self.ok(&["ums-id", "show", "--json"])).unwrap()
    }

    /// The fingerprint `ums-id show --json` prints.
    pub(crate) fn fingerprint(&self) -> String {
        self.ums_id().fingerprint.to_string()
    }
}

/// The unix permission bits of a file.
pub(crate) fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}
