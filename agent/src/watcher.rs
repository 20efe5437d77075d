//! Waiting, without polling, for something that may have brought or taken a stick.
//!
//! Two sources wake the agent, and both are hints only (the rescan decides what is there):
//!
//! - the mount table: the kernel flags `/proc/self/mountinfo` with `POLLPRI | POLLERR` whenever a
//!   mount is added or removed. It sits in tokio's reactor as an [`AsyncFd`] with
//!   [`Interest::PRIORITY`], so waiting costs no thread and no timer.
//! - file events: a recursive `notify` (inotify) watch on each mount root that exists, not
//!   following links. Its thread forwards a unit message into a bounded channel of one; a full
//!   channel already means "look again", so bursts fold into one wake-up. Access events (opening
//!   or reading, which every rescan does itself) and metadata changes (atime updates) are dropped,
//!   or each rescan would wake the next.
//!
//! A root that appears later (`/run/media`, made by udisks for its first mount, which wakes the
//! agent through the mount table) or is deleted and made anew is watched from the next wake-up on
//! ([`StickWatcher::rewatch`]). Its own appearance wakes nothing: the folder above is not watched.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use notify::event::{EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

/// The file the kernel flags when the mount table changes.
pub const MOUNT_TABLE: &str = "/proc/self/mountinfo";

/// What woke the watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A mount was added or removed.
    MountTable,
    /// Something changed under a mount root.
    Files,
}

/// Neither source of wake-ups could be set up: sticks could only be found by polling.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot watch for sticks: the mount table ({MOUNT_TABLE}) cannot be watched ({mount_table}), \
     and file events cannot be had ({files})"
)]
pub struct WatchError {
    /// Why the mount table cannot be watched.
    pub mount_table: String,
    /// Why file events cannot be had.
    pub files: String,
}

/// Waits for mount-table changes and file events under the mount roots.
pub struct StickWatcher {
    roots: Vec<PathBuf>,
    mount_table: Option<AsyncFd<File>>,
    files: Option<FileEvents>,
}

struct FileEvents {
    watcher: RecommendedWatcher,
    hints: mpsc::Receiver<()>,
    /// The roots watched, with the (device, inode) they had, to notice one replaced.
    watched: HashMap<PathBuf, (u64, u64)>,
    /// Roots the notify thread saw deleted or moved away. Their watch is gone (or follows the
    /// moved folder), and a folder made in their place may reuse the inode number.
    lost: Arc<Mutex<HashSet<PathBuf>>>,
}

impl StickWatcher {
    /// Starts watching. Must run inside a tokio runtime with I/O enabled. A source that cannot be
    /// set up is logged and done without; with neither, it is an error.
    pub fn new(roots: Vec<PathBuf>) -> Result<StickWatcher, WatchError> {
        Self::with_mount_table(roots, Path::new(MOUNT_TABLE))
    }

    /// [`StickWatcher::new`] with another mount table file (for tests).
    pub fn with_mount_table(
        roots: Vec<PathBuf>,
        mount_table: &Path,
    ) -> Result<StickWatcher, WatchError> {
        let table = File::open(mount_table).and_then(register_priority);
        let files = FileEvents::new(&roots);
        let (mount_table, files) = match (table, files) {
            (Err(table), Err(files)) => {
                return Err(WatchError {
                    mount_table: table.to_string(),
                    files: files.to_string(),
                });
            }
            (table, files) => {
                if let Err(error) = &table {
                    tracing::warn!(%error, "the mount table cannot be watched; relying on file events");
                }
                if let Err(error) = &files {
                    tracing::warn!(%error, "file events cannot be had; relying on the mount table");
                }
                (table.ok(), files.ok())
            }
        };
        let mut watcher = StickWatcher {
            roots,
            mount_table,
            files,
        };
        watcher.rewatch();
        Ok(watcher)
    }

    /// The roots watched for file events right now.
    pub fn watched_roots(&self) -> Vec<PathBuf> {
        let mut roots: Vec<PathBuf> = self
            .files
            .as_ref()
            .map(|files| files.watched.keys().cloned().collect())
            .unwrap_or_default();
        roots.sort();
        roots
    }

    /// Whether mount-table changes are watched.
    pub fn watches_mount_table(&self) -> bool {
        self.mount_table.is_some()
    }

