//! `run`: look for sticks at start-up, then wait for hints and look again, until told to stop.
//!
//! For now it only reports: each key file found (path, format, number of keys, short UMS ID
//! fingerprint; never a key value), each one gone, each file skipped and why. Enrollment with the
//! keys found is a later step. What it reports is also published to an [`Observer`], which is how
//! tests follow it, and which counts wake-ups so that idleness can be measured.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use onboard_protocol::{Format, KeyKind};
use tokio::sync::watch;

use crate::config::Settings;
use crate::sticks::{self, Scan};
use crate::watcher::{StickWatcher, WatchError};

/// How long to let a burst of changes (a mount and the folders made for it, a file being copied)
/// settle after the first hint before looking. Only ever waited after a hint, never while idle.
pub const SETTLE: Duration = Duration::from_millis(200);

/// Why `run` could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Neither the mount table nor file events can be watched.
    #[error(transparent)]
    Watch(#[from] WatchError),
    /// The stop signals cannot be caught.
    #[error("cannot catch SIGINT and SIGTERM")]
    Signals(#[source] std::io::Error),
}

/// A view into a running `run`: how often it woke and looked, and what it found last.
#[derive(Debug, Clone)]
pub struct Observer {
    inner: Arc<ObserverInner>,
}

#[derive(Debug)]
struct ObserverInner {
    rescans: AtomicU64,
    wakeups: AtomicU64,
    latest: watch::Sender<Option<Arc<Scan>>>,
}

impl Default for Observer {
    fn default() -> Self {
        Self::new()
    }
}

impl Observer {
    /// An observer with nothing seen yet.
    pub fn new() -> Observer {
        Observer {
            inner: Arc::new(ObserverInner {
                rescans: AtomicU64::new(0),
                wakeups: AtomicU64::new(0),
                latest: watch::channel(None).0,
            }),
        }
    }

    /// How many looks over the mount roots were made, the one at start-up included.
    pub fn rescans(&self) -> u64 {
        self.inner.rescans.load(Ordering::SeqCst)
    }

    /// How many times the agent woke from waiting (a mount-table change or a file event).
    pub fn wakeups(&self) -> u64 {
        self.inner.wakeups.load(Ordering::SeqCst)
    }

    /// Receives the latest look's result (`None` until the first one is done).
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Scan>>> {
        self.inner.latest.subscribe()
    }
}

/// Catches SIGINT and SIGTERM; the future completes on the first one. Must be called inside a
/// tokio runtime.
pub fn stop_signals() -> Result<impl Future<Output = ()>, RunError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    Ok(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, "stopping");
    })
}

/// Looks for sticks under the mount roots, then waits for hints and looks again, logging what
/// changed, until `shutdown` completes.
pub async fn run(
    settings: &Settings,
    shutdown: impl Future<Output = ()>,
    observer: Observer,
) -> Result<(), RunError> {
    let roots = settings.mount_roots.clone();
    let limits = settings.key_file_limits();
    // Watch before the first look, so nothing that happens during it is missed.
    let mut watcher = StickWatcher::new(roots.clone())?;
    tokio::pin!(shutdown);
    let mut log = ScanLog::default();
    let mut first = true;
    loop {
        let task = {
            let roots = roots.clone();
            tokio::task::spawn_blocking(move || sticks::scan_roots(&roots, &limits))
        };
        // A look at a stick that hangs (a dying device) must not keep the agent from stopping.
        let scan = tokio::select! {
            result = task => result,
            () = &mut shutdown => break,
        };
        observer.inner.rescans.fetch_add(1, Ordering::SeqCst);
        match scan {
            Ok(scan) => {
                log.report(&scan);
                observer.inner.latest.send_replace(Some(Arc::new(scan)));
            }
            Err(error) => tracing::error!(%error, "a look at the mount roots failed"),
        }
        if first {
            first = false;
            let roots: Vec<String> = roots
                .iter()
                .map(|root| root.display().to_string())
                .collect();
            let watched: Vec<String> = watcher
                .watched_roots()
                .iter()
                .map(|root| root.display().to_string())
                .collect();
            tracing::info!(
                roots = %roots.join(", "),
                watched = %watched.join(", "),
                mount_table = watcher.watches_mount_table(),
                "watching for sticks"
            );
        }

        let wake = tokio::select! {
            wake = watcher.changed() => wake,
            () = &mut shutdown => break,
        };
        observer.inner.wakeups.fetch_add(1, Ordering::SeqCst);
        tracing::debug!(?wake, "woken; looking again");
        tokio::select! {
            () = tokio::time::sleep(SETTLE) => {}
            () = &mut shutdown => break,
        }
        // Whatever came during the settling is covered by the look about to be made.
        watcher.discard_pending().await;
        watcher.rewatch();
    }
    tracing::info!("stopped");
    Ok(())
}

/// What a key file looked like last time, to log it again only when it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    format: Format,
    size: u64,
    keys: usize,
    ums_id: String,
}

/// Logs the difference between one look and the last.
#[derive(Debug, Default)]
struct ScanLog {
    sticks: HashSet<PathBuf>,
    key_files: HashMap<PathBuf, Seen>,
    problems: HashSet<String>,
}

impl ScanLog {
    fn report(&mut self, scan: &Scan) {
        let sticks: HashSet<PathBuf> = scan.sticks.iter().map(|stick| stick.path.clone()).collect();
        for stick in &scan.sticks {
            if !self.sticks.contains(&stick.path) {
                tracing::info!(
                    stick = %stick.path.display(),
                    key_files = stick.key_files.len(),
                    "stick found"
                );
            }
        }
        for gone in self.sticks.difference(&sticks) {
            tracing::info!(stick = %gone.display(), "stick gone");
        }
        self.sticks = sticks;

        let mut key_files = HashMap::new();
        for found in scan.key_files() {
            let file = &found.key_file;
            let seen = Seen {
                format: found.format,
                size: found.size,
                keys: file.keys.len(),
                ums_id: file.ums_id.short(),
            };
            if self.key_files.get(&found.path) != Some(&seen) {
                tracing::info!(
                    path = %found.path.display(),
                    format = %found.format,
                    keys = file.keys.len(),
                    device_bound = file.count(KeyKind::DeviceBound),
                    one_time = file.count(KeyKind::OneTime),
                    mass = file.count(KeyKind::MassDeployment),
                    ums_id = %seen.ums_id,
                    "key file found"
                );
            }
            key_files.insert(found.path.clone(), seen);
        }
        for gone in self
            .key_files
            .keys()
            .filter(|path| !key_files.contains_key(*path))
        {
            tracing::info!(path = %gone.display(), "key file gone");
        }
        self.key_files = key_files;

        let mut problems = HashSet::new();
        for problem in scan.all_problems() {
            let text = problem.to_string();
            if !self.problems.contains(&text) {
                if problem.notable {
                    tracing::warn!(
                        path = %problem.path.display(),
                        reason = %problem.reason(),
                        "skipped"
                    );
                } else {
                    tracing::debug!(
                        path = %problem.path.display(),
                        reason = %problem.reason(),
                        "skipped"
                    );
                }
            }
            problems.insert(text);
        }
        self.problems = problems;
    }
}
