//! Help texts explain themselves; usage errors exit 2, failures 1.

use crate::util::DataDir;

#[test]
fn every_command_has_help_that_names_its_options() {
    let dir = DataDir::new();
    let top = dir.ok(&["--help"]);
    for word in [
        "ums-id",
        "keys",
        "--data-dir",
        "UMS_STUB_DATA_DIR",
        "/var/lib/ums-stub",
    ] {
        assert!(top.contains(word), "top-level help lacks {word}:\n{top}");
    }
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["ums-id", "--help"],
            &["show", "export", "backup", "restore"],
        ),
        (&["ums-id", "restore", "--help"], &["--force"]),
        (
            &["keys", "--help"],
            &[
                "create",
                "list",
                "edit",
                "activate",
                "deactivate",
                "delete",
                "export",
            ],
        ),
        (
            &["keys", "create", "--help"],
            &["one-time", "device-bound", "mass"],
        ),
        (
            &["keys", "create", "device-bound", "--help"],
            &["--unit-id", "--import", "CSV"],
        ),
        (
            &["keys", "list", "--help"],
            &["--show", "--type", "--status", "--unit-id", "--json"],
        ),
        (
            &["keys", "export", "--help"],
            &["--format", "--out", "--server", "--force", "0600"],
        ),
    ];
    for (args, words) in cases {
        let help = dir.ok(args);
        for word in *words {
            assert!(help.contains(word), "{args:?} help lacks {word}:\n{help}");
        }
    }
    assert!(!dir.path().exists(), "help creates nothing");
}

#[test]
fn usage_errors_exit_2_and_failures_exit_1() {
    let dir = DataDir::new();
    let usage = dir.run(&["keys", "create", "one-time"]);
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("--quantity"));
    assert_eq!(
        dir.run(&["keys", "list", "--type", "two-time"])
            .status
            .code(),
        Some(2)
    );
    let failure = dir.fails(&["keys", "delete", "42"]);
    assert!(failure.contains("no key with ID 42"), "{failure}");
}
