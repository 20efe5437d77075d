//! `run`: look for sticks at start-up, then wait for hints and look again; enroll with the keys
//! found, back off on faults, and once enrolled renew and report, until told to stop.
//!
//! The loop owns all timing: a step of the enrollment [`Driver`] runs only when no backoff is
//! pending, a look that finds nothing new starts nothing, and every wait also waits for the stop signal, so
//! SIGTERM ends it cleanly in any phase (a pass cut short resumes on the next start, with the
//! same device key pair). What it does is published to an [`Observer`], which is how tests follow
//! it and which counts wake-ups so that idleness can be measured.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use onboard_protocol::{Format, KeyKind, UnitId};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::clock::SharedClock;
use crate::config::Settings;
use crate::driver::{Driver, Step};
use crate::enroll::{EnrollError, Enroller, KeySource};
use crate::enrolled::connector::Report;
use crate::identity::{self, Persist};
use crate::lifecycle::{Failure, Phase};
use crate::state::{AgentState, StateError};
use crate::sticks::{self, Scan};
use crate::watcher::{StickWatcher, WatchError};
use onboard_protocol::connector::Command;

/// How long to let a burst of changes (a mount and the folders made for it, a file being copied)
/// settle after the first hint before looking again, when a look made at once found a key file
/// still being written or none ([`sticks::Scan::whole`]). Only ever waited after a hint, never
/// while idle.
/// Short, because it is part of the time from a stick appearing to enrollment: a file still being
/// copied fails to parse, and the event of its last write wakes another look anyway.
pub const SETTLE: Duration = Duration::from_millis(30);

/// How often an enrolled device checks whether its certificate needs renewing.
pub const RENEWAL_CHECK: Duration = Duration::from_secs(24 * 60 * 60);

/// How soon a renewal that failed (no server reachable) is tried again.
pub const RENEWAL_RETRY: Duration = Duration::from_secs(60 * 60);

