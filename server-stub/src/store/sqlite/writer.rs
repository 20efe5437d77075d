//! The SQLite writer thread: enrollment attempts and audit lines decided in batches, one
//! transaction and at most one fsync a batch (group commit), each write synced before it is
//! answered when [`Durability`] says it must be.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, TransactionBehavior};

use super::{SqliteTx, audit_in, backend_error, connect};
use crate::ca::IssueOnce;
use crate::rig::clock::Clock;
use crate::store::apply;
use crate::store::durability::Durability;
use crate::store::error::StoreError;
use crate::store::rows::{AuditEntry, EnrollAttempt, EnrollOutcome};
use crate::store::tx::ready;

/// The most attempts decided in one transaction.
const GROUP_COMMIT_MAX: usize = 128;

/// Work waiting for the writer thread, with where to send its answer.
pub(super) enum WriterJob {
    /// An enrollment attempt.
    Enroll {
        attempt: EnrollAttempt,
        issue: IssueOnce,
        reply: tokio::sync::oneshot::Sender<Result<EnrollOutcome, StoreError>>,
    },
    /// An audit line (a refusal decided before the store was asked).
    Record {
        entry: AuditEntry,
        reply: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
    },
}

/// A job done inside the batch transaction, waiting for the commit before it is answered.
enum Done {
    Enroll(
        tokio::sync::oneshot::Sender<Result<EnrollOutcome, StoreError>>,
        Result<EnrollOutcome, StoreError>,
    ),
    Record(
        tokio::sync::oneshot::Sender<Result<(), StoreError>>,
        Result<(), StoreError>,
        Durability,
    ),
}

impl Done {
    /// What this job's write needs ([`Durability`]); a failed job wrote nothing.
    fn durability(&self) -> Durability {
        match self {
            Done::Enroll(_, Ok(outcome)) => outcome.durability(),
            Done::Record(_, Ok(()), durability) => *durability,
            Done::Enroll(_, Err(_)) | Done::Record(_, Err(_), _) => Durability::Deferred,
        }
    }

    fn answer(self) {
        match self {
            Done::Enroll(reply, outcome) => drop(reply.send(outcome)),
            Done::Record(reply, outcome, _) => drop(reply.send(outcome)),
        }
    }

    fn fail(self, error: impl Fn() -> StoreError) {
        match self {
            Done::Enroll(reply, _) => drop(reply.send(Err(error()))),
            Done::Record(reply, ..) => drop(reply.send(Err(error()))),
        }
    }
}

