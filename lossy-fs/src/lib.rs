//! A filesystem that loses unsynced writes: a test tool in the manner of Jepsen's LazyFS.
//!
//! [`LossyFs::mount`] mounts an empty filesystem held in memory (FUSE, served by the `lossy-fs`
//! program of this crate in a process of its own, see [`server`]). Every write reaches it at
//! once, and every process reading it sees it, as a kernel's page cache would show it; but a
//! write is *durable* only once it is synced:
//!
//! - a file's bytes and length, by `fsync` or `fdatasync` of that file;
//! - a directory's entries (a file created, removed or renamed), by `fsync` of that directory.
//!   A new file that was synced but whose directory was not is gone after a cut, as POSIX allows.
//!
//! [`LossyFs::cut`] then drops everything not durable, as a power cut would: call it once the
//! processes that wrote are dead (SIGKILLed). [`LossyFs::durable_copy`] writes what a cut would
//! leave into an ordinary folder without touching the running filesystem, to check a running
//! process's promises. [`LossyFs::fail_syncs`] makes every sync fail with `EIO`, durable nothing.
//!
//! With `LOSSY_FS_TRACE=FILE` in its environment, the serving process writes a line to `FILE` for
//! every write (inode, offset, length), truncation, sync, creation, removal, rename and cut: to
//! see what a program made durable and when. It never writes the bytes.
//!
//! Metadata other than lengths and directory entries (modes, owners, times) is kept as written and
//! never lost. Hard links, symbolic links and extended attributes are not supported.
//!
//! Mounting needs `/dev/fuse` and the right to mount (root here: the kernel's `mount(2)`, no
//! `fusermount3`); where either is missing, [`LossyFs::mount`] fails and says why. It is a
//! dependency of tests only, never of the shipped binaries.

pub mod server;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

/// What one [`LossyFs::cut`] dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cut {
    /// Files whose bytes or length went back to their last sync.
    pub files: usize,
    /// Bytes that differed from the durable copy in those files (written since the last sync,
    /// counted by chunk), plus lengths lost.
    pub bytes: u64,
    /// Directory entries created, removed or renamed since their directory's last sync, undone.
    pub entries: usize,
}

/// A mounted lossy filesystem, served by a `lossy-fs` process; unmounted when dropped.
#[derive(Debug)]
pub struct LossyFs {
    mountpoint: PathBuf,
    child: Child,
    talk: Mutex<Option<(ChildStdin, BufReader<ChildStdout>)>>,
}

