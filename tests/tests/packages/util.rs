//! What the package tests share: the packages made once, running tools with their failures
//! named, and the root check.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// What `cargo xtask package` made.
#[derive(Debug)]
pub(crate) struct Built {
    /// The ums-stub package.
    pub(crate) server_deb: PathBuf,
    /// The onboard-agent package.
    pub(crate) agent_deb: PathBuf,
    /// The image's OCI layout.
    pub(crate) layout: PathBuf,
}

impl Built {
    /// The image reference umoci takes: `LAYOUT:TAG`.
    pub(crate) fn image(&self) -> String {
        format!("{}:{}", self.layout.display(), env!("CARGO_PKG_VERSION"))
    }
}

/// The packages and the image, made once per test process into `packages-test/` of this build's
/// target folder (emptied first).
pub(crate) fn built() -> &'static Built {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    match BUILT.get_or_init(|| package().map_err(|error| format!("{error:#}"))) {
        Ok(built) => built,
        Err(error) => panic!("cargo xtask package failed: {error}"),
    }
}

fn package() -> anyhow::Result<Built> {
    let exe = std::env::current_exe()?;
    let mut profile_dir = exe.parent().unwrap().to_path_buf();
    if profile_dir.ends_with("deps") {
        profile_dir.pop();
    }
    // The profile this test was built with, so the binaries are the ones its build made.
    let profile = if profile_dir.ends_with("release") {
        "release"
    } else {
        "dev"
    };
    let out = profile_dir.join("packages-test");
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["xtask", "package", "--profile", profile, "--out"])
        .arg(&out)
        .current_dir(workspace)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let version = env!("CARGO_PKG_VERSION");
    let deb = |name: &str| -> anyhow::Result<PathBuf> {
        let prefix = format!("{name}_{version}-1_");
        std::fs::read_dir(&out)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<std::io::Result<Vec<_>>>()?
            .into_iter()
            .find(|path| {
                let file = path.file_name().unwrap().to_string_lossy();
                file.starts_with(&prefix) && file.ends_with(".deb")
            })
            .ok_or_else(|| anyhow::anyhow!("no {prefix}*.deb in {}", out.display()))
    };
    Ok(Built {
        server_deb: deb("ums-stub")?,
        agent_deb: deb("onboard-agent")?,
        layout: out.join("ums-stub-oci"),
    })
}

/// Fails the test unless it runs as root: installing packages and running containers need it.
pub(crate) fn require_root(what: &str) {
    let uid = run_ok(Command::new("id").arg("-u"));
    assert_eq!(
        uid.trim(),
        "0",
        "{what} needs root (CI runs the tests as root); run scripts/test as root"
    );
}

/// Runs `command`; its output, whatever its exit status. A tool that cannot be started fails
/// the test, naming it and the Debian package that has it.
pub(crate) fn run(command: &mut Command) -> Output {
    let program = command.get_program().to_string_lossy().into_owned();
    command.output().unwrap_or_else(|error| {
        panic!(
            "cannot run {program} ({error}); scripts/test installs it (Debian's {}, or cargo-deb)",
            debian_package(&program)
        )
    })
}

/// Runs `command`, which must succeed; its standard output.
pub(crate) fn run_ok(command: &mut Command) -> String {
    let shown = shown(command);
    let output = run(command);
    assert!(
        output.status.success(),
        "{shown}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The command as a line, for messages.
pub(crate) fn shown(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The Debian package a tool comes in, for messages.
fn debian_package(program: &str) -> &str {
    match Path::new(program)
        .file_name()
        .and_then(|name| name.to_str())
    {
        Some("systemd-analyze") => "systemd",
        Some("nsenter") => "util-linux",
        Some("dpkg" | "dpkg-query" | "dpkg-deb") => "dpkg",
        Some(name) => name,
        None => program,
    }
}

/// The unit ID of the test device.
pub(crate) const UNIT: &str = "02E0C5FACADE";

/// A device's agent config: short waits, for a test.
pub(crate) const QUICK_AGENT: &str =
    "backoff_first_ms = 100\nbackoff_max_seconds = 1\nconnect_timeout_seconds = 5\n";
