//! `cargo xtask`: the project's build tasks, run from anywhere in the workspace through the alias
//! in `.cargo/config.toml` (`xtask = "run -q -p xtask --"`).
//!
//! `cargo xtask package` builds both programs, generates their manual pages and shell completions
//! from their clap commands ([`generate`]), makes the Debian packages with cargo-deb ([`deb`]) and
//! the OCI image of `ums-stub` with umoci ([`image`]), into `target/packages/`:
//!
//! - `ums-stub_VERSION-1_ARCH.deb` and `onboard-agent_VERSION-1_ARCH.deb`;
//! - `ums-stub-oci/`, an OCI image layout tagged `VERSION`.
//!
//! By default `ums-stub` is built with the release profile and `onboard-agent` with the device
//! profile (the one its size is measured on); `--profile NAME` builds both with another. CI packages
//! the debug binaries its tests already built (`--profile dev`): what it checks is the packaging, not
//! the optimised build, which would cost two more full builds.
//!
//! Needs cargo-deb 3.8.0 (`cargo install cargo-deb --version 3.8.0 --locked`), and for the image
//! umoci, GNU tar and ldd (Debian's `umoci`, `tar`, `libc-bin`).

mod deb;
mod generate;
mod image;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// The project's build tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Build the Debian packages of ums-stub and onboard-agent and the OCI image of ums-stub into
    /// target/packages/.
    Package(PackageArgs),
}

/// What `package` builds, and where.
#[derive(Debug, Args)]
struct PackageArgs {
    /// Build both programs with this cargo profile instead of release (ums-stub) and device
    /// (onboard-agent). `dev` packages the debug binaries the tests build, as CI does.
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
    /// Where the packages and the image go [default: target/packages].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The Debian packages only, no image.
    #[arg(long)]
    no_image: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Package(args) => package(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cargo xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo xtask package`.
fn package(args: PackageArgs) -> anyhow::Result<()> {
    let workspace = run::Workspace::find()?;
    let out = args
        .out
        .unwrap_or_else(|| workspace.target_dir.join("packages"));
    std::fs::create_dir_all(&out)?;
    let out = std::fs::canonicalize(&out)?;
    deb::check_cargo_deb()?;
    let programs = deb::Program::both(args.profile.as_deref());
    deb::build(&workspace, &programs)?;
    let mut server_deb = None;
    for program in &programs {
        generate::man_and_completions(
            program.name,
            program.command(),
            &workspace.assets_dir(program),
        )?;
        let deb = deb::package(&workspace, program, &out)?;
        println!("{}", deb.display());
        if program.name == deb::SERVER {
            server_deb = Some(deb);
        }
    }
    if !args.no_image {
        let server_deb = server_deb.expect("the server is one of the programs");
        let layout = image::build(&workspace, &server_deb, &out)?;
        println!("{}:{}", layout.display(), image::TAG);
    }
    Ok(())
}
