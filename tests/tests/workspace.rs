//! Properties of the workspace as a whole.

use std::process::Command;

/// One crypto provider for rustls across the workspace: aws-lc-rs, never ring beside it. (The
/// lock file lists optional dependencies no feature enables, so the resolved tree is what counts.)
#[test]
fn the_build_uses_aws_lc_rs_and_not_ring() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "tree",
            "--workspace",
            "--offline",
            "--edges",
            "normal,build,dev",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8(output.stdout).unwrap();
    let names: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split(' ').next())
        .collect();
    assert!(names.contains(&"aws-lc-rs"), "aws-lc-rs is the provider");
    assert!(
        !names.contains(&"ring"),
        "ring crept into the build: cargo tree -i ring"
    );
}

/// How tests start servers and signal processes: the rule the workspace's sources are held to.
mod starters {
    use std::path::{Path, PathBuf};

    /// Code that starts a server, or signals a process, other than through `ums_stub::testing`,
    /// with what to use instead. Each pattern is written in two pieces so that this file does not
    /// match itself.
    const FORBIDDEN: &[(&str, &str, &str)] = &[
        (
            "serve::",
            "spawn(",
            "ums_stub::testing::TestServer::builder()",
        ),
        (
            "serve::",
            "run(",
            "ums_stub::testing::TestServer::builder()",
        ),
        (
            "serve::",
            "run_with_metrics(",
            "ums_stub::testing::TestServer::builder()",
        ),
        (
            "serve::",
            "prepare(",
            "ums_stub::testing::TestServer::builder()",
        ),
        ("struct Serve", "Process", "ums_stub::testing::ServeProcess"),
        (
            "\"ser",
            "ve\"",
            "ums_stub::testing::ServeCommand (Programs::serve)",
        ),
        ("(\"ki", "ll\")", "ums_stub::testing::send_signal"),
    ];

    /// Lines that hold a forbidden pattern and start nothing, by file and text, with the reason.
    const ALLOWED: &[(&str, &str, &str)] = &[
        (
            "server-stub/tests/stub/layout.rs",
            "&[\"serve\", \"rig::control\"],",
            "the module `serve` in the table of layers",
        ),
        (
            "server-stub/tests/stub/rig_control.rs",
            "let output = dir.run(&[\"serve\", \"--test-rig-listen\", \"127.0.0.1:0\"]);",
            "a serve command line clap refuses (exit 2): nothing starts",
        ),
        (
            "tests/tests/packages/deb.rs",
            "\"serve\"",
            "the unit's ExecStart= line as expected; the test runs it with ServeProcess::spawn",
        ),
        (
            "tests/tests/packages/deb.rs",
            "\"ums-stub\" => (\"/etc/ums-stub/ums-stub.toml\", \"serve\"),",
            "the subcommand whose manual page the package ships",
        ),
        (
            "tests/tests/packages/image.rs",
            "serde_json::json!([\"serve\", \"--listen\", \"0.0.0.0:8443\"])",
            "the image's configured command, read from its config and compared",
        ),
        (
            "tests/tests/packages/image.rs",
            "serde_json::json!([\"/usr/bin/ums-stub\", \"serve\", \"--listen\", \"0.0.0.0:8443\"])",
            "the image's configured command line, read from its config and compared",
        ),
    ];

    /// A line of `path` that starts a server or signals a process another way.
    #[derive(Debug, PartialEq, Eq)]
    pub(super) struct Finding {
        pub(super) line: usize,
        pub(super) text: String,
        pub(super) instead: &'static str,
    }

