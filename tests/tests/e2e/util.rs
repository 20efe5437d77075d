//! Shared helpers: a server process over a temporary data directory, keys made and exported
//! through `ums-stub`'s command line, and `onboard-agent enroll` run for many devices at once.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use onboard_protocol::UnitId;
use onboard_protocol::admin::{AuditEntryView, DeviceView, KeyView, Page};

/// A `--limit` no test reaches, so one page holds a whole list.
const ALL: &str = "1000000";

use onboard_tests::programs::Programs;
use ums_stub::testing::ServeProcess;

/// The real binaries of this build.
pub(crate) fn programs() -> Programs {
    Programs::built().unwrap()
}

/// A server's data directory, and the server when it runs.
pub(crate) struct Ums {
    pub(crate) programs: Programs,
    pub(crate) dir: tempfile::TempDir,
    /// The data directory: `data` in `dir` unless the test put it elsewhere.
    data: PathBuf,
    pub(crate) serve: Option<ServeProcess>,
}

impl Ums {
    /// A server on a free loopback port.
    pub(crate) fn start() -> Ums {
        let mut ums = Ums::unstarted(None);
        ums.serve_on("127.0.0.1:0");
        ums
    }

    /// A server's config (the defaults) and data directory, not yet serving; the data directory
    /// is `data` if given (on a filesystem the test chose), else one of its own.
    pub(crate) fn unstarted(data: Option<PathBuf>) -> Ums {
        let programs = programs();
        let dir = tempfile::tempdir().unwrap();
        // The limits an administrator gets: a fleet behind one address makes no guesses.
        std::fs::write(dir.path().join("ums-stub.toml"), "").unwrap();
        let data = data.unwrap_or_else(|| dir.path().join("data"));
        Ums {
            programs,
            dir,
            data,
            serve: None,
        }
    }

    pub(crate) fn data(&self) -> PathBuf {
        self.data.clone()
    }

    /// Serves the data directory on `listen`.
    pub(crate) fn serve_on(&mut self, listen: &str) {
        let config = self.dir.path().join("ums-stub.toml");
        let serve = self
            .programs
            .serve()
            .data_dir(self.data())
            .config(config)
            .listen(listen)
            .start()
            .unwrap();
        self.serve = Some(serve);
    }

    /// Where it listens.
    pub(crate) fn addr(&self) -> std::net::SocketAddr {
        self.serve.as_ref().unwrap().addr()
    }

    /// Runs a `ums-stub` command on the data directory; its standard output.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        let output = self
            .programs
            .ums_stub()
            .arg("--data-dir")
            .arg(self.data())
            .arg("--config")
            .arg(self.dir.path().join("ums-stub.toml"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "ums-stub {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Every key, as `keys list --json` prints them (asked for one page holding all).
    pub(crate) fn keys(&self) -> Vec<KeyView> {
        let page: Page<KeyView> =
            serde_json::from_str(&self.cli(&["keys", "list", "--json", "--limit", ALL])).unwrap();
        assert_eq!(page.next_after, None, "one page holds every key");
        page.items
    }

    /// Every enrollment attempt, as `audit --json` prints them.
    pub(crate) fn enroll_audit(&self) -> Vec<AuditEntryView> {
        let page: Page<AuditEntryView> =
            serde_json::from_str(&self.cli(&["audit", "--json", "--limit", ALL])).unwrap();
        assert_eq!(page.next_after, None, "one page holds every entry");
        page.items
            .into_iter()
            .filter(|entry| entry.event == "enroll")
            .collect()
    }

    /// Every enrolled device, as `devices list --json` prints them.
    pub(crate) fn devices(&self) -> Vec<DeviceView> {
        let page: Page<DeviceView, UnitId> =
            serde_json::from_str(&self.cli(&["devices", "list", "--json", "--limit", ALL]))
                .unwrap();
        assert_eq!(page.next_after, None, "one page holds every device");
        page.items
    }

    /// Creates `count` one-time keys and exports every active key to `stick/icg.xml`, naming
    /// `server` (default: itself).
    pub(crate) fn one_time_stick(&self, count: usize, stick: &Path, server: Option<&str>) {
        self.cli(&[
            "keys",
            "create",
            "one-time",
            "--quantity",
            &count.to_string(),
        ]);
        std::fs::create_dir_all(stick).unwrap();
        let server = server.map_or_else(|| self.addr().to_string(), str::to_owned);
        self.cli(&[
            "keys",
            "export",
            "--out",
            stick.join("icg.xml").to_str().unwrap(),
            "--server",
            &server,
        ]);
    }
}

/// The unit ID of device `n`.
pub(crate) fn unit(n: usize) -> String {
    format!("02E0C5{n:06X}")
}

/// A device's home: an agent config with short backoffs, and its state directory.
pub(crate) fn device_home(root: &Path, n: usize) -> PathBuf {
    let home = root.join(unit(n));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        home.join("agent.toml"),
        "backoff_first_ms = 100\nbackoff_max_seconds = 1\nconnect_timeout_seconds = 5\n",
    )
    .unwrap();
    home
}

/// `onboard-agent` for device `n` under `root`, with `args` after the global options.
pub(crate) fn agent(programs: &Programs, root: &Path, n: usize, args: &[&str]) -> Command {
    let home = device_home(root, n);
    let mut command = programs.agent();
    command
        .env_remove("ONBOARD_AGENT_CONFIG")
        .env("RUST_LOG", "warn")
        .arg("--config")
        .arg(home.join("agent.toml"))
        .arg("--state-dir")
        .arg(home.join("state"))
        .args(["--unit-id", &unit(n)])
        .args(args)
        .stdin(Stdio::null());
    command
}

/// Runs `onboard-agent enroll ARGS` for devices `0..count` under `root`, `parallel` at a time;
/// the outputs by device.
pub(crate) fn enroll_all(
    programs: &Programs,
    root: &Path,
    count: usize,
    parallel: usize,
    args: &[&str],
) -> Vec<Output> {
    let next = Arc::new(Mutex::new(0usize));
    let outputs = Arc::new(Mutex::new(vec![None; count]));
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    std::thread::scope(|scope| {
        for _ in 0..parallel {
            let (next, outputs, args) = (next.clone(), outputs.clone(), args.clone());
            scope.spawn(move || {
                loop {
                    let n = {
                        let mut next = next.lock().unwrap();
                        let n = *next;
                        *next += 1;
                        n
                    };
                    if n >= count {
                        break;
                    }
                    let mut all = vec!["enroll"];
                    all.extend(args.iter().map(String::as_str));
                    let output = agent(programs, root, n, &all).output().unwrap();
                    outputs.lock().unwrap()[n] = Some(output);
                }
            });
        }
    });
    Arc::try_unwrap(outputs)
        .unwrap()
        .into_inner()
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect()
}
