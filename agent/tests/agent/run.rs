//! `onboard-agent run` as a process: what it logs, clean stops on SIGTERM and SIGINT, and a real
//! mount in a private mount namespace where the machine allows one.

use std::path::Path;
use std::process::Command;

use onboard_protocol::Format;

use crate::util::{BIN, Running, Sandbox, assert_no_secret, write_key_file};
use ums_stub::testing::Signal;

fn run_command(sandbox: &Sandbox, roots: &[&Path]) -> Command {
    let mut command = sandbox.command(&["--unit-id", "00E0C5540B8B", "run"]);
    for root in roots {
        command.arg("--mount-root").arg(root);
    }
    command
}

#[test]
fn logs_each_key_file_without_keys_and_stops_on_sigterm() {
    let sandbox = Sandbox::new();
    let mount_root = sandbox.path().join("media");
    write_key_file(&mount_root.join("STICK/icg.xml"), Format::Xml);
    std::fs::create_dir_all(mount_root.join("STICK/broken")).unwrap();
    std::fs::write(
        mount_root.join("STICK/broken/icg.txt"),
        "Host: x\nPort: 99999\n",
    )
    .unwrap();

    let mut agent = Running::start(run_command(&sandbox, &[&mount_root]));
    let found = agent.wait_for(&["key file found", "STICK/icg.xml"]);
    for field in ["format=xml", "keys=6", "ums_id=3f1a9c0e5b...5c6d7e8f90"] {
        assert!(found.contains(field), "{field} not in {found}");
    }
    agent.wait_for(&["skipped", "broken/icg.txt", "line 2"]);
    agent.wait_for(&["watching for sticks"]);

    let (status, log) = agent.stop(Signal::SIGTERM);
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("signal=\"SIGTERM\"") || log.contains("signal=SIGTERM"),
        "{log}"
    );
    assert!(log.contains("stopped"), "{log}");
    assert_no_secret(&log);
}

#[test]
fn stops_on_sigint_too() {
    let sandbox = Sandbox::new();
    let mount_root = tempfile::tempdir().unwrap();
    let mut agent = Running::start(run_command(&sandbox, &[mount_root.path()]));
    agent.wait_for(&["watching for sticks"]);
    let (status, log) = agent.stop(Signal::SIGINT);
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("SIGINT"), "{log}");
}

/// Mounts a tmpfs holding a key file onto an empty folder under the mount root, inside a private
/// mount namespace the agent runs in, so the mount table is the only thing that changes under the
/// root (a mount makes no file event there).
#[test]
fn a_real_mount_is_noticed_through_the_mount_table() {
    let sandbox = Sandbox::new();
    let mount_root = sandbox.path().join("media");
    let mount_point = mount_root.join("STICK");
    let staging = sandbox.path().join("staging");
    std::fs::create_dir_all(&mount_point).unwrap();
    std::fs::create_dir_all(&staging).unwrap();
    let key_file = sandbox.path().join("icg.xml");
    write_key_file(&key_file, Format::Xml);

    // Can this machine make a mount namespace and mount in it at all?
    let probe = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .args(["mount", "-t", "tmpfs", "probe"])
        .arg(&staging)
        .output();
    // It needs root (or CAP_SYS_ADMIN) and util-linux: without them the test fails, saying so.
    match probe {
        Err(error) => panic!("cannot run unshare (util-linux): {error}"),
        Ok(output) if !output.status.success() => panic!(
            "no private mount namespace with a tmpfs here (run the tests as root): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Ok(_) => {}
    }

    let mut command = Command::new("unshare");
    command.args(["--mount", "--propagation", "private", "--", BIN]);
    let inner = run_command(&sandbox, &[&mount_root]);
    command.args(inner.get_args());
    command
        .env("RUST_LOG", "onboard_agent=debug")
        .env_remove("ONBOARD_AGENT_CONFIG");
    let mut agent = Running::start(command);
    agent.wait_for(&["watching for sticks", "mount_table=true"]);

    // In the agent's namespace: a tmpfs on the staging folder (outside the root), the key file
    // into it, then the mount moved onto the empty folder under the root.
    let script =
        "set -e; mount -t tmpfs stick \"$1\"; cp \"$2\" \"$1/icg.xml\"; mount --move \"$1\" \"$3\"";
    let nsenter = Command::new("nsenter")
        .args([
            "--target",
            &agent.pid().to_string(),
            "--mount",
            // The agent's root too (entering a mount namespace resets it to the namespace's): the
            // same as ours, unless the tests run in a chroot.
            "--root",
            "--",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&staging)
        .arg(&key_file)
        .arg(&mount_point)
        .output();
    match nsenter {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "cannot mount in the agent's namespace: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(error) => panic!("cannot run nsenter (util-linux): {error}"),
    }

    let woke = agent.wait_for(&["woken"]);
    assert!(woke.contains("MountTable"), "{woke}");
    agent.wait_for(&["key file found", "STICK/icg.xml"]);
    // The mount lives only in the agent's namespace.
    assert!(!mount_point.join("icg.xml").exists());

    let (status, log) = agent.stop(Signal::SIGTERM);
    assert_eq!(status.code(), Some(0), "{log}");
    assert_no_secret(&log);
    println!("a real tmpfs mount was noticed through the mount table:\n{log}");
}
