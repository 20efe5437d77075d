//! The Debian packages: lintian, then installed, used and purged on this machine.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use ums_stub::testing::ServeProcess;

use crate::util::{UNIT, built, require_root, run, run_ok, shown};

/// The packages, their programs and units.
const PROGRAMS: [&str; 2] = ["ums-stub", "onboard-agent"];

/// The data directories, which removing or purging a package leaves.
const DATA_DIRS: [&str; 2] = ["/var/lib/ums-stub", "/var/lib/onboard-agent"];

#[test]
fn lintian_finds_nothing_but_the_explained_overrides() {
    let built = built();
    // Errors, warnings and informational tags all count; each override the packages ship gives
    // its reason (packaging/*/lintian-overrides).
    let output = run(Command::new("lintian")
        .args(["--fail-on", "error,warning,info", "--display-info"])
        .arg(&built.server_deb)
        .arg(&built.agent_deb));
    let said = String::from_utf8_lossy(&output.stdout);
    // Machine code that happens to spell a misspelt word (spelling-error-in-binary) comes and goes
    // with the build: its override may go unused, no other may.
    let found: Vec<&str> = said
        .lines()
        .filter(|line| {
            ["E: ", "W: ", "I: "]
                .iter()
                .any(|kind| line.starts_with(kind))
        })
        .filter(|line| !line.contains(": unused-override spelling-error-in-binary "))
        .collect();
    // Exit 2 is lintian's "tags found"; anything else but 0 is lintian failing to run.
    assert!(
        found.is_empty() && matches!(output.status.code(), Some(0 | 2)),
        "lintian: {}\n{said}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_installed_server_enrolls_the_installed_agent_and_purging_leaves_only_data() {
    require_root("installing the packages with dpkg");
    let built = built();
    for name in PROGRAMS {
        assert_eq!(
            status(name),
            None,
            "{name} is installed on this machine; this test installs and purges its own build, \
             so remove it first (dpkg -P {name})"
        );
    }
    for dir in DATA_DIRS {
        assert!(
            !Path::new(dir).exists(),
            "{dir} exists: this test would use it and remove it; move it away first"
        );
    }
    let _cleanup = Cleanup;
    let before = snapshot();

    run_ok(
        Command::new("dpkg")
            .arg("-i")
            .arg(&built.server_deb)
            .arg(&built.agent_deb),
    );
    for name in PROGRAMS {
        assert_eq!(status(name).as_deref(), Some("installed"), "{name}");
        installed_files_are_where_debian_has_them(name);
    }
    units_verify();
    for name in PROGRAMS {
        let help = run_ok(Command::new(format!("/usr/bin/{name}")).arg("--help"));
        assert!(
            help.contains(&format!("Usage: {name}")),
            "{name} --help: {help}"
        );
    }

    // The server as its unit starts it (its ExecStart= line: the shipped settings, the data
    // directory), on a free loopback port.
    let unit = std::fs::read_to_string("/usr/lib/systemd/system/ums-stub.service").unwrap();
    let exec_start: Vec<&str> = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .expect("the unit has ExecStart=")
        .split_whitespace()
        .collect();
    assert_eq!(
        exec_start,
        [
            "/usr/bin/ums-stub",
            "--config",
            "/etc/ums-stub/ums-stub.toml",
            "--data-dir",
            "/var/lib/ums-stub",
            "serve"
        ]
    );
    let mut serve = Command::new(exec_start[0]);
    serve
        .args(&exec_start[1..])
        .args(["--listen", "127.0.0.1:0", "--host", "127.0.0.1"])
        .env("RUST_LOG", "warn");
    let server = ServeProcess::spawn(serve).unwrap();

    // Keys made with the installed command line, by hand as an operator would (the default data
    // directory, the shipped settings), exported to a stick.
    let stick = tempfile::tempdir().unwrap();
    let export = stick.path().join("icg.xml");
    let ums_stub = |args: &[&str]| {
        run_ok(
            Command::new("/usr/bin/ums-stub")
                .args(["--config", "/etc/ums-stub/ums-stub.toml"])
                .args(args)
                .env("RUST_LOG", "warn"),
        )
    };
    ums_stub(&["keys", "create", "one-time", "--quantity", "1"]);
    ums_stub(&[
        "keys",
        "export",
        "--out",
        export.to_str().unwrap(),
        "--server",
        &server.addr().to_string(),
    ]);

    // The installed agent with the shipped config file and its default state directory.
    let agent = |args: &[&str]| {
        let mut command = Command::new("/usr/bin/onboard-agent");
        command
            .env_remove("ONBOARD_AGENT_CONFIG")
            .env("RUST_LOG", "warn")
            .args(["--unit-id", UNIT])
            .args(args);
        command
    };
    run_ok(&mut agent(&["enroll", stick.path().to_str().unwrap()]));
    // `status` exits 0 only when enrolled.
    let status_text = run_ok(&mut agent(&["status"]));
    assert!(
        status_text
            .lines()
            .any(|line| line.starts_with("Phase:") && line.ends_with(" enrolled")),
        "{status_text}"
    );
    let devices = ums_stub(&["devices", "list", "--json"]);
    assert!(devices.contains(UNIT), "{devices}");
    let stopped = server.terminate().unwrap();
    assert!(stopped.success(), "ums-stub stopped with {stopped}");

    // Removed: the programs go, the conffiles stay (dpkg keeps them until a purge).
    run_ok(Command::new("dpkg").arg("-r").args(PROGRAMS));
    for name in PROGRAMS {
        assert_eq!(status(name).as_deref(), Some("config-files"), "{name}");
        assert!(!Path::new(&format!("/usr/bin/{name}")).exists());
    }
    // Purged: nothing is left of either package but the data directories the programs made.
    run_ok(Command::new("dpkg").arg("-P").args(PROGRAMS));
    for name in PROGRAMS {
        assert_eq!(status(name), None, "{name}");
    }
    let after = snapshot();
    let left: Vec<&PathBuf> = after
        .difference(&before)
        .filter(|path| !DATA_DIRS.iter().any(|dir| path.starts_with(dir)))
        .collect();
    assert!(left.is_empty(), "left behind after dpkg -P: {left:#?}");
    let gone: Vec<&PathBuf> = before.difference(&after).collect();
    assert!(gone.is_empty(), "removed by the packages: {gone:#?}");
    for dir in DATA_DIRS {
        assert!(Path::new(dir).is_dir(), "the data directory {dir} stays");
    }
}

/// The package's state: `installed`, `config-files` (removed, not purged), or `None` when dpkg
/// knows nothing of it.
fn status(name: &str) -> Option<String> {
    let output = run(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", name]));
    let state = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !state.is_empty() && state != "not-installed").then_some(state)
}

/// The binary, unit, conffile, manual page, completions, changelog and copyright of `name`, where
/// Debian puts them.
fn installed_files_are_where_debian_has_them(name: &str) {
    // The conffile, and the subcommand the unit runs (which has a page of its own).
    let (conffile, daemon) = match name {
        "ums-stub" => ("/etc/ums-stub/ums-stub.toml", "serve"),
        _ => ("/etc/onboard-agent/agent.toml", "run"),
    };
    let conffiles = run_ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", name]));
    assert!(
        conffiles.contains(conffile),
        "{name}: conffiles {conffiles}"
    );
    let doc = format!("/usr/share/doc/{name}");
    for file in [
        format!("/usr/bin/{name}"),
        format!("/usr/lib/systemd/system/{name}.service"),
        conffile.to_owned(),
        format!("/usr/share/man/man1/{name}.1.gz"),
        format!("/usr/share/man/man1/{name}-{daemon}.1.gz"),
        format!("/usr/share/bash-completion/completions/{name}"),
        format!("/usr/share/zsh/vendor-completions/_{name}"),
        format!("/usr/share/fish/vendor_completions.d/{name}.fish"),
        format!("{doc}/changelog.Debian.gz"),
        format!("{doc}/copyright"),
    ] {
        assert!(Path::new(&file).is_file(), "{name} installs {file}");
    }
    // The shipped settings are all commented out: the program runs on its defaults.
    let settings = std::fs::read_to_string(conffile).unwrap();
    assert!(
        settings
            .lines()
            .all(|line| line.is_empty() || line.starts_with('#')),
        "{conffile} sets something"
    );
}

/// `systemd-analyze verify` of the installed units (it also checks that ExecStart's binary
/// exists); messages about other units on this machine are not ours.
fn units_verify() {
    let mut verify = Command::new("systemd-analyze");
    verify.arg("verify");
    for name in PROGRAMS {
        verify.arg(format!("/usr/lib/systemd/system/{name}.service"));
    }
    let shown = shown(&verify);
    let output = run(&mut verify);
    let said = String::from_utf8_lossy(&output.stderr);
    let ours: Vec<&str> = said
        .lines()
        .filter(|line| PROGRAMS.iter().any(|name| line.contains(name)))
        .collect();
    assert!(
        output.status.success() && ours.is_empty(),
        "{shown}: {said}"
    );
}

/// Every path under the folders a package may write (its own dpkg records among them), for
/// what purging leaves behind.
fn snapshot() -> BTreeSet<PathBuf> {
    let mut paths = BTreeSet::new();
    for root in ["/etc", "/usr", "/var/lib"] {
        walk(Path::new(root), &mut paths);
    }
    paths
}

fn walk(dir: &Path, paths: &mut BTreeSet<PathBuf>) {
    // apt's lists are not the packages' business.
    if dir == Path::new("/var/lib/apt") {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // dpkg's own database changes with every run; of it, the per-package records (info/)
        // are what must go.
        if dir == Path::new("/var/lib/dpkg") && !path.ends_with("info") {
            continue;
        }
        let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
        if is_dir {
            walk(&path, paths);
        }
        paths.insert(path);
    }
}

/// Purges both packages and removes the data directories when the test ends, passed or failed
/// (the test made sure neither was there before).
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").arg("-P").args(PROGRAMS).output();
        for dir in DATA_DIRS {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
