//! The Debian packages: both programs built with cargo, then packaged by cargo-deb from the
//! `[package.metadata.deb]` tables of `server-stub/Cargo.toml` and `agent/Cargo.toml` (binary,
//! unit, conffile, manual pages, completions, changelog, copyright).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::run::{self, Workspace};

/// The cargo-deb release the packages are made with (CI installs this one, `--locked`).
pub(crate) const CARGO_DEB_VERSION: &str = "3.8.0";

/// The server's package (and program) name.
pub(crate) const SERVER: &str = "ums-stub";

/// The agent's package (and program) name.
pub(crate) const AGENT: &str = "onboard-agent";

/// One program to package: its cargo package, binary and Debian package share the name.
#[derive(Debug, Clone)]
pub(crate) struct Program {
    /// `ums-stub` or `onboard-agent`.
    pub(crate) name: &'static str,
    /// The cargo profile it is built with.
    pub(crate) profile: String,
}

impl Program {
    /// Both programs: the server with the release profile, the agent with the device profile
    /// (`[profile.device]`, what device images carry), or both with `profile` when given.
    pub(crate) fn both(profile: Option<&str>) -> [Program; 2] {
        let pick = |default: &str| profile.unwrap_or(default).to_owned();
        [
            Program {
                name: SERVER,
                profile: pick("release"),
            },
            Program {
                name: AGENT,
                profile: pick("device"),
            },
        ]
    }

    /// Its command line, which the manual pages and completions are generated from.
    pub(crate) fn command(&self) -> clap::Command {
        match self.name {
            SERVER => ums_stub::cli::command(),
            _ => onboard_agent::cli::command(),
        }
    }
}

/// Fails unless `cargo deb` is cargo-deb [`CARGO_DEB_VERSION`], saying how to install it.
pub(crate) fn check_cargo_deb() -> anyhow::Result<()> {
    let install = format!("cargo install cargo-deb --version {CARGO_DEB_VERSION} --locked");
    let version = run::output(run::cargo().args(["deb", "--version"]))
        .with_context(|| format!("cargo-deb is missing: {install}"))?;
    anyhow::ensure!(
        version.split_whitespace().nth(1) == Some(CARGO_DEB_VERSION),
        "cargo deb --version says {:?}; the packages are made with cargo-deb {CARGO_DEB_VERSION}: \
         {install}",
        version.trim()
    );
    Ok(())
}

/// Builds the programs' binaries: one `cargo build` per profile, with every program of that
/// profile in it (as the tests build them, so that a `dev` build reuses theirs).
pub(crate) fn build(workspace: &Workspace, programs: &[Program]) -> anyhow::Result<()> {
    let mut profiles: Vec<&str> = programs.iter().map(|p| p.profile.as_str()).collect();
    profiles.sort_unstable();
    profiles.dedup();
    for profile in profiles {
        let mut build = run::cargo();
        build
            .args(["build", "--locked", "--bins", "--profile", profile])
            .current_dir(&workspace.root);
        for program in programs.iter().filter(|p| p.profile == profile) {
            build.args(["-p", program.name]);
        }
        run::status(&mut build)?;
    }
    Ok(())
}

/// Packages `program`, already built, with cargo-deb into `out`; the package's path.
pub(crate) fn package(
    workspace: &Workspace,
    program: &Program,
    out: &Path,
) -> anyhow::Result<PathBuf> {
    let printed = run::output(
        run::cargo()
            // --strip: also a binary built with debug information (CI's dev build) is stripped.
            .args([
                "deb",
                "--no-build",
                "--locked",
                "--strip",
                "-p",
                program.name,
            ])
            .args(["--profile", &program.profile])
            .arg("--output")
            .arg(out)
            .current_dir(&workspace.root),
    )?;
    // cargo-deb prints the package's path last.
    let deb = printed
        .lines()
        .map(str::trim)
        .rfind(|line| line.ends_with(".deb"))
        .with_context(|| format!("cargo deb printed no package path: {printed}"))?;
    Ok(PathBuf::from(deb))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The changelog's newest entry is the version cargo-deb gives the package (revision 1).
    #[test]
    fn each_changelog_names_the_workspace_version() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        for name in [SERVER, AGENT] {
            let changelog = root.join("packaging").join(name).join("changelog");
            let text = std::fs::read_to_string(&changelog).unwrap();
            let first = text.lines().next().unwrap();
            let expected = format!("{name} ({}-1) ", env!("CARGO_PKG_VERSION"));
            assert!(
                first.starts_with(&expected),
                "{}: {first:?} should start with {expected:?}",
                changelog.display()
            );
        }
    }
}
