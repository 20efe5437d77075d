//! `onboard-demo` as a person runs it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use onboard_tests::programs::{Signal, send_signal, wait_with_deadline};

const DEMO: &str = env!("CARGO_BIN_EXE_onboard-demo");

/// The temporary folder the demo named on its first line.
fn folder(first_line: &str) -> std::path::PathBuf {
    first_line.rsplit(" in ").next().unwrap().trim().into()
}

#[test]
fn the_demo_enrolls_every_device_shows_the_lists_and_cleans_up() {
    let output = Command::new(DEMO)
        .arg("--devices")
        .arg("4")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for words in [
        "[1/6] starting ums-stub",
        "creating keys: 2 one-time, 1 device-bound for 00E0C5D00004, 1 mass-deployment",
        "Exported 4 keys",
        "device 4 (00E0C5D00004): enrolled with a device-bound key",
        "4 of 4 devices enrolled",
        "$ ums-stub keys list",
        "4 devices",
        "Phase:           enrolled",
        "cleaned up",
    ] {
        assert!(text.contains(words), "{words:?} not in\n{text}");
    }
    let root = folder(text.lines().next().unwrap());
    assert!(!root.exists(), "{} is still there", root.display());
}

#[test]
fn an_interrupted_demo_stops_its_processes_and_cleans_up() {
    let mut child = Command::new(DEMO)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let root = folder(&first);
    // Interrupt it once the agents run.
    for line in lines.by_ref() {
        if line.unwrap().contains("[4/6]") {
            break;
        }
    }
    send_signal(child.id(), Signal::SIGINT).unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = wait_with_deadline(&mut child, Duration::from_secs(20)).unwrap();
    assert!(!status.success());
    assert!(
        rest.iter().any(|line| line.contains("cleaned up")),
        "{rest:?}"
    );
    assert!(!root.exists(), "{} is still there", root.display());
    // No process of the demo is left running in its folder.
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let left = String::from_utf8_lossy(&ps.stdout);
    assert!(!left.contains(root.to_str().unwrap()), "{left}");
}