    /// Watches the roots that exist and are not watched yet (or were replaced), and forgets the
    /// ones that are gone.
    pub fn rewatch(&mut self) {
        let Some(files) = &mut self.files else {
            return;
        };
        let lost = std::mem::take(&mut *files.lost.lock().unwrap_or_else(PoisonError::into_inner));
        for root in &self.roots {
            let identity = std::fs::symlink_metadata(root)
                .ok()
                .filter(|meta| meta.is_dir())
                .map(|meta| (meta.dev(), meta.ino()));
            let known = files.watched.get(root).copied();
            if identity == known && !lost.contains(root) {
                continue;
            }
            if known.is_some() {
                let _ = files.watcher.unwatch(root);
                files.watched.remove(root);
            }
            if let Some(identity) = identity {
                match files.watcher.watch(root, RecursiveMode::Recursive) {
                    Ok(()) => {
                        files.watched.insert(root.clone(), identity);
                    }
                    Err(error) => {
                        tracing::warn!(root = %root.display(), %error, "cannot watch a mount root");
                    }
                }
            }
        }
    }

    /// Forgets the hints already due (a mount table flagged again, a file event queued): the look
    /// about to be made covers them. Does not wait.
    pub async fn discard_pending(&mut self) {
        if let Some(files) = &mut self.files {
            let _ = files.hints.try_recv();
        }
        if let Some(fd) = &self.mount_table {
            // A zero timeout polls the readiness once: taken if already flagged, else left.
            let ready = tokio::time::timeout(Duration::ZERO, fd.ready(Interest::PRIORITY)).await;
            if let Ok(Ok(mut guard)) = ready {
                guard.clear_ready();
            }
        }
    }

    /// Waits for the next hint that something changed. Never returns if neither source works.
    pub async fn changed(&mut self) -> Wake {
        let StickWatcher {
            mount_table, files, ..
        } = self;
        let mount_table = async {
            match mount_table {
                Some(fd) => match fd.ready(Interest::PRIORITY).await {
                    Ok(mut guard) => {
                        guard.clear_ready();
                        Ok(())
                    }
                    Err(error) => Err(error),
                },
                None => std::future::pending().await,
            }
        };
        let files = async {
            match files {
                Some(files) => {
                    if files.hints.recv().await.is_none() {
                        // The notify thread is gone; wait on the mount table alone.
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        let wake = tokio::select! {
            result = mount_table => match result {
                Ok(()) => Ok(Wake::MountTable),
                Err(error) => Err(error),
            },
            () = files => Ok(Wake::Files),
        };
        match wake {
            Ok(wake) => wake,
            Err(error) => {
                tracing::warn!(%error, "the mount table cannot be watched any longer");
                self.mount_table = None;
                // Rescan once, then wait on file events alone.
                Wake::MountTable
            }
        }
    }
}

/// Puts the mount table into tokio's reactor, waiting for `POLLPRI`.
///
/// tokio 1.54 deprecated the safe constructor in favour of an `unsafe` one whose contract is that
/// the descriptor stays open and the same while registered; this workspace forbids `unsafe`. The
/// contract holds here by construction: the `AsyncFd` owns the `File`, and a `File` always returns
/// the descriptor it owns and closes it only when dropped, after the `AsyncFd` deregistered it.
#[allow(deprecated)]
fn register_priority(file: File) -> std::io::Result<AsyncFd<File>> {
    AsyncFd::with_interest(file, Interest::PRIORITY)
}

impl FileEvents {
    fn new(roots: &[PathBuf]) -> notify::Result<FileEvents> {
        let (sender, hints) = mpsc::channel(1);
        let lost = Arc::new(Mutex::new(HashSet::new()));
        let roots = roots.to_vec();
        let lost_roots = Arc::clone(&lost);
        let handler = move |event: notify::Result<notify::Event>| {
            let worth_a_look = match &event {
                Ok(event) => {
                    if matches!(
                        event.kind,
                        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
                    ) {
                        let mut lost = lost_roots.lock().unwrap_or_else(PoisonError::into_inner);
                        lost.extend(
                            event
                                .paths
                                .iter()
                                .filter(|path| roots.contains(path))
                                .cloned(),
                        );
                    }
                    !matches!(
                        event.kind,
                        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_))
                    )
                }
                // An error (a queue overflow) means events were lost: look again.
                Err(_) => true,
            };
            if worth_a_look {
                // Full means a look is already due; closed means the agent is stopping.
                let _ = sender.try_send(());
            }
        };
        let config = notify::Config::default().with_follow_symlinks(false);
        let watcher = RecommendedWatcher::new(handler, config)?;
        Ok(FileEvents {
            watcher,
            hints,
            watched: HashMap::new(),
            lost,
        })
    }
}
