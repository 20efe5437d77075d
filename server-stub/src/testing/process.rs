//! `ums-stub serve` as a process, and signals to the processes a test starts.
//!
//! [`ServeCommand`] builds the command line (`PROGRAM [--data-dir D] [--config C] serve --listen
//! ADDRESS --host H... EXTRA`), [`ServeProcess`] runs it and reads the address it listens on from
//! the line it prints (`listening on ADDRESS`). Signals go through [`send_signal`]
//! (`kill(2)` by the `nix` crate), never by running the `kill` program.
//!
//! ```no_run
//! use ums_stub::testing::{ServeCommand, Signal, send_signal};
//!
//! # fn main() -> anyhow::Result<()> {
//! let data = tempfile::tempdir()?;
//! let server = ServeCommand::binary("target/debug/ums-stub")
//!     .data_dir(data.path().join("data"))
//!     .env("RUST_LOG", "warn")
//!     .start()?;
//! println!("serving on {} as process {}", server.addr(), server.pid());
//! // SIGTERM: a graceful stop, exit 0 (`kill()` sends SIGKILL, a crash).
//! let status = server.terminate()?;
//! assert!(status.success());
//! // Any other process a test started, the same way.
//! let mut agent = std::process::Command::new("sleep").arg("60").spawn()?;
//! send_signal(agent.id(), Signal::SIGINT)?;
//! agent.wait()?;
//! # Ok(())
//! # }
//! ```

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
pub use nix::sys::signal::Signal;

/// How long [`ServeProcess::terminate`] waits for a graceful stop: the server's own drain time
/// (30 s) and some.
pub const STOP_DEADLINE: Duration = Duration::from_secs(40);

/// How long a dropped process gets to end after SIGTERM before SIGKILL.
const DROP_DEADLINE: Duration = Duration::from_secs(10);

/// Sends `signal` to process `pid`.
pub fn send_signal(pid: u32, signal: Signal) -> anyhow::Result<()> {
    let raw = i32::try_from(pid).with_context(|| format!("{pid} is no process ID"))?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), signal)
        .with_context(|| format!("cannot send {signal} to process {pid}"))
}

/// Waits for `child` to end, at most `deadline`.
pub fn wait_with_deadline(child: &mut Child, deadline: Duration) -> anyhow::Result<ExitStatus> {
    let started = Instant::now();
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

/// Stops a child that still runs: SIGTERM, up to 10 s to end, then SIGKILL.
pub fn stop_child(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = send_signal(child.id(), Signal::SIGTERM);
        if wait_with_deadline(child, DROP_DEADLINE).is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The command line of `ums-stub serve`, built up and started with [`ServeCommand::start`].
/// Defaults: listen on `127.0.0.1:0`, host names `127.0.0.1` and `localhost`, standard error
/// inherited.
#[derive(Debug)]
#[must_use = "a command starts nothing until `start` is called"]
pub struct ServeCommand {
    program: Command,
    data_dir: Option<PathBuf>,
    config: Option<PathBuf>,
    listen: String,
    hosts: Vec<String>,
    extra: Vec<OsString>,
    shell_prefix: Option<String>,
    stderr: Option<Stdio>,
}

impl ServeCommand {
    /// `serve` of the `ums-stub` binary at `path`.
    pub fn binary(path: impl AsRef<OsStr>) -> ServeCommand {
        ServeCommand::program(Command::new(path))
    }

    /// `serve` of `program`: a command that is `ums-stub` with the arguments (and environment)
    /// it holds so far, such as an executable carrying it (`EXE ums-stub`).
    pub fn program(program: Command) -> ServeCommand {
        ServeCommand {
            program,
            data_dir: None,
            config: None,
            listen: "127.0.0.1:0".to_owned(),
            hosts: vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            extra: Vec::new(),
            shell_prefix: None,
            stderr: None,
        }
    }

    /// `--data-dir`.
    pub fn data_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(path.into());
        self
    }

    /// `--config`.
    pub fn config(mut self, path: impl Into<PathBuf>) -> Self {
        self.config = Some(path.into());
        self
    }

    /// `--listen` (default `127.0.0.1:0`: a free loopback port).
    pub fn listen(mut self, address: impl Into<String>) -> Self {
        self.listen = address.into();
        self
    }

    /// The `--host` names (default `127.0.0.1` and `localhost`).
    pub fn hosts(mut self, hosts: &[&str]) -> Self {
        self.hosts = hosts.iter().map(|host| (*host).to_owned()).collect();
        self
    }

    /// One more argument of `serve`, after the others.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.extra.push(arg.as_ref().to_owned());
        self
    }

    /// An environment variable for the server.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.program.env(key, value);
        self
    }

    /// Where its standard error goes (a log file, say; default: the test's).
    pub fn stderr(mut self, stderr: impl Into<Stdio>) -> Self {
        self.stderr = Some(stderr.into());
        self
    }

    /// Runs it through `sh -c 'PREFIX exec ums-stub …'`: `PREFIX` sets up what it starts under,
    /// such as a `ulimit`.
    pub fn shell_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.shell_prefix = Some(prefix.into());
        self
    }

    /// The whole command line.
    fn into_command(self) -> (Command, Option<Stdio>) {
        let mut args: Vec<OsString> = self
            .program
            .get_args()
            .map(OsStr::to_owned)
            .collect::<Vec<_>>();
        if let Some(data_dir) = &self.data_dir {
            args.extend(["--data-dir".into(), data_dir.clone().into_os_string()]);
        }
        if let Some(config) = &self.config {
            args.extend(["--config".into(), config.clone().into_os_string()]);
        }
        args.extend(["serve".into(), "--listen".into(), self.listen.into()]);
        for host in self.hosts {
            args.extend(["--host".into(), host.into()]);
        }
        args.extend(self.extra);
        let program = self.program.get_program().to_owned();
        let mut command = match self.shell_prefix {
            Some(prefix) => {
                let mut command = Command::new("sh");
                command
                    .arg("-c")
                    .arg(format!("{prefix} exec \"$0\" \"$@\""))
                    .arg(program)
                    .args(args);
                command
            }
            None => {
                let mut command = Command::new(program);
                command.args(args);
                command
            }
        };
        for (key, value) in self.program.get_envs() {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        if let Some(dir) = self.program.get_current_dir() {
            command.current_dir(dir);
        }
        (command, self.stderr)
    }

    /// Starts it and waits until it listens.
    pub fn start(self) -> anyhow::Result<ServeProcess> {
        let (mut command, stderr) = self.into_command();
        if let Some(stderr) = stderr {
            command.stderr(stderr);
        }
        ServeProcess::spawn(command)
    }
}

