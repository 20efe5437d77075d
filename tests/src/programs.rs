//! The two programs as processes: `ums-stub` and `onboard-agent`.
//!
//! The end-to-end tests run the real binaries, which `cargo test --workspace` builds beside the
//! test executable ([`Programs::built`] brings them up to date). `onboard-demo` carries
//! both programs itself, so that one `cargo run` builds everything it needs: started as
//! `onboard-demo ums-stub ...` or `onboard-demo onboard-agent ...` it is that program, through the
//! same library entry points as the real binaries' thin `main`s ([`run_carried`]).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::Context;
use ums_stub::testing::ServeCommand;

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

    /// `ums-stub serve` of these programs (`ums_stub::testing`), logging warnings and errors: on
    /// a free loopback port, naming 127.0.0.1 and localhost, until told otherwise.
    pub fn serve(&self) -> ServeCommand {
        ServeCommand::program(self.ums_stub()).env("RUST_LOG", "warn")
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
        // The features the tests build ums-stub with (the workspace's tests turn `testing` on),
        // so that this build and theirs share one ums-stub rather than replacing each other's.
        "--features",
        "ums-stub/testing",
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

/// The process helpers of `ums_stub::testing`: signals through `nix`, waits with a deadline.
pub use ums_stub::testing::{Signal, send_signal, stop_child, wait_with_deadline};