impl LossyFs {
    /// Mounts an empty lossy filesystem on `mountpoint` (an existing, empty directory). Fails,
    /// saying why, where FUSE cannot run.
    pub fn mount(mountpoint: &Path) -> io::Result<LossyFs> {
        let mountpoint = mountpoint.canonicalize()?;
        let program = program()?;
        let mut child = Command::new(&program)
            .arg(&mountpoint)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("cannot start {}: {error}", program.display()),
                )
            })?;
        let stdin = child.stdin.take().expect("piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut ready = String::new();
        stdout.read_line(&mut ready)?;
        if ready.trim_end() != "ready" {
            let mut why = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut why);
            }
            let _ = child.wait();
            return Err(io::Error::other(format!(
                "cannot mount the lossy filesystem on {} (FUSE needs /dev/fuse and the right to \
                 mount: root, or fusermount3 from the fuse3 package): {}",
                mountpoint.display(),
                why.trim()
            )));
        }
        Ok(LossyFs {
            mountpoint,
            child,
            talk: Mutex::new(Some((stdin, stdout))),
        })
    }

    /// Where it is mounted (links resolved).
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Drops every write not yet synced, as a power cut would. The processes that wrote must be
    /// dead: a handle still open is forgotten, and what is written through it afterwards lands
    /// on the state after the cut.
    pub fn cut(&self) -> Cut {
        let answer = self.ask("cut");
        let numbers: Vec<u64> = answer
            .strip_prefix("cut ")
            .unwrap_or_default()
            .split(' ')
            .filter_map(|n| n.parse().ok())
            .collect();
        match numbers[..] {
            [files, bytes, entries] => Cut {
                files: files as usize,
                bytes,
                entries: entries as usize,
            },
            _ => panic!("lossy-fs answered {answer:?} to a cut"),
        }
    }

    /// Makes everything written so far durable, as a machine left running long enough would
    /// (the kernel writes back on its own): for a set-up that must not be part of what is cut.
    pub fn sync_all(&self) {
        self.expect_ok("sync-all");
    }

    /// Writes what a cut now would leave into `to` (created if needed), without touching the
    /// filesystem: what a running process has made durable.
    pub fn durable_copy(&self, to: &Path) -> io::Result<()> {
        let to = to.canonicalize()?;
        let answer = self.ask(&format!("copy {}", to.display()));
        match answer.as_str() {
            "ok" => Ok(()),
            other => Err(io::Error::other(format!(
                "copying the durable state to {}: {other}",
                to.display()
            ))),
        }
    }

    /// While `failing`, every `fsync`, `fdatasync` and directory sync answers `EIO` and makes
    /// nothing durable: a disk that stopped taking writes.
    pub fn fail_syncs(&self, failing: bool) {
        self.expect_ok(if failing {
            "fail-syncs on"
        } else {
            "fail-syncs off"
        });
    }

    /// How many syncs of the file or directory at `relative` (a path inside the filesystem, as it
    /// is now) succeeded; `None` when there is no such file.
    pub fn syncs(&self, relative: &Path) -> Option<u64> {
        let answer = self.ask(&format!("syncs {}", relative.display()));
        answer.strip_prefix("syncs ")?.parse().ok()
    }

    /// How many files and directories are open (handles not yet released by the kernel).
    pub fn open_handles(&self) -> usize {
        let answer = self.ask("open-handles");
        answer
            .strip_prefix("open ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("lossy-fs answered {answer:?}"))
    }

    fn expect_ok(&self, command: &str) {
        let answer = self.ask(command);
        assert_eq!(answer, "ok", "lossy-fs answered {command:?}");
    }

    /// Sends one command and reads its one-line answer. The filesystem going away under a test
    /// is a failure of that test.
    fn ask(&self, command: &str) -> String {
        let mut talk = self
            .talk
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (stdin, stdout) = talk.as_mut().expect("open until dropped");
        let mut answer = String::new();
        let asked = writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .and_then(|()| stdout.read_line(&mut answer));
        match asked {
            Ok(n) if n > 0 => answer.trim_end().to_owned(),
            Ok(_) => panic!("lossy-fs ended before answering {command:?}"),
            Err(error) => panic!("lossy-fs did not answer {command:?}: {error}"),
        }
    }
}

impl Drop for LossyFs {
    /// Closes the command channel: the serving process unmounts (lazily) and exits, and with it
    /// the connection, so that nothing still using the filesystem can wait on it forever.
    fn drop(&mut self) {
        if let Ok(mut talk) = self.talk.lock() {
            talk.take();
        }
        let _ = self.child.wait();
    }
}

/// The `lossy-fs` program: `LOSSY_FS_PROGRAM` if set, else beside the running executable (or one
/// folder up, from `deps/`), else built with cargo for the same profile.
fn program() -> io::Result<PathBuf> {
    if let Some(path) = std::env::var_os("LOSSY_FS_PROGRAM") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let program = dir.join("lossy-fs");
    if !program.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut build = Command::new(cargo);
        build.args(["build", "-q", "-p", "lossy-fs", "--bin", "lossy-fs"]);
        if dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.current_dir(env!("CARGO_MANIFEST_DIR")).status()?;
        if !status.success() {
            return Err(io::Error::other("building the lossy-fs program failed"));
        }
    }
    Ok(program)
}
