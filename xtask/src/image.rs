//! The OCI image of `ums-stub`, built without a container daemon: one layer made with GNU tar,
//! added and configured with umoci.
//!
//! The layer holds the binary of the Debian package (the same bytes, stripped), the shared
//! libraries `ldd` names for it with the dynamic loader, an empty `/tmp` (for SQLite's temporary
//! files) and the data directory `/var/lib/ums-stub`, owned by the user the image runs as: no
//! shell, no CA bundle, no package manager. Ownership, modes and times are set in the tar archive
//! itself (numeric owners, the time of the last commit), so building needs no root and the same
//! commit gives the same layer.
//!
//! The configuration: user `65532:65532` (numeric: the image has no `/etc/passwd`), entrypoint
//! `/usr/bin/ums-stub`, command `serve --listen 0.0.0.0:8443`, the volume `/var/lib/ums-stub` (the
//! program's default data directory, so any `ums-stub` command given instead of `serve` works on
//! it), port 8443, stop signal SIGTERM (a graceful shutdown). The OCI configuration has no health
//! check (that is Docker's own format); probes go to the metrics listener's `/livez` and `/readyz`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::run::{self, Workspace};

/// The image's tag: the workspace's version.
pub(crate) const TAG: &str = env!("CARGO_PKG_VERSION");

/// The user and group the server runs as in the image.
pub(crate) const USER: u32 = 65532;

/// The data directory, a volume.
const DATA_DIR: &str = "var/lib/ums-stub";

/// Builds the image layout `out/ums-stub-oci` (replacing one there) from the server's Debian
/// package `deb`; its path.
pub(crate) fn build(workspace: &Workspace, deb: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    let work = tempfile::tempdir().context("cannot make a temporary folder")?;
    let rootfs = work.path().join("rootfs");
    stage(deb, work.path(), &rootfs)?;
    let epoch = source_date_epoch(workspace)?;
    let layer = work.path().join("layer.tar");
    make_layer(&rootfs, &layer, epoch)?;

    let layout = out.join("ums-stub-oci");
    if layout.exists() {
        std::fs::remove_dir_all(&layout)
            .with_context(|| format!("cannot remove the old {}", layout.display()))?;
    }
    let image = format!("{}:{TAG}", layout.display());
    let created = run::output(Command::new("date").args([
        "-u",
        "-d",
        &format!("@{epoch}"),
        "+%Y-%m-%dT%H:%M:%SZ",
    ]))?;
    let created = created.trim();
    let history = [
        "--history.created",
        created,
        "--history.created_by",
        "cargo xtask package",
    ];
    run::status(umoci().args(["init", "--layout"]).arg(&layout))?;
    run::status(umoci().args(["new", "--image", &image]))?;
    run::status(
        umoci()
            .args(["raw", "add-layer", "--image", &image])
            .args(history)
            .args([
                "--history.comment",
                "ums-stub, its shared libraries, /tmp, the data directory",
            ])
            .arg(&layer),
    )?;
    let user = format!("{USER}:{USER}");
    let version_label = format!("org.opencontainers.image.version={TAG}");
    run::status(
        umoci()
            .args(["config", "--image", &image])
            .args(history)
            .args(["--history.comment", "configuration"])
            .args(["--created", created, "--author", "onboard"])
            .args(["--config.user", &user])
            .args(["--config.entrypoint", "/usr/bin/ums-stub"])
            .args(["--config.cmd", "serve", "--config.cmd", "--listen"])
            .args(["--config.cmd", "0.0.0.0:8443"])
            .args(["--config.volume", "/var/lib/ums-stub"])
            .args(["--config.exposedports", "8443/tcp"])
            .args(["--config.stopsignal", "SIGTERM"])
            .args(["--config.label", "org.opencontainers.image.title=ums-stub"])
            .args(["--config.label", &version_label])
            .args([
                "--config.label",
                "org.opencontainers.image.licenses=Apache-2.0",
            ])
            .args([
                "--config.label",
                "org.opencontainers.image.description=UMS stub server: first-authentication \
                 keys, EST enrollment, device certificates",
            ]),
    )?;
    run::status(umoci().args(["gc", "--layout"]).arg(&layout))?;
    // umoci writes its blobs private (0600); nothing in them is secret, and whoever loads the
    // image (skopeo, podman) need not be the one who built it.
    readable(&layout)?;
    Ok(layout)
}

/// Makes the files under `dir` readable by all (0644, folders 0755).
fn readable(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let mode = if path.is_dir() {
            readable(&path)?;
            0o755
        } else {
            0o644
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot chmod {}", path.display()))?;
    }
    Ok(())
}

