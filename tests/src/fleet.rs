//! The fleet simulator: many devices, each the agent's own enrollment code over its own state
//! directory and unit ID, enrolling from one key file against one server; and the bare TLS
//! handshake rate of that server, the ceiling an enrollment rate is measured against.
//!
//! Each device runs the agent's enrollment [`Driver`] until it is issued a certificate or refused
//! for good, backing off between faults as the daemon does. What the fleet did is summed up in a
//! [`Summary`]: how many enrolled, refusals by reason, retries, throughput, latency percentiles,
//! and whether any one-time or device-bound key was used by two devices (it must never be).
//!
//! [`connect`] then keeps every enrolled device connected, each with the agent's own device
//! connector over its own certificate, and counts sessions opened and lost.
//!
//! The simulator's own server ([`own_server`]) may run in test-rig mode with a fault plan
//! ([`ums_stub::rig::FaultPlan`]: lost answers, 503s, connector sessions closed every few
//! seconds); [`server_check`] then reads from its database that no key serves two devices and
//! none was burnt (used with no device holding it), and [`rotation_drill_after`] replaces the
//! UMS ID it presents once some devices have enrolled.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use onboard_agent::driver::{Driver, Step};
use onboard_agent::enroll::{Enroller, KeySource};
use onboard_agent::lifecycle::{BackoffPolicy, Failure};
use onboard_agent::pin::Pin;
use onboard_agent::state::AgentState;
use onboard_agent::tls::{PinnedVerifier, Timeouts};
use onboard_protocol::admin::KeyStatus;
use onboard_protocol::{KeyKind, UnitId};
use tokio::sync::Semaphore;
use ums_stub::rig::FaultPlan;
use ums_stub::store::{DeviceFilter, KeyFilter, PageRequest};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// How many devices.
    pub devices: usize,
    /// How many enroll at once.
    pub concurrency: usize,
    /// The stick every device reads.
    pub source: KeySource,
    /// Where each device's state directory is made (`ROOT/UNIT_ID`).
    pub state_root: PathBuf,
    /// The first unit ID, as a number (device `n` is this plus `n`, as 12 hex digits).
    pub first_unit: u64,
    /// Waiting between faults.
    pub backoff: BackoffPolicy,
    /// The most passes one device makes before it gives up.
    pub max_passes: u32,
    /// Show a progress bar on standard error (when it is a terminal).
    pub progress: bool,
}

/// How one device ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Enrolled with the key at this index of the source.
    Enrolled {
        /// The key's index.
        key: usize,
    },
    /// Refused for good.
    Refused(Failure),
    /// Gave up after faults, the last of which was a server whose chain is not the pinned UMS ID
    /// (a rotation drill, or a server in the middle): no key was sent to it.
    PinRefused(String),
    /// Still failing after the most passes allowed.
    GaveUp(String),
}

/// One device's run.
#[derive(Debug, Clone)]
pub struct DeviceRun {
    /// Its unit ID.
    pub unit_id: UnitId,
    /// How it ended.
    pub outcome: Outcome,
    /// Passes that ended in a fault (retries).
    pub faults: u32,
    /// Keys it presented that were refused (taken by another device first, mostly).
    pub refusals: usize,
    /// From its start to its end.
    pub latency: Duration,
}

/// What a fleet did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    /// Devices simulated.
    pub devices: usize,
    /// Devices enrolled.
    pub enrolled: usize,
    /// Devices refused for good, by reason (`keys_exhausted`, `unit_id_conflict`, ...).
    pub refused: BTreeMap<String, usize>,
    /// Devices that gave up after faults.
    pub gave_up: usize,
    /// Devices that gave up refusing a server's chain: not the pinned UMS ID.
    pub pin_refused: usize,
    /// Passes that ended in a fault, over all devices.
    pub retries: u64,
    /// Keys presented and refused, over all devices: the price of sharing a stick.
    pub keys_refused: u64,
    /// Wall time of the whole fleet, in seconds.
    pub seconds: f64,
    /// Enrollments per second of wall time.
    pub enrollments_per_second: f64,
    /// Median latency of the enrolled devices, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency of the enrolled devices, in milliseconds.
    pub p99_ms: f64,
    /// One-time and device-bound keys that more than one device reports enrolling with (their
    /// indexes): empty unless answers were lost. After a lost answer, a retry answered
    /// `repeated` through another key of its request names that key, which another device may
    /// then consume; the server's database is what says which key serves which device.
    pub keys_used_twice: Vec<usize>,
}