/// Why `run` could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Neither the mount table nor file events can be watched.
    #[error(transparent)]
    Watch(#[from] WatchError),
    /// The stop signals cannot be caught.
    #[error("cannot catch SIGINT and SIGTERM")]
    Signals(#[source] std::io::Error),
    /// The state directory cannot be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// Enrollment failed on the device itself (state directory, device key).
    #[error(transparent)]
    Enroll(#[from] EnrollError),
}

/// What the daemon needs from its surroundings, replaceable in tests.
#[derive(Debug, Clone)]
pub struct Environment {
    /// The device clock.
    pub clock: SharedClock,
    /// Where sysfs is mounted (unit ID detection).
    pub sysfs_root: PathBuf,
}

impl Default for Environment {
    fn default() -> Self {
        Environment {
            clock: crate::clock::system(),
            sysfs_root: PathBuf::from(identity::DEFAULT_SYSFS_ROOT),
        }
    }
}

/// A view into a running `run`: how often it woke and looked, what it found last, its state, the
/// waits it chose and the enrollment passes it made.
#[derive(Debug, Clone)]
pub struct Observer {
    inner: Arc<ObserverInner>,
}

#[derive(Debug)]
struct ObserverInner {
    rescans: AtomicU64,
    wakeups: AtomicU64,
    passes: AtomicU64,
    latest: watch::Sender<Option<Arc<Scan>>>,
    state: watch::Sender<Option<Arc<AgentState>>>,
    backoffs: Mutex<Vec<Duration>>,
    connected: watch::Sender<Option<String>>,
    connector_wakeups: Arc<AtomicU64>,
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
                passes: AtomicU64::new(0),
                latest: watch::channel(None).0,
                state: watch::channel(None).0,
                backoffs: Mutex::new(Vec::new()),
                connected: watch::channel(None).0,
                connector_wakeups: Arc::new(AtomicU64::new(0)),
            }),
        }
    }

    /// How many looks over the mount roots were made and acted upon (an enrollment pass they
    /// started included), the one at start-up included.
    pub fn rescans(&self) -> u64 {
        self.inner.rescans.load(Ordering::SeqCst)
    }

    /// How many times the agent woke from waiting (a mount-table change or a file event).
    pub fn wakeups(&self) -> u64 {
        self.inner.wakeups.load(Ordering::SeqCst)
    }

    /// How many enrollment passes were made.
    pub fn passes(&self) -> u64 {
        self.inner.passes.load(Ordering::SeqCst)
    }

    /// The waits chosen after faults, in order.
    pub fn backoffs(&self) -> Vec<Duration> {
        self.inner
            .backoffs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Receives the latest look's result (`None` until the first one is done).
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Scan>>> {
        self.inner.latest.subscribe()
    }

    /// Receives the agent's state each time it is saved (`None` until it is loaded).
    pub fn subscribe_state(&self) -> watch::Receiver<Option<Arc<AgentState>>> {
        self.inner.state.subscribe()
    }

    /// How many times the device connector's session woke (a ping due, a frame read).
    pub fn connector_wakeups(&self) -> u64 {
        self.inner.connector_wakeups.load(Ordering::Relaxed)
    }

    /// Receives the server the device connector holds a session with (`None` while it holds
    /// none).
    pub fn subscribe_connector(&self) -> watch::Receiver<Option<String>> {
        self.inner.connected.subscribe()
    }

    fn publish(&self, state: &AgentState) {
        self.inner.state.send_replace(Some(Arc::new(state.clone())));
    }
}

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Writes the state as Prometheus text to `path` ([`crate::monitoring`]) now and at every change
/// of the state or of the device connector, until the watches close.
async fn keep_textfile(
    path: std::path::PathBuf,
    mut states: watch::Receiver<Option<Arc<AgentState>>>,
    mut connected: watch::Receiver<Option<String>>,
) {
    let mut failing = false;
    loop {
        let state = states.borrow_and_update().clone();
        let holds_session = connected.borrow_and_update().is_some();
        if let Some(state) = state {
            let text = crate::monitoring::exposition(&state, Some(holds_session));
            let target = path.clone();
            let written = tokio::task::spawn_blocking(move || {
                crate::monitoring::write_textfile(&target, &text)
            })
            .await;
            match written {
                Ok(Ok(())) => failing = false,
                // Said once per run of failures, not at every change.
                Ok(Err(error)) if !failing => {
                    failing = true;
                    tracing::warn!("cannot write the metrics textfile: {error}");
                }
                _ => {}
            }
        }
        tokio::select! {
            changed = states.changed() => if changed.is_err() { return },
            changed = connected.changed() => if changed.is_err() { return },
        }
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

/// [`run_in`] with the system clock and `/sys`.
pub async fn run(
    settings: &Settings,
    shutdown: impl Future<Output = ()>,
    observer: Observer,
) -> Result<(), RunError> {
    run_in(settings, Environment::default(), shutdown, observer).await
}

/// The enrollment side of the loop.
struct Enrollment {
    settings: Settings,
    environment: Environment,
    observer: Observer,
    state: AgentState,
    driver: Option<Driver>,
    /// When a backoff ends; `None` when no backoff is pending.
    retry_at: Option<Instant>,
    /// When to check the certificate's expiry next (enrolled only).
    renew_at: Option<Instant>,
    /// The unit-ID failure already reported, so a look that finds the same again stays quiet.
    unit_id_error: Option<String>,
    /// The key files (path, size) a refusal that keys cannot lift (`unit_id_conflict`,
    /// `bad_request`) happened with: no pass until they change or the agent restarts.
    blocked_on: Option<Vec<(PathBuf, u64)>>,
}

impl Enrollment {
    /// The driver, once the unit ID is known (resolved again at each look until it is).
    fn driver(&mut self) -> Option<&mut Driver> {
        if self.driver.is_none() {
            self.driver = self.make_driver();
        }
        self.driver.as_mut()
    }

    /// The enroller, once the unit ID is known.
    fn enroller(&mut self) -> Option<Enroller> {
        self.driver().map(|driver| driver.enroller.clone())
    }

    fn make_driver(&mut self) -> Option<Driver> {
        let resolved = identity::resolve(
            self.settings.unit_id.as_ref(),
            &self.settings.state_dir,
            &self.environment.sysfs_root,
            Persist::Yes,
        );
        let unit_id: UnitId = match resolved {
            Ok(resolved) => {
                tracing::info!(unit_id = %resolved.unit_id, source = %resolved.source, "unit ID");
                resolved.unit_id
            }
            Err(error) => {
                let text = error.to_string();
                if self.unit_id_error.as_deref() != Some(text.as_str()) {
                    tracing::error!(error = %text, "no unit ID: cannot enroll until one can be had (set unit_id in the config)");
                    self.unit_id_error = Some(text);
                }
                return None;
            }
        };
        let observer = self.observer.clone();
        let enroller = Enroller {
            state_dir: self.settings.state_dir.clone(),
            unit_id,
            configured_pin: self.settings.pin.clone(),
            clock: self.environment.clock.clone(),
            timeouts: self.settings.timeouts,
            key_algorithm: self.settings.device_key,
            unknown_key_retry: self.settings.unknown_key_retry,
            on_change: Arc::new(move |state| observer.publish(state)),
        };
        let mut driver = Driver::new(enroller, self.settings.backoff);
        let observer = self.observer.clone();
        driver.on_pass = Arc::new(move || {
            observer.inner.passes.fetch_add(1, Ordering::SeqCst);
        });
        Some(driver)
    }

    /// After a look: a step of the driver with what it found, when no backoff is pending.
    async fn after_look(&mut self, scan: &Scan) -> Result<(), RunError> {
        if self.state.phase.is_enrolled() {
            return Ok(());
        }
        if self.driver().is_none() {
            return Ok(());
        }
        let files: Vec<(PathBuf, u64)> = scan
            .key_files()
            .map(|found| (found.path.clone(), found.size))
            .collect();
        if self.blocked_on.as_ref() == Some(&files) {
            return Ok(());
        }
        self.blocked_on = None;
        let (Some(driver), state) = (self.driver.as_mut(), &mut self.state) else {
            return Ok(());
        };
        if self.retry_at.is_some() {
            if files.is_empty() {
                self.retry_at = None;
                driver.keys_gone(state)?;
            }
            return Ok(());
        }
        let sources: Vec<KeySource> = scan
            .key_files()
            .map(|found| {
                KeySource::from_key_file(found.path.display().to_string(), &found.key_file)
            })
            .collect();
        match driver.step(state, &sources, crate::clock::jitter()).await? {
            Step::Enrolled { .. } => {
                let enroller = driver.enroller.clone();
                self.enrolled(&enroller).await?;
            }
            Step::BackOff { delay, .. } => {
                self.observer
                    .inner
                    .backoffs
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(delay);
                self.retry_at = Some(Instant::now() + delay);
            }
            Step::Refused(failure) => {
                // A refusal keys cannot lift waits for the key files to change (or a restart).
                if matches!(failure, Failure::UnitIdConflict | Failure::Rejected { .. }) {
                    self.blocked_on = Some(files);
                }
            }
            Step::NoKeys => {}
        }
        Ok(())
    }

    /// Acts on what the device connector reports.
    async fn on_report(&mut self, report: Report) -> Result<(), RunError> {
        let Some(enroller) = self.enroller() else {
            return Ok(());
        };
        match report {
            Report::Connected { server } => {
                self.observer.inner.connected.send_replace(Some(server));
            }
            Report::Disconnected { .. } => {
                self.observer.inner.connected.send_replace(None);
            }
            Report::Command(Command::RenewNow) if self.state.phase.is_enrolled() => {
                tracing::info!("renewing the device certificate as the server asks");
                match enroller.renew(&mut self.state).await {
                    // The new certificate is seen by the server with the report.
                    Ok(true) => self.report_inventory(&enroller).await,
                    Ok(false) => {}
                    Err(error) => tracing::error!(%error, "renewal failed"),
                }
            }
            Report::Command(Command::InventoryNow) if self.state.phase.is_enrolled() => {
                self.report_inventory(&enroller).await;
            }
            Report::Command(_) => {}
            Report::NotHonoured { server, detail } => {
                self.observer.inner.connected.send_replace(None);
                if self.state.phase.is_enrolled()
                    && Enroller::speaks_for_the_device(&self.state, &server)
                {
                    enroller.orphaned(&mut self.state, &server, &detail)?;
                }
            }
        }
        Ok(())
    }

    async fn report_inventory(&mut self, enroller: &Enroller) {
        let inventory = tokio::task::spawn_blocking(crate::inventory::gather)
            .await
            .unwrap_or_else(|_| crate::inventory::gather());
        if let Err(error) = enroller.report_inventory(&mut self.state, &inventory).await {
            tracing::warn!(%error, "inventory not reported");
        }
    }

    /// Right after enrolling, and at each start of an enrolled device: renew if due, report.
    async fn enrolled(&mut self, enroller: &Enroller) -> Result<(), RunError> {
        self.renew_if_due(enroller).await?;
        self.report_inventory(enroller).await;
        Ok(())
    }

    async fn renew_if_due(&mut self, enroller: &Enroller) -> Result<(), RunError> {
        self.renew_at = Some(Instant::now() + RENEWAL_CHECK);
        if !enroller.renewal_due(&self.state) {
            return Ok(());
        }
        tracing::info!(
            not_after = self.state.certificate_not_after.as_deref().unwrap_or("-"),
            "device certificate expires within 30 days; renewing"
        );
        match enroller.renew(&mut self.state).await {
            Ok(true) => {}
            Ok(false) => self.renew_at = Some(Instant::now() + RENEWAL_RETRY),
            Err(error) => {
                tracing::error!(%error, "renewal failed");
                self.renew_at = Some(Instant::now() + RENEWAL_RETRY);
            }
        }
        Ok(())
    }
}

/// Looks for sticks under the mount roots, then waits for hints and looks again, enrolling with
/// the keys found, until `shutdown` completes. Once enrolled it only renews and reports.
pub async fn run_in(
    settings: &Settings,
    environment: Environment,
    shutdown: impl Future<Output = ()>,
    observer: Observer,
) -> Result<(), RunError> {
    let roots = settings.mount_roots.clone();
    let limits = settings.key_file_limits();
    let _lock = crate::state::lock(&settings.state_dir)?;
    let state = AgentState::load(&settings.state_dir)?;
    observer.publish(&state);
    // Aborted when this returns, however it returns.
    let _textfile = settings.metrics_textfile.clone().map(|path| {
        AbortOnDrop(tokio::spawn(keep_textfile(
            path,
            observer.subscribe_state(),
            observer.subscribe_connector(),
        )))
    });
    let mut work = Enrollment {
        settings: settings.clone(),
        environment,
        observer: observer.clone(),
        state,
        driver: None,
        retry_at: None,
        renew_at: None,
        unit_id_error: None,
        blocked_on: None,
    };
    tokio::pin!(shutdown);
    // Watch before the first look, so nothing that happens during it is missed; and tell systemd
    // it is up before any network work, which may take long on a bad network.
    let mut watcher = StickWatcher::new(roots.clone())?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    if let Phase::Failed { reason } = &work.state.phase {
        // A restart is a person's (or a boot's) doing: give the keys on the sticks another go.
        tracing::info!(previous = %reason, "starting again after a failure");
    }
    if work.state.phase.is_enrolled() {
        tracing::info!(
            server = work.state.server.as_deref().unwrap_or("-"),
            not_after = work.state.certificate_not_after.as_deref().unwrap_or("-"),
            "enrolled"
        );
        if let Some(enroller) = work.enroller() {
            tokio::select! {
                result = work.enrolled(&enroller) => result?,
                () = &mut shutdown => return stopped(),
            }
        }
    }
    let mut log = ScanLog::default();
    let mut first = true;
    // The device connector: started once the device is enrolled, stopped with the agent.
    let (stop_connector, connector_stop) = watch::channel(false);
    let (reports_to, mut reports) = tokio::sync::mpsc::channel::<Report>(16);
    let mut connector: Option<tokio::task::JoinHandle<()>> = None;
    // A look made at once on a hint that may be acted on without settling (Scan::whole).
    let mut looked: Option<sticks::Scan> = None;
    loop {
        if !work.state.phase.is_enrolled() {
            let scan = match looked.take() {
                Some(scan) => Ok(scan),
                None => {
                    let task = {
                        let roots = roots.clone();
                        tokio::task::spawn_blocking(move || sticks::scan_roots(&roots, &limits))
                    };
                    // A look at a stick that hangs (a dying device) must not keep the agent from
                    // stopping.
                    tokio::select! {
                        result = task => result,
                        () = &mut shutdown => break,
                    }
                }
            };
            match scan {
                Ok(scan) => {
                    log.report(&scan);
                    let scan = Arc::new(scan);
                    observer.inner.latest.send_replace(Some(scan.clone()));
                    tokio::select! {
                        result = work.after_look(&scan) => result?,
                        () = &mut shutdown => break,
                    }
                }
                Err(error) => tracing::error!(%error, "a look at the mount roots failed"),
            }
            // Counted once acted upon, so an observer that sees the count move also sees any
            // pass the look started.
            observer.inner.rescans.fetch_add(1, Ordering::SeqCst);
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

        let enrolled = work.state.phase.is_enrolled();
        if enrolled
            && connector.is_none()
            && let Some(enroller) = work.enroller()
        {
            let connector_settings = crate::enrolled::connector::ConnectorSettings {
                ping: settings.connector_ping,
                backoff: settings.backoff,
                ..Default::default()
            };
            connector = Some(tokio::spawn(crate::enrolled::connector::run(
                enroller,
                connector_settings,
                observer.subscribe_state(),
                reports_to.clone(),
                connector_stop.clone(),
                observer.inner.connector_wakeups.clone(),
            )));
        }
        let retry_at = work.retry_at;
        let renew_at = work.renew_at.filter(|_| enrolled);
        // Out of keys while some were refused as unknown: look again when the first of those may
        // be presented again (the server may have been pointed at the wrong database).
        let relook_at = match &work.state.phase {
            Phase::Failed {
                reason: Failure::KeysExhausted { .. },
            } => work
                .state
                .unknown_refusals_lift_in(work.environment.clock.now(), settings.unknown_key_retry)
                .map(|wait| Instant::now() + wait),
            _ => None,
        };
        let wake = tokio::select! {
            wake = watcher.changed(), if !enrolled => Some(wake),
            () = sleep_until(retry_at), if retry_at.is_some() => None,
            () = sleep_until(renew_at), if renew_at.is_some() => None,
            () = sleep_until(relook_at), if relook_at.is_some() => {
                tracing::info!("a key refused as unknown may be presented again; looking again");
                continue;
            }
            Some(report) = reports.recv(), if connector.is_some() => {
                observer.inner.wakeups.fetch_add(1, Ordering::SeqCst);
                tokio::select! {
                    result = work.on_report(report) => result?,
                    () = &mut shutdown => break,
                }
                continue;
            }
            () = &mut shutdown => break,
        };
        observer.inner.wakeups.fetch_add(1, Ordering::SeqCst);
        match wake {
            Some(wake) => {
                tracing::debug!(?wake, "woken; looking again");
                // A stick mounted appears whole: a look at once that finds key files and nothing
                // it cannot read is acted on without waiting. Anything else (a file still being
                // copied) waits for the burst to settle and is looked at again.
                watcher.discard_pending().await;
                watcher.rewatch();
                let task = {
                    let roots = roots.clone();
                    tokio::task::spawn_blocking(move || sticks::scan_roots(&roots, &limits))
                };
                let early = tokio::select! {
                    result = task => result.ok(),
                    () = &mut shutdown => break,
                };
                if let Some(scan) = early.filter(sticks::Scan::whole) {
                    looked = Some(scan);
                    continue;
                }
                tokio::select! {
                    () = tokio::time::sleep(SETTLE) => {}
                    () = &mut shutdown => break,
                }
                // Whatever came during the settling is covered by the look about to be made.
                watcher.discard_pending().await;
                watcher.rewatch();
            }
            None if enrolled => {
                if let Some(enroller) = work.enroller() {
                    tokio::select! {
                        result = work.renew_if_due(&enroller) => result?,
                        () = &mut shutdown => break,
                    }
                }
            }
            None => {
                work.retry_at = None;
                if let (Some(driver), state) = (work.driver.as_mut(), &mut work.state) {
                    driver.retry_due(state)?;
                }
            }
        }
    }
    // SIGTERM closes the session cleanly (a Close frame), within the agent's own stop bound.
    stop_connector.send_replace(true);
    if let Some(task) = connector {
        let abort = task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    stopped()
}

fn stopped() -> Result<(), RunError> {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    tracing::info!("stopped");
    Ok(())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
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