    /// What `text` (the file at `path`, relative to the workspace root) does that the rule
    /// forbids. Comment lines are prose, not code; the lines in [`ALLOWED`] start nothing.
    pub(super) fn findings(path: &str, text: &str) -> Vec<Finding> {
        let mut found = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let code = line.trim();
            if code.starts_with("//") {
                continue;
            }
            let allowed = ALLOWED
                .iter()
                .any(|(file, allowed, _)| *file == path && *allowed == code);
            if allowed {
                continue;
            }
            for (head, tail, instead) in FORBIDDEN {
                if code.contains(&format!("{head}{tail}")) {
                    found.push(Finding {
                        line: index + 1,
                        text: code.to_owned(),
                        instead,
                    });
                }
            }
        }
        found
    }

    /// Whether the rule applies to `path` (relative to the workspace root): the tests, benchmarks
    /// and test support of every crate, and any source for signals sent by running `kill`. The
    /// module that is the one way (`server-stub/src/testing/`) and the servers' own code are
    /// left out, for starting servers is what they do.
    pub(super) fn scanned(path: &str) -> bool {
        let test_code = path.contains("/tests/") || path.contains("/benches/");
        let test_support = path.starts_with("tests/src/");
        path.ends_with(".rs") && path != "tests/tests/workspace.rs" && (test_code || test_support)
    }

    /// Every `.rs` file under `dir`, recursively, relative to `root`.
    fn sources(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.map(Result::unwrap) {
            let path = entry.path();
            let name = entry.file_name();
            if name == "target" || name.to_string_lossy().starts_with('.') {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                sources(root, &path, out);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let relative = path.strip_prefix(root).unwrap();
                out.push(relative.to_string_lossy().into_owned());
            }
        }
    }

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_owned()
    }

    /// Every test and benchmark starts its servers through `ums_stub::testing` (in-process or as
    /// a process) and signals processes through it: no other starter, no `kill` program.
    #[test]
    fn tests_and_benchmarks_start_servers_only_through_ums_stub_testing() {
        let root = root();
        let mut files = Vec::new();
        sources(&root, &root, &mut files);
        files.sort();
        let scanned: Vec<&String> = files.iter().filter(|path| scanned(path)).collect();
        // The scan reaches the starters that moved: a walk that found nothing passes nothing.
        for expected in [
            "server-stub/tests/stub/server.rs",
            "agent/tests/agent/rig.rs",
            "tests/src/programs.rs",
            "tests/src/fleet.rs",
            "tests/benches/connector.rs",
            "server-stub/benches/enroll.rs",
        ] {
            assert!(
                scanned.iter().any(|path| *path == expected),
                "{expected} is not scanned"
            );
        }
        let mut report = Vec::new();
        for path in &scanned {
            let text = std::fs::read_to_string(root.join(path)).unwrap();
            for finding in findings(path, &text) {
                report.push(format!(
                    "{path}:{}: {}  (use {})",
                    finding.line, finding.text, finding.instead
                ));
            }
        }
        assert!(
            report.is_empty(),
            "servers started or processes signalled outside ums_stub::testing:\n{}",
            report.join("\n")
        );
        // Each allowance still names a line that exists: none outlives what it excused.
        for (file, line, reason) in ALLOWED {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            assert!(
                text.lines().any(|code| code.trim() == *line),
                "{file} no longer holds {line:?} ({reason}): drop it from ALLOWED"
            );
        }
    }

    /// No source anywhere in the workspace runs the `kill` program.
    #[test]
    fn no_source_signals_by_running_kill() {
        let root = root();
        let mut files = Vec::new();
        sources(&root, &root, &mut files);
        let pattern = format!("(\"{}\")", "kill");
        let offenders: Vec<String> = files
            .iter()
            .filter(|path| *path != "tests/tests/workspace.rs")
            .filter(|path| {
                std::fs::read_to_string(root.join(path))
                    .unwrap()
                    .lines()
                    .any(|line| !line.trim().starts_with("//") && line.contains(&pattern))
            })
            .cloned()
            .collect();
        assert!(files.len() > 100, "the walk found {} sources", files.len());
        assert!(
            offenders.is_empty(),
            "these run `kill`; use ums_stub::testing::send_signal: {offenders:?}"
        );
    }

    #[test]
    fn the_rule_finds_each_other_way_and_lets_the_allowed_lines_and_comments_be() {
        let path = "agent/tests/agent/x.rs";
        let cases: &[(&str, usize)] = &[
            (
                "let running = ums_stub::serve::spawn(settings, listener).await?;",
                1,
            ),
            (
                "tokio::spawn(ums_stub::serve::run(shared, listener, tls, stop));",
                1,
            ),
            (
                "serve::run_with_metrics(shared, listener, None, tls, stop)",
                1,
            ),
            (
                "let (shared, tls) = ums_stub::serve::prepare(settings).await?;",
                1,
            ),
            ("pub(crate) struct ServeProcess {", 1),
            (".args([\"serve\", \"--listen\", \"127.0.0.1:0\"])", 1),
            ("let _ = Command::new(\"kill\").arg(\"-TERM\");", 1),
            ("std::process::Command::new(\"kill\")", 1),
            ("// serve::spawn( in prose", 0),
            ("let server = TestServer::builder().start().await?;", 0),
            ("ServeCommand::program(dir.command(&[])).start()", 0),
            ("send_signal(pid, Signal::SIGTERM)?;", 0),
            ("let served = serve(&dir);", 0),
        ];
        for (line, expected) in cases {
            assert_eq!(findings(path, line).len(), *expected, "{line}");
        }
        let found = findings(path, "a\nlet s = ums_stub::serve::spawn(x, y);\n");
        assert_eq!(
            found,
            [Finding {
                line: 2,
                text: "let s = ums_stub::serve::spawn(x, y);".to_owned(),
                instead: "ums_stub::testing::TestServer::builder()",
            }]
        );
        // An allowed line is allowed in its own file only.
        let allowed = "&[\"serve\", \"rig::control\"],";
        assert!(findings("server-stub/tests/stub/layout.rs", allowed).is_empty());
        assert_eq!(
            findings("server-stub/tests/stub/other.rs", allowed).len(),
            1
        );
        // Which files the rule covers.
        for (file, covered) in [
            ("server-stub/tests/stub/server.rs", true),
            ("agent/benches/idle.rs", true),
            ("tests/src/demo.rs", true),
            ("tests/tests/e2e/util.rs", true),
            ("server-stub/src/testing/process.rs", false),
            ("server-stub/src/cli/mod.rs", false),
            ("tests/tests/workspace.rs", false),
            ("docs/notes.md", false),
        ] {
            assert_eq!(scanned(file), covered, "{file}");
        }
    }
}