fn umoci() -> Command {
    Command::new("umoci")
}

/// Lays out the image's files under `rootfs`: the binary from the package, its libraries, `/tmp`
/// and the data directory.
fn stage(deb: &Path, work: &Path, rootfs: &Path) -> anyhow::Result<()> {
    let unpacked = work.join("deb");
    run::status(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&unpacked))?;
    let binary = rootfs.join("usr/bin/ums-stub");
    copy(&unpacked.join("usr/bin/ums-stub"), &binary)?;
    for library in shared_libraries(&binary)? {
        let relative = library
            .strip_prefix("/")
            .with_context(|| format!("ldd named a relative path {}", library.display()))?;
        // The file itself, at the path the binary looks it up by (symbolic links followed).
        copy(&library, &rootfs.join(relative))?;
    }
    for dir in ["tmp", DATA_DIR] {
        std::fs::create_dir_all(rootfs.join(dir))?;
    }
    Ok(())
}

/// Copies a file, keeping its mode, making the folders it goes in.
fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// The shared libraries `binary` loads, and its dynamic loader, as `ldd` names them (absolute
/// paths; the kernel's vDSO has none).
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let printed = run::output(Command::new("ldd").arg(binary))?;
    parse_ldd(&printed).with_context(|| format!("ldd {}", binary.display()))
}

/// The absolute paths in `ldd`'s lines: `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`
/// and `/lib64/ld-linux-x86-64.so.2 (0x...)`; an error for a library it cannot find.
fn parse_ldd(printed: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for line in printed.lines() {
        let path = match line.split_once("=>") {
            Some((name, after)) => {
                anyhow::ensure!(
                    !after.trim().starts_with("not found"),
                    "{} is not found",
                    name.trim()
                );
                after
            }
            None => line,
        };
        if let Some(path) = path
            .split_whitespace()
            .next()
            .filter(|p| p.starts_with('/'))
        {
            paths.push(PathBuf::from(path));
        }
    }
    Ok(paths)
}

/// The time the layer's files and the image carry: `SOURCE_DATE_EPOCH` when set, else the time of
/// the last commit (so the same commit gives the same image).
fn source_date_epoch(workspace: &Workspace) -> anyhow::Result<u64> {
    let text = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) => text,
        Err(_) => run::output(
            Command::new("git")
                .args(["log", "-1", "--format=%ct"])
                .current_dir(&workspace.root),
        )?,
    };
    text.trim()
        .parse()
        .with_context(|| format!("not a time in seconds: {text:?}"))
}

/// Writes the layer archive: every file owned by root, except the data directory (the image's
/// user, mode 0700) and `/tmp` (mode 1777), in name order with one time.
fn make_layer(rootfs: &Path, layer: &Path, epoch: u64) -> anyhow::Result<()> {
    let tar = |owner: u32, mode: Option<&str>| {
        let mut command = Command::new("tar");
        command
            .arg("--file")
            .arg(layer)
            .arg("--directory")
            .arg(rootfs)
            .args(["--format=gnu", "--sort=name", "--numeric-owner"])
            .arg(format!("--owner={owner}"))
            .arg(format!("--group={owner}"))
            .arg(format!("--mtime=@{epoch}"));
        if let Some(mode) = mode {
            command.arg(format!("--mode={mode}"));
        }
        command
    };
    let mut top: Vec<String> = std::fs::read_dir(rootfs)?
        .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    top.retain(|name| name != "var" && name != "tmp");
    top.sort();
    // Everything but /var and /tmp, then /var and /var/lib alone.
    run::status(tar(0, None).arg("--create").args(&top))?;
    run::status(
        tar(0, None)
            .args(["--append", "--no-recursion"])
            .args(["var", "var/lib"]),
    )?;
    run::status(
        tar(0, Some("1777"))
            .args(["--append", "--no-recursion"])
            .arg("tmp"),
    )?;
    run::status(
        tar(USER, Some("0700"))
            .args(["--append", "--no-recursion"])
            .arg(DATA_DIR),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines_give_the_libraries_and_the_loader() {
        let printed = "\tlinux-vdso.so.1 (0x00007ffd0b9e2000)\n\
            \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f5e1c000000)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f5e1be00000)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f5e1c2a0000)\n";
        assert_eq!(
            parse_ldd(printed).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn a_library_ldd_cannot_find_fails_the_image() {
        let error = parse_ldd("\tlibmissing.so.1 => not found\n").unwrap_err();
        assert!(error.to_string().contains("libmissing.so.1"), "{error}");
    }
}
