//! Help texts: the commands, the exit codes, and that `run` says enrollment is still to come.

use crate::util::{Sandbox, expect_code};

fn help(args: &[&str]) -> String {
    expect_code(&Sandbox::new().run(args), 0)
}

#[test]
fn help_lists_the_commands_and_the_exit_codes() {
    let text = help(&["--help"]);
    for word in [
        "run",
        "unit-id",
        "scan",
        "--config",
        "--state-dir",
        "--unit-id",
        "ONBOARD_AGENT_CONFIG",
        "Exit codes:",
    ] {
        assert!(text.contains(word), "{word:?} not in\n{text}");
    }
}

#[test]
fn scan_help_documents_its_exit_codes() {
    let text = help(&["scan", "--help"]);
    for word in [
        "Exit codes:",
        "0  usable keys found",
        "1  nothing usable",
        "2  the command line is wrong",
    ] {
        assert!(text.contains(word), "{word:?} not in\n{text}");
    }
}

#[test]
fn check_help_says_what_it_does_and_documents_its_exit_codes() {
    let text = help(&["check", "--help"]);
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for words in [
        "pinned to the file's UMS ID",
        "using none up",
        "--unit-id",
        "--json",
        "Exit codes:",
        "0 at least one key would be accepted",
        "3 no key would be accepted",
        "4 no valid key file",
    ] {
        assert!(flat.contains(words), "{words:?} not in\n{text}");
    }
    assert!(help(&["--help"]).contains("check"));
}

#[test]
fn run_help_says_what_the_daemon_does() {
    let text = help(&["run", "--help"]);
    // Help is wrapped to the terminal's width: compare with the line breaks taken out.
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for words in [
        "presents its keys in order and stores the device certificate",
        "within 30 days of expiry",
        "--mount-root",
        "/media, /run/media and /mnt",
    ] {
        assert!(
            flat.contains(words),
            "{words:?} not in
{text}"
        );
    }
}

#[test]
fn no_command_is_a_usage_error() {
    expect_code(&Sandbox::new().run(&[]), 2);
}