/// `ums-stub serve` running as a process; stopped (SIGTERM, then SIGKILL after 10 s) when
/// dropped.
#[derive(Debug)]
pub struct ServeProcess {
    child: Child,
    addr: SocketAddr,
    printed: Arc<Mutex<Vec<String>>>,
}

impl ServeProcess {
    /// Starts `command`, a whole `ums-stub … serve …` command line (an installed unit's, say),
    /// and waits until it prints the address it listens on. Its standard output is read to the
    /// end meanwhile ([`ServeProcess::printed`]); standard error is left as `command` has it.
    pub fn spawn(mut command: Command) -> anyhow::Result<ServeProcess> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {:?}", command.get_program()))?;
        let stdout = child.stdout.take().context("no standard output")?;
        let mut lines = BufReader::new(stdout).lines();
        let printed = Arc::new(Mutex::new(Vec::new()));
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    let addr = line.strip_prefix("listening on ").map(str::trim);
                    printed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(line.clone());
                    if let Some(addr) = addr {
                        break addr
                            .parse::<SocketAddr>()
                            .with_context(|| format!("serve printed {line:?}"))?;
                    }
                }
                _ => {
                    let _ = child.kill();
                    let status = child.wait()?;
                    anyhow::bail!("ums-stub serve ended before it listened ({status})");
                }
            }
        };
        // Keep reading its standard output, so that it never blocks on a full pipe.
        let kept = printed.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Ok(ServeProcess {
            child,
            addr,
            printed,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Its process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The lines it has printed on standard output so far.
    pub fn printed(&self) -> Vec<String> {
        self.printed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sends it `signal`.
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        send_signal(self.pid(), signal)
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops it with SIGTERM (graceful) and waits, at most [`STOP_DEADLINE`].
    pub fn terminate(self) -> anyhow::Result<ExitStatus> {
        self.stop_with(Signal::SIGTERM)
    }

    /// Kills it with SIGKILL (a crash, a power cut) and waits.
    pub fn kill(self) -> anyhow::Result<ExitStatus> {
        self.stop_with(Signal::SIGKILL)
    }

    /// Sends `signal` and waits for it to end, at most [`STOP_DEADLINE`].
    pub fn stop_with(mut self, signal: Signal) -> anyhow::Result<ExitStatus> {
        send_signal(self.child.id(), signal)?;
        wait_with_deadline(&mut self.child, STOP_DEADLINE)
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}