/// The writer: takes the enrollment attempts and audit lines waiting, does them all in one
/// transaction (each in a savepoint, so one failure rolls back only itself), commits once, then
/// answers each.
///
/// Its connection commits with `synchronous = NORMAL`: a commit reaches the WAL file but is not
/// flushed. When the batch holds a write that must be on the disk before it is answered
/// ([`Durability::Synced`]: a key consumed, an export audited), the writer flushes the WAL file
/// itself before answering, which carries every commit before it too. A batch of refusals only is
/// answered without an fsync: refusals, whether decided here or before the store was asked, never
/// cost an fsync of their own. The first batch after the connection opens is synced whatever it
/// holds: commits of a process killed before its sync may still be only in the operating system's
/// cache, and a retry answered from them must not go out before they are on the disk.
pub(super) fn writer(
    path: PathBuf,
    jobs: std::sync::mpsc::Receiver<WriterJob>,
    syncs: Arc<AtomicU64>,
    clock: Clock,
) {
    let shown = path.display().to_string();
    let mut connection: Option<Connection> = None;
    // The WAL file SQLite writes (named from the database file it opened, a symbolic link
    // followed), known once the connection is open.
    let mut wal: Option<PathBuf> = None;
    // The WAL file's directory entry is flushed once, at the first sync.
    let mut directory_synced = false;
    // The WAL file may hold commits that are not on the disk: every batch syncs until one sync
    // succeeds, so that a retry answered from the stored device never goes out unsynced. True
    // after a sync failed once its batch had committed, and whenever the connection is (re)opened:
    // a process killed between a commit and its sync left that commit in the operating system's
    // cache, readable and not yet on the disk, and this writer cannot tell.
    let mut unsynced = true;
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < GROUP_COMMIT_MAX {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // (Re)open the connection for each batch until it works: a passing fault must not leave
        // enrollments failing until a restart.
        if connection.is_none() {
            match connect(&path).and_then(|opened| {
                opened
                    .execute_batch("PRAGMA synchronous = NORMAL")
                    .map_err(|e| backend_error(&shown, e))?;
                Ok(opened)
            }) {
                Ok(opened) => {
                    wal = Some(wal_file(opened.path().map_or(path.as_path(), Path::new)));
                    connection = Some(opened);
                    unsynced = true;
                }
                Err(error) => {
                    tracing::error!("the database writer cannot open the database: {error}")
                }
            }
        }
        let unavailable = || StoreError::Unavailable(format!("the writer cannot open {shown}"));
        let Some(connection) = connection.as_mut() else {
            for job in batch {
                match job {
                    WriterJob::Enroll { reply, .. } => drop(reply.send(Err(unavailable()))),
                    WriterJob::Record { reply, .. } => drop(reply.send(Err(unavailable()))),
                }
            }
            continue;
        };
        let db = |source| backend_error(&shown, source);
        let mut queue: std::collections::VecDeque<WriterJob> = batch.into();
        let mut done: Vec<Done> = Vec::with_capacity(queue.len());
        let committed = (|| -> Result<(), StoreError> {
            let mut tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            while let Some(job) = queue.pop_front() {
                let mut savepoint = match tx.savepoint() {
                    Ok(savepoint) => savepoint,
                    Err(error) => {
                        queue.push_front(job);
                        return Err(db(error));
                    }
                };
                let (finished, ok) = match job {
                    WriterJob::Enroll {
                        attempt,
                        issue,
                        reply,
                    } => {
                        let outcome = ready(apply::enroll(
                            &mut SqliteTx::new(&savepoint, &shown),
                            &attempt,
                            issue,
                            clock.now(),
                        ));
                        let ok = outcome.is_ok();
                        (Done::Enroll(reply, outcome), ok)
                    }
                    WriterJob::Record { entry, reply } => {
                        let outcome = audit_in(&savepoint, &entry).map_err(db);
                        let ok = outcome.is_ok();
                        (Done::Record(reply, outcome, entry.durability()), ok)
                    }
                };
                // Kept before anything else can fail, so that every job is answered.
                done.push(finished);
                if ok {
                    savepoint.commit().map_err(db)?;
                } else {
                    savepoint.rollback().map_err(db)?;
                    drop(savepoint);
                }
            }
            tx.commit().map_err(db)?;
            if unsynced
                || Durability::of_all(done.iter().map(Done::durability)) == Durability::Synced
            {
                let wal = wal.as_deref().unwrap_or(path.as_path());
                let directory = if directory_synced {
                    Directory::Synced
                } else {
                    Directory::ToSync
                };
                if let Err(source) = sync_wal(wal, directory) {
                    unsynced = true;
                    return Err(StoreError::Backend {
                        database: shown.clone(),
                        source: format!(
                            "committed, but {} could not be flushed to the disk: {source}",
                            wal.display()
                        )
                        .into(),
                    });
                }
                unsynced = false;
                directory_synced = true;
                syncs.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })();
        match committed {
            Ok(()) => done.into_iter().for_each(Done::answer),
            Err(error) => {
                tracing::error!("the writer's batch failed: {error:#}");
                let busy = matches!(error, StoreError::Unavailable(_));
                let cause = std::error::Error::source(&error)
                    .map_or_else(|| error.to_string(), ToString::to_string);
                let failure = || {
                    if busy {
                        StoreError::Unavailable(format!("{shown} is locked by another process"))
                    } else {
                        StoreError::Backend {
                            database: shown.clone(),
                            source: format!("the batch failed: {cause}").into(),
                        }
                    }
                };
                for job in done {
                    job.fail(failure);
                }
                // Jobs the failure came before: answered too, never left waiting.
                for job in queue {
                    match job {
                        WriterJob::Enroll { reply, .. } => drop(reply.send(Err(failure()))),
                        WriterJob::Record { reply, .. } => drop(reply.send(Err(failure()))),
                    }
                }
            }
        }
    }
}

/// The WAL file SQLite keeps beside the database at `path`.
fn wal_file(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Whether [`sync_wal`] also flushes the directory holding the WAL file (its entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Directory {
    /// Flushed before: only the file.
    Synced,
    /// Not yet: the file and its directory.
    ToSync,
}

/// Flushes the WAL file `wal` (and its directory when `directory` says so) to the disk: every
/// commit written to it so far survives a power cut.
fn sync_wal(wal: &Path, directory: Directory) -> std::io::Result<()> {
    std::fs::File::open(wal)?.sync_data()?;
    if directory == Directory::ToSync
        && let Some(parent) = wal.parent()
    {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}
