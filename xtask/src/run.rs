//! The workspace the tasks run in (its root and target folder), and running the tools they drive
//! with their failures named.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::deb::Program;

/// The workspace: where its sources are and where cargo builds.
#[derive(Debug)]
pub(crate) struct Workspace {
    /// The workspace root (the folder of the top `Cargo.toml`).
    pub(crate) root: PathBuf,
    /// Cargo's target folder, as `cargo metadata` reports it (`CARGO_TARGET_DIR` included).
    pub(crate) target_dir: PathBuf,
}

impl Workspace {
    /// The workspace this xtask belongs to.
    pub(crate) fn find() -> anyhow::Result<Workspace> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask/ has no parent folder")?
            .to_path_buf();
        let metadata = output(
            cargo()
                .args(["metadata", "--format-version", "1", "--no-deps"])
                .current_dir(&root),
        )?;
        let metadata: serde_json::Value =
            serde_json::from_str(&metadata).context("cargo metadata printed no JSON")?;
        let target_dir = metadata["target_directory"]
            .as_str()
            .context("cargo metadata names no target_directory")?
            .into();
        Ok(Workspace { root, target_dir })
    }

    /// Cargo's output folder for `profile` (`dev` builds into `debug`).
    pub(crate) fn profile_dir(&self, profile: &str) -> PathBuf {
        self.target_dir.join(match profile {
            "dev" | "test" => "debug",
            "bench" => "release",
            other => other,
        })
    }

    /// Where the generated files of `program` go (manual pages, completions): below its profile's
    /// output folder, which the `target/release/` sources of its `[package.metadata.deb]` assets
    /// name whatever the profile.
    pub(crate) fn assets_dir(&self, program: &Program) -> PathBuf {
        self.profile_dir(&program.profile)
            .join("packaging")
            .join(program.name)
    }
}

/// `cargo`, the one running this task when there is one.
pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs `command` to its end; an error naming it unless it succeeds.
pub(crate) fn status(command: &mut Command) -> anyhow::Result<()> {
    let shown = shown(command);
    let status = command
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    anyhow::ensure!(status.success(), "{shown} failed ({status})");
    Ok(())
}

/// Runs `command` and returns its standard output; an error naming it and carrying its standard
/// error unless it succeeds.
pub(crate) fn output(command: &mut Command) -> anyhow::Result<String> {
    let shown = shown(command);
    let output = command
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{shown} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8(output.stdout).with_context(|| format!("{shown} printed no UTF-8"))
}

/// The command as a line, for messages.
fn shown(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}
