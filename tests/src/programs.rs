//! The two programs as processes: `ums-stub` and `onboard-agent`.
//!
//! The end-to-end tests run the real binaries, which `cargo test --workspace` builds beside the
//! test executable ([`Programs::built`] brings them up to date). `onboard-demo` carries
//! both programs itself, so that one `cargo run` builds everything it needs: started as
//! `onboard-demo ums-stub ...` or `onboard-demo onboard-agent ...` it is that program, through the
//! same library entry points as the real binaries' thin `main`s ([`run_carried`]).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::Context;

/// How the programs are started.
#[derive(Debug, Clone)]
pub enum Programs {
    /// The real binaries.
    Binaries {
        /// `onboard-agent`.
        agent: PathBuf,
        /// `ums-stub`.
        ums_stub: PathBuf,
    },
    /// An executable that carries both (see [`run_carried`]).
    Carried(PathBuf),
}

impl Programs {
    /// The real binaries of this build: beside the running executable (or one folder up, from
    /// `deps/`). Under cargo (`cargo test -p onboard-tests` builds no other package's binaries)
    /// they are brought up to date once per test process, so that a test never runs a binary
    /// older than the code it tests; run by hand, they are built only when missing.
    pub fn built() -> anyhow::Result<Programs> {
        static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
        let exe = std::env::current_exe().context("cannot find the running executable")?;
        let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        if dir.ends_with("deps") {
            dir.pop();
        }
        let agent = dir.join("onboard-agent");
        let ums_stub = dir.join("ums-stub");
        let under_cargo = std::env::var_os("CARGO").is_some();
        if under_cargo || !(agent.exists() && ums_stub.exists()) {
            BUILT
                .get_or_init(|| build_binaries(&dir).map_err(|error| format!("{error:#}")))
                .clone()
                .map_err(anyhow::Error::msg)?;
        }
        Ok(Programs::Binaries { agent, ums_stub })
    }

    /// The running executable, which carries both programs.
    pub fn carried() -> anyhow::Result<Programs> {
        Ok(Programs::Carried(
            std::env::current_exe().context("cannot find the running executable")?,
        ))
    }

    /// A command for `onboard-agent`, with no argument yet.
    pub fn agent(&self) -> Command {
        match self {
            Programs::Binaries { agent, .. } => Command::new(agent),
            Programs::Carried(exe) => {
                let mut command = Command::new(exe);
                command.arg("onboard-agent");
                command
            }
        }
    }

    /// A command for `ums-stub`, with no argument yet.
    pub fn ums_stub(&self) -> Command {
        match self {
            Programs::Binaries { ums_stub, .. } => Command::new(ums_stub),
            Programs::Carried(exe) => {
                let mut command = Command::new(exe);
                command.arg("ums-stub");
                command
            }
        }
    }
}

/// Builds `onboard-agent` and `ums-stub` with cargo into the target folder `dir` belongs to, for
/// the same profile.
fn build_binaries(dir: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(cargo);
    build.args([
        "build",
        "-q",
        "-p",
        "onboard-agent",
        "-p",
        "ums-stub",
        "--bins",
    ]);
    if dir.ends_with("release") {
        build.arg("--release");
    }
    let status = build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .context("cannot run cargo to build onboard-agent and ums-stub")?;
    anyhow::ensure!(
        status.success(),
        "building onboard-agent and ums-stub failed"
    );
    Ok(())
}

/// When this process was started as `EXE onboard-agent ARGS` or `EXE ums-stub ARGS`, runs that
/// program to the end and returns its exit code; otherwise `None`.
pub fn run_carried() -> Option<ExitCode> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let program = args.get(1)?.to_str()?.to_owned();
    let main_with = match program.as_str() {
        "onboard-agent" => onboard_agent::cli::main_with,
        "ums-stub" => ums_stub::cli::main_with,
        _ => return None,
    };
    // The program's name in place of the demo's, as its own binary would see it.
    args.remove(0);
    Some(main_with(args))
}

/// `ums-stub serve` as a process; stopped with SIGTERM when dropped.
#[derive(Debug)]
pub struct ServeProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ServeProcess {
    /// Starts `serve` over `data_dir` on `listen` (port 0 for any), naming 127.0.0.1 and
    /// localhost in its TLS leaf, and waits until it listens. `config` is a TOML config file for
    /// it, if any.
    pub fn start(
        programs: &Programs,
        data_dir: &Path,
        listen: &str,
        config: Option<&Path>,
    ) -> anyhow::Result<ServeProcess> {
        let mut command = programs.ums_stub();
        command.arg("--data-dir").arg(data_dir);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        command.args([
            "serve",
            "--listen",
            listen,
            "--host",
            "127.0.0.1",
            "--host",
            "localhost",
        ]);
        ServeProcess::spawn(command)
    }

    /// Starts `command`, a whole `ums-stub ... serve ...` command line (an installed unit's, for
    /// example), and waits until it listens.
    pub fn spawn(mut command: Command) -> anyhow::Result<ServeProcess> {
        let mut child = command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start ums-stub serve")?;
        let stdout = child.stdout.take().context("no standard output")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(addr) = line.strip_prefix("listening on ") {
                        break addr.trim().parse::<SocketAddr>()?;
                    }
                }
                _ => {
                    let _ = child.kill();
                    let status = child.wait()?;
                    anyhow::bail!("ums-stub serve ended before it listened ({status})");
                }
            }
        };
        // Keep draining its standard output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(ServeProcess { child, addr })
    }

    /// Its process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it with SIGTERM (graceful) and waits; `kill -9` instead with `hard`.
    pub fn stop(mut self, hard: bool) -> anyhow::Result<std::process::ExitStatus> {
        signal(self.child.id(), if hard { "KILL" } else { "TERM" });
        wait_with_deadline(&mut self.child, Duration::from_secs(40))
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// Stops a child that still runs: SIGTERM, up to 10 s to end, then SIGKILL.
pub fn stop_child(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        signal(child.id(), "TERM");
        if wait_with_deadline(child, Duration::from_secs(10)).is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends a signal by name (`TERM`, `INT`, `KILL`) with `kill`.
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Waits for a child, at most `deadline`.
pub fn wait_with_deadline(
    child: &mut Child,
    deadline: Duration,
) -> anyhow::Result<std::process::ExitStatus> {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        anyhow::ensure!(
            started.elapsed() < deadline,
            "process {} did not end within {deadline:?}",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