impl Summary {
    /// Sums up `runs` of a fleet that took `elapsed`, over `source`.
    pub fn of(runs: &[DeviceRun], source: &KeySource, elapsed: Duration) -> Summary {
        let mut refused = BTreeMap::new();
        let mut uses: BTreeMap<usize, usize> = BTreeMap::new();
        let mut latencies = Vec::new();
        let mut gave_up = 0;
        let mut pin_refused = 0;
        for run in runs {
            match &run.outcome {
                Outcome::Enrolled { key } => {
                    latencies.push(run.latency);
                    if source.keys()[*key].kind() != KeyKind::MassDeployment {
                        *uses.entry(*key).or_default() += 1;
                    }
                }
                Outcome::Refused(failure) => {
                    *refused.entry(failure_code(failure).to_owned()).or_default() += 1;
                }
                Outcome::GaveUp(_) => gave_up += 1,
                Outcome::PinRefused(_) => pin_refused += 1,
            }
        }
        latencies.sort();
        let percentile = |p: usize| {
            latencies
                .get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        let seconds = elapsed.as_secs_f64();
        Summary {
            devices: runs.len(),
            enrolled: latencies.len(),
            refused,
            gave_up,
            pin_refused,
            retries: runs.iter().map(|run| u64::from(run.faults)).sum(),
            keys_refused: runs.iter().map(|run| run.refusals as u64).sum(),
            seconds,
            enrollments_per_second: if seconds > 0.0 {
                latencies.len() as f64 / seconds
            } else {
                0.0
            },
            p50_ms: percentile(50),
            p99_ms: percentile(99),
            keys_used_twice: uses
                .into_iter()
                .filter(|&(_, count)| count > 1)
                .map(|(key, _)| key)
                .collect(),
        }
    }

    /// The summary for people.
    pub fn to_text(&self) -> String {
        let refused = if self.refused.is_empty() {
            "none".to_owned()
        } else {
            self.refused
                .iter()
                .map(|(code, count)| format!("{count} {code}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let check = if self.keys_used_twice.is_empty() {
            "no key used twice".to_owned()
        } else {
            format!("KEYS USED TWICE: {:?}", self.keys_used_twice)
        };
        let pin = if self.pin_refused > 0 {
            format!(
                ", refused the server's chain (not the pinned UMS ID) {}",
                self.pin_refused
            )
        } else {
            String::new()
        };
        format!(
            "devices {}: enrolled {}, refused {refused}, gave up {}{pin}\n\
             retries {}, keys refused on the way {}; {:.2} s, {:.0} enrollments/s, p50 {:.0} ms, \
             p99 {:.0} ms\n{check}\n",
            self.devices,
            self.enrolled,
            self.gave_up,
            self.retries,
            self.keys_refused,
            self.seconds,
            self.enrollments_per_second,
            self.p50_ms,
            self.p99_ms,
        )
    }
}

/// The stable name of a failure, as `status` prints it.
pub fn failure_code(failure: &Failure) -> &'static str {
    match failure {
        Failure::UnitIdConflict => "unit_id_conflict",
        Failure::KeysExhausted { .. } => "keys_exhausted",
        Failure::PinMismatch { .. } => "pin_mismatch",
        Failure::Rejected { .. } => "rejected",
    }
}

/// The unit ID of device `n`: a locally administered MAC.
pub fn unit_id(first: u64, n: usize) -> UnitId {
    format!("{:012X}", (first + n as u64) & 0xFFFF_FFFF_FFFF)
        .parse()
        .expect("12 hex digits are a unit ID")
}

/// A temporary folder for a fleet's device states, named `prefix…`: in `/dev/shm` when there is
/// one, so that thousands of devices' fsyncs measure the server rather than the disk.
pub fn state_folder(prefix: &str) -> std::io::Result<tempfile::TempDir> {
    let shm = std::path::Path::new("/dev/shm");
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    if shm.is_dir() {
        builder.tempdir_in(shm)
    } else {
        builder.tempdir()
    }
}

/// Runs the fleet; returns each device's run and the wall time.
pub async fn run(config: &FleetConfig) -> (Vec<DeviceRun>, Duration) {
    let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let bar = if config.progress {
        indicatif::ProgressBar::new(config.devices as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} devices done {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let source = Arc::new(config.source.clone());
    // Shared, not copied per device: the config holds the whole key file (a copy of 5,000 keys for
    // each of 5,000 devices was a fifth of a one-time fleet's CPU).
    let shared = Arc::new(config.clone());
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(config.devices);
    for n in 0..config.devices {
        let permits = permits.clone();
        let source = source.clone();
        let config = shared.clone();
        let bar = bar.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permits
                .acquire()
                .await
                .expect("the semaphore is never closed");
            let run = device(&config, &source, n).await;
            bar.inc(1);
            if !matches!(run.outcome, Outcome::Enrolled { .. }) {
                bar.set_message(format!("(last not enrolled: {})", run.unit_id));
            }
            run
        }));
    }
    let mut runs = Vec::with_capacity(config.devices);
    for task in tasks {
        runs.push(task.await.expect("a device task panicked"));
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    (runs, elapsed)
}

/// Device `n`'s enroller, over its own state directory.
fn enroller(config: &FleetConfig, n: usize) -> Enroller {
    let unit_id = unit_id(config.first_unit, n);
    Enroller {
        state_dir: config.state_root.join(unit_id.as_str()),
        unit_id,
        configured_pin: None,
        clock: onboard_agent::clock::system(),
        timeouts: Timeouts::default(),
        key_algorithm: Default::default(),
        unknown_key_retry: onboard_agent::state::DEFAULT_UNKNOWN_KEY_RETRY,
        on_change: Arc::new(|_| {}),
    }
}

/// One device: passes until it is enrolled, refused for good, or out of passes.
async fn device(config: &FleetConfig, source: &KeySource, n: usize) -> DeviceRun {
    let unit_id = unit_id(config.first_unit, n);
    let enroller = enroller(config, n);
    let started = Instant::now();
    let mut state = AgentState::default();
    let mut driver = Driver::new(enroller, config.backoff);
    let sources = std::slice::from_ref(source);
    // Spread over the fleet, and different at each fault of one device.
    let jitter = |attempt: u32| (n as f64 * 0.618_033_988_7 + f64::from(attempt) * 0.37) % 1.0;
    let mut faults = 0u32;
    let outcome = match driver
        .until_done(&mut state, sources, config.max_passes, jitter, |_| {
            faults += 1;
        })
        .await
    {
        Ok(Step::Enrolled { key, .. }) => Outcome::Enrolled { key },
        Ok(Step::Refused(failure)) => Outcome::Refused(failure),
        Ok(Step::BackOff {
            detail,
            pin_refused,
            ..
        }) => {
            faults += 1;
            if pin_refused {
                Outcome::PinRefused(detail)
            } else {
                Outcome::GaveUp(detail)
            }
        }
        Ok(Step::NoKeys) => Outcome::GaveUp("no key for this unit ID".to_owned()),
        Err(error) => Outcome::GaveUp(error.to_string()),
    };
    DeviceRun {
        unit_id,
        outcome,
        faults,
        refusals: state.refused_keys.len(),
        latency: started.elapsed(),
    }
}

/// The enrolled devices of a fleet, each holding its device connector session.
#[derive(Debug)]
pub struct Connected {
    /// Devices whose connector runs.
    pub devices: usize,
    counts: Arc<ConnectorCounts>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Kept so each connector sees its device enrolled.
    _states: Vec<tokio::sync::watch::Sender<Option<Arc<AgentState>>>>,
}

#[derive(Debug, Default)]
struct ConnectorCounts {
    open: std::sync::atomic::AtomicUsize,
    opened: std::sync::atomic::AtomicUsize,
    lost: std::sync::atomic::AtomicUsize,
    refused: std::sync::atomic::AtomicUsize,
}

impl Connected {
    /// Sessions open now.
    pub fn open(&self) -> usize {
        self.counts.open.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Sessions opened in all (reconnections included).
    pub fn opened(&self) -> usize {
        self.counts.opened.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Sessions that ended while the fleet was holding them.
    pub fn lost(&self) -> usize {
        self.counts.lost.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Devices the server no longer honours.
    pub fn refused(&self) -> usize {
        self.counts
            .refused
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until every device holds a session, or `within` passes; whether they all do.
    pub async fn wait_all_open(&self, within: Duration, progress: bool) -> bool {
        let bar = if progress {
            indicatif::ProgressBar::new(self.devices as u64)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} devices connected",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        let deadline = Instant::now() + within;
        let all = loop {
            bar.set_position(self.open() as u64);
            if self.open() >= self.devices {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        bar.finish_and_clear();
        all
    }

    /// Closes every session (each device sends a Close frame) and waits for the connectors.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Starts the device connector of every enrolled device of `runs` (made by [`run`] with
/// `config`), pinging every `settings.ping`.
pub async fn connect(
    config: &FleetConfig,
    runs: &[DeviceRun],
    settings: onboard_agent::enrolled::connector::ConnectorSettings,
) -> anyhow::Result<Connected> {
    use onboard_agent::enrolled::connector::{self, Report};
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (reports, mut received) = tokio::sync::mpsc::channel::<Report>(1024);
    let counts = Arc::new(ConnectorCounts::default());
    let counting = counts.clone();
    let holding = stopped.clone();
    let collector = tokio::spawn(async move {
        use std::sync::atomic::Ordering::SeqCst;
        while let Some(report) = received.recv().await {
            match report {
                Report::Connected { .. } => {
                    counting.open.fetch_add(1, SeqCst);
                    counting.opened.fetch_add(1, SeqCst);
                }
                Report::Disconnected { .. } => {
                    counting.open.fetch_sub(1, SeqCst);
                    if !*holding.borrow() {
                        counting.lost.fetch_add(1, SeqCst);
                    }
                }
                Report::NotHonoured { .. } => {
                    counting.refused.fetch_add(1, SeqCst);
                }
                Report::Command(_) => {}
            }
        }
    });
    let mut tasks = vec![collector];
    let mut states = Vec::new();
    for (n, run) in runs.iter().enumerate() {
        if !matches!(run.outcome, Outcome::Enrolled { .. }) {
            continue;
        }
        let enroller = enroller(config, n);
        let state = AgentState::load(&enroller.state_dir)?;
        let (state_to, state_from) = tokio::sync::watch::channel(Some(Arc::new(state)));
        states.push(state_to);
        tasks.push(tokio::spawn(connector::run(
            enroller,
            settings,
            state_from,
            reports.clone(),
            stopped.clone(),
            Arc::default(),
        )));
    }
    Ok(Connected {
        devices: states.len(),
        counts,
        stop,
        tasks,
        _states: states,
    })
}

/// The rate of bare TLS handshakes (connect, pinned handshake, close) to `addr` at
/// `concurrency`, over `count` new connections: the ceiling for enrollments, each of which needs
/// at least one.
pub async fn handshake_rate(
    addr: std::net::SocketAddr,
    pin: Pin,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let verifier = PinnedVerifier::new(pin, onboard_agent::clock::system());
    let config = onboard_agent::tls::client_config(verifier, None)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let (permits, connector) = (permits.clone(), connector.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire().await.expect("never closed");
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = rustls::pki_types::ServerName::try_from(addr.ip().to_string())
                .map_err(|error| anyhow::anyhow!("{error}"))?;
            drop(connector.connect(name, tcp).await?);
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// The limits of the simulator's own server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerLimits {
    /// The guess limits and connection caps an administrator gets.
    Defaults,
    /// None that a fleet on loopback could reach (`fleet-sim --no-limits`).
    Off,
}

/// A server in-process over `dir` on loopback, with `limits`, `count` keys of `kind` (one for a
/// mass key), and the key source a stick exported from it gives.
pub async fn own_server(
    dir: &std::path::Path,
    kind: KeyKind,
    count: usize,
    limits: ServerLimits,
) -> anyhow::Result<(ums_stub::serve::Running, KeySource)> {
    own_server_with_faults(dir, kind, count, limits, None).await
}

/// [`own_server`]; with `faults`, in test-rig mode with that plan in force.
pub async fn own_server_with_faults(
    dir: &std::path::Path,
    kind: KeyKind,
    count: usize,
    limits: ServerLimits,
    faults: Option<FaultPlan>,
) -> anyhow::Result<(ums_stub::serve::Running, KeySource)> {
    let mut settings = ums_stub::config::Settings::load(dir.join("server"), None)?;
    settings.hosts = vec!["127.0.0.1".to_owned()];
    settings.test_rig = faults.is_some();
    if limits == ServerLimits::Off {
        settings.rate_limits = ums_stub::rate_limit::Limits {
            per_source: u32::MAX,
            per_unit: u32::MAX,
            window: Duration::from_secs(60),
        };
        settings.connections.per_source = usize::MAX;
        settings.connections.handshakes_per_source = usize::MAX;
    }
    let (running, _) = ums_stub::testing::TestServer::builder()
        .data_dir(&settings.data_dir)
        .settings(move |own| *own = settings)
        .start()
        .await?
        .into_parts();
    let admin = running.shared().stub.keys();
    let actor = ums_stub::store::Actor::cli();
    let ids = match kind {
        KeyKind::OneTime => {
            admin
                .create_one_time(count.max(1), "fleet-sim", Box::new(|_| {}), &actor)
                .await?
        }
        KeyKind::MassDeployment => vec![admin.create_mass(None, "fleet-sim", &actor).await?.0],
        KeyKind::DeviceBound => {
            anyhow::bail!("--key-type: device-bound keys name units; use one-time or mass")
        }
    };
    let server = onboard_protocol::Server::new("127.0.0.1", running.port())?;
    let file = admin
        .export(&ids, vec![server], running.ums_id_fingerprint())
        .await?;
    let source = KeySource::from_key_file("the simulator's server", &file);
    if let (Some(plan), Some(rig)) = (faults, running.rig()) {
        plan.validate()?;
        rig.set_faults(plan);
    }
    Ok((running, source))
}

/// What the simulator's own server's database says of a fleet's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ServerCheck {
    /// Devices recorded.
    pub devices: u64,
    /// One-time or device-bound keys that more than one device enrolled with (the usage count
    /// cannot show that: the consume guard caps it at 1).
    pub keys_serving_two_devices: usize,
    /// One-time keys used that no device record holds: burnt (a key consumed for nothing).
    pub keys_burnt: usize,
}

/// Reads [`ServerCheck`] from `running`'s database.
pub async fn server_check(running: &ums_stub::serve::Running) -> anyhow::Result<ServerCheck> {
    let stub = &running.shared().stub;
    let devices = stub.store.devices(&PageRequest::all()).await?;
    let mut per_key = std::collections::HashMap::<i64, usize>::new();
    for device in &devices {
        if let (Some(key), false) = (device.key_id, device.key_kind == KeyKind::MassDeployment) {
            *per_key.entry(key).or_default() += 1;
        }
    }
    let used = KeyFilter {
        kind: Some(KeyKind::OneTime),
        status: Some(KeyStatus::Used),
        ..KeyFilter::default()
    };
    let used = stub.keys().list(&used, &PageRequest::all(), false).await?;
    let keys_burnt = used
        .items
        .iter()
        .filter(|key| !per_key.contains_key(&key.id))
        .count();
    Ok(ServerCheck {
        devices: devices.len() as u64,
        keys_serving_two_devices: per_key.values().filter(|&&count| count > 1).count(),
        keys_burnt,
    })
}

/// Once `enrolled` devices are recorded on `running` (in test-rig mode), replaces the UMS ID it
/// presents (the rotation drill): the devices still enrolling must refuse its chain. Returns
/// the fresh fingerprint.
pub async fn rotation_drill_after(
    running: &ums_stub::serve::Running,
    enrolled: u64,
) -> anyhow::Result<onboard_protocol::Fingerprint> {
    let devices = running.shared().stub.devices();
    while devices.count(&DeviceFilter::default()).await? < enrolled {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ums_stub::rig::actions::replace_ums_id(running.shared()).await
}

#[cfg(test)]
mod tests {
    use onboard_protocol::{Fingerprint, FirstAuthKey, KeyEntry, Server};

    use super::*;

    fn source() -> KeySource {
        let key = |n: u64| FirstAuthKey::new(format!("{n:017}")).unwrap();
        KeySource::new(
            "test",
            vec![Server::new("127.0.0.1", 1).unwrap()],
            Pin::Fingerprint(Fingerprint::of_der(b"x")),
            vec![
                KeyEntry::one_time(key(1)),
                KeyEntry::one_time(key(2)),
                KeyEntry::mass(key(3)),
            ],
        )
    }

    fn run(n: usize, outcome: Outcome, faults: u32, ms: u64) -> DeviceRun {
        DeviceRun {
            unit_id: unit_id(0x02E0_C500_0000, n),
            outcome,
            faults,
            refusals: 1,
            latency: Duration::from_millis(ms),
        }
    }

    #[test]
    fn the_summary_counts_outcomes_and_finds_a_key_used_twice() {
        let runs = vec![
            run(0, Outcome::Enrolled { key: 0 }, 0, 10),
            run(1, Outcome::Enrolled { key: 2 }, 2, 30),
            run(2, Outcome::Enrolled { key: 2 }, 0, 20),
            run(
                3,
                Outcome::Refused(Failure::KeysExhausted { refused: 2 }),
                0,
                5,
            ),
            run(4, Outcome::GaveUp("cannot connect".into()), 5, 50),
        ];
        let summary = Summary::of(&runs, &source(), Duration::from_secs(2));
        assert_eq!(summary.enrolled, 3);
        assert_eq!(summary.refused.get("keys_exhausted"), Some(&1));
        assert_eq!(summary.gave_up, 1);
        assert_eq!(summary.retries, 7);
        assert_eq!(summary.keys_refused, 5);
        assert!((summary.enrollments_per_second - 1.5).abs() < 1e-9);
        assert!((summary.p50_ms - 20.0).abs() < 1e-9);
        // The mass key (index 2) may be shared; a one-time key may not.
        assert!(summary.keys_used_twice.is_empty());
        let twice = vec![
            run(0, Outcome::Enrolled { key: 1 }, 0, 10),
            run(1, Outcome::Enrolled { key: 1 }, 0, 10),
        ];
        let summary = Summary::of(&twice, &source(), Duration::from_secs(1));
        assert_eq!(summary.keys_used_twice, vec![1]);
        assert!(summary.to_text().contains("KEYS USED TWICE"));
    }

    #[test]
    fn unit_ids_are_distinct_macs() {
        assert_eq!(unit_id(0x02E0_C500_0000, 0).as_str(), "02E0C5000000");
        assert_eq!(unit_id(0x02E0_C500_0000, 255).as_str(), "02E0C50000FF");
    }
}
