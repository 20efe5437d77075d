//! An in-process `ums-stub` on port 0 (started through `ums_stub::testing`) with keys exported to a folder standing in for a stick, and
//! the agent's daemon in a task over its own state directory, followed through its observer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use onboard_agent::clock::SharedClock;
use onboard_agent::config::{Overrides, RawConfig, Settings};
use onboard_agent::daemon::{self, Environment, Observer};
use onboard_agent::lifecycle::BackoffPolicy;
use onboard_agent::state::AgentState;
use onboard_protocol::admin::KeyView;
use onboard_protocol::{Fingerprint, Format, KeyFile, KeyKind, Server, UnitId};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use ums_stub::rate_limit::Limits;
use ums_stub::store::{Actor, AuditEntry, DeviceRecord};
use ums_stub::testing::TestServer;

use crate::util::DEADLINE;

/// A running server over a temporary data directory, started through `ums_stub::testing`.
pub(crate) struct Ums {
    pub(crate) running: TestServer,
}

impl Ums {
    /// A server on a free loopback port.
    pub(crate) async fn start() -> Ums {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Ums::start_on(listener, 365).await
    }

    /// A server on `listener` issuing certificates for `days`.
    pub(crate) async fn start_on(listener: tokio::net::TcpListener, days: i64) -> Ums {
        let dir = tempfile::tempdir().unwrap();
        Ums::start_in(dir, listener, days).await
    }

    /// A server over the data directory `dir` (kept), on `listener`.
    pub(crate) async fn start_in(
        dir: tempfile::TempDir,
        listener: tokio::net::TcpListener,
        days: i64,
    ) -> Ums {
        Ums::start_with(dir, listener, move |settings| {
            settings.certificate_lifetime = time::Duration::days(days);
        })
        .await
    }

    /// A server over the data directory `dir` (kept), on `listener`, with settings `adjust`
    /// changes (certificate lifetime, renewal grace).
    pub(crate) async fn start_with(
        dir: tempfile::TempDir,
        listener: tokio::net::TcpListener,
        adjust: impl FnOnce(&mut ums_stub::config::Settings) + Send,
    ) -> Ums {
        let running = TestServer::builder()
            .in_dir(dir)
            .listener(listener)
            .settings(|settings| {
                settings.rate_limits = Limits {
                    per_source: 1_000_000,
                    per_unit: 1_000_000,
                    window: std::time::Duration::from_secs(60),
                };
            })
            .settings(adjust)
            .start()
            .await
            .unwrap();
        Ums { running }
    }

    pub(crate) fn fingerprint(&self) -> Fingerprint {
        self.running.fingerprint()
    }

    pub(crate) fn server(&self) -> Server {
        self.running.server()
    }

    /// Creates `count` keys of `kind` (bound to `unit` when device-bound); returns their IDs.
    pub(crate) async fn create(&self, kind: KeyKind, count: usize, unit: Option<&str>) -> Vec<i64> {
        let admin = self.running.shared().stub.keys();
        let cli = Actor::cli();
        match kind {
            KeyKind::OneTime => admin
                .create_one_time(count, "", Box::new(|_| {}), &cli)
                .await
                .unwrap(),
            KeyKind::DeviceBound => {
                let units: Vec<UnitId> = vec![unit.unwrap().parse().unwrap(); count];
                admin
                    .create_device_bound(&units, "", Box::new(|_| {}), &cli)
                    .await
                    .unwrap()
            }
            KeyKind::MassDeployment => {
                let mut ids = Vec::with_capacity(count);
                for _ in 0..count {
                    ids.push(admin.create_mass(None, "", &cli).await.unwrap().0);
                }
                ids
            }
        }
    }

    /// The key file exporting `ids`, naming `servers`.
    pub(crate) async fn export(&self, ids: &[i64], servers: Vec<Server>) -> KeyFile {
        self.running
            .shared()
            .stub
            .keys()
            .export(ids, servers, self.fingerprint())
            .await
            .unwrap()
    }

    /// The value of key `id`.
    pub(crate) async fn key_value(&self, id: i64) -> String {
        self.key(id, true).await.key
    }

    /// (usage count, status) of key `id`.
    pub(crate) async fn usage(&self, id: i64) -> (u64, String) {
        let view = self.key(id, false).await;
        (view.usage_count, view.status.as_str().to_owned())
    }

    async fn key(&self, id: i64, show: bool) -> KeyView {
        self.running
            .shared()
            .stub
            .keys()
            .get(id, show)
            .await
            .unwrap()
    }

    pub(crate) async fn deactivate(&self, id: i64) {
        self.running
            .shared()
            .stub
            .keys()
            .deactivate(&[id], &Actor::cli())
            .await
            .unwrap();
    }

    pub(crate) async fn devices(&self) -> Vec<DeviceRecord> {
        self.running.devices().await.unwrap()
    }

    pub(crate) async fn audit(&self) -> Vec<AuditEntry> {
        self.running.audit().await.unwrap()
    }

    pub(crate) async fn stop(self) {
        self.running.stop().await.unwrap();
    }

    /// Stops it and hands back its data directory, to serve again.
    pub(crate) async fn stop_keeping_data(self) -> tempfile::TempDir {
        self.running.stop_keeping_dir().await.unwrap()
    }
}

/// Writes `file` as `STICK/icg.xml` under `root`; returns the stick folder.
pub(crate) fn plug_in(root: &Path, file: &KeyFile) -> PathBuf {
    let stick = root.join("STICK");
    std::fs::create_dir_all(&stick).unwrap();
    let temp = root.join(".icg.xml.partial");
    std::fs::write(&temp, file.write(Format::Xml)).unwrap();
    std::fs::rename(&temp, stick.join("icg.xml")).unwrap();
    stick
}

/// Agent settings: `unit` as its unit ID, `root` as its one mount root, state in `state_dir`,
/// short backoffs.
pub(crate) fn settings(unit: &str, root: &Path, state_dir: &Path) -> Settings {
    let mut settings = RawConfig::default()
        .validate(
            None,
            Overrides {
                mount_roots: vec![root.to_owned()],
                state_dir: Some(state_dir.to_owned()),
                unit_id: Some(unit.parse().unwrap()),
                ..Overrides::default()
            },
        )
        .unwrap();
    settings.backoff = BackoffPolicy {
        base: std::time::Duration::from_millis(100),
        max: std::time::Duration::from_secs(1),
    };
    settings
}

/// The daemon in a task, stopped through a oneshot.
pub(crate) struct Agent {
    pub(crate) observer: Observer,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), String>>,
}

impl Agent {
    pub(crate) fn start(settings: Settings) -> Agent {
        Agent::start_with_clock(settings, onboard_agent::clock::system())
    }

    pub(crate) fn start_with_clock(settings: Settings, clock: SharedClock) -> Agent {
        let observer = Observer::new();
        let (stop, stopped) = oneshot::channel::<()>();
        let environment = Environment {
            clock,
            sysfs_root: PathBuf::from("/nonexistent"),
        };
        let task = tokio::spawn({
            let observer = observer.clone();
            async move {
                let shutdown = async {
                    let _ = stopped.await;
                };
                daemon::run_in(&settings, environment, shutdown, observer)
                    .await
                    .map_err(|error| format!("{error:#}"))
            }
        });
        Agent {
            observer,
            stop,
            task,
        }
    }

    /// Waits (at most [`DEADLINE`]) for a saved state that passes `test`; returns it.
    pub(crate) async fn wait_for(
        &self,
        what: &str,
        test: impl Fn(&AgentState) -> bool,
    ) -> Arc<AgentState> {
        let mut states = self.observer.subscribe_state();
        let waited = tokio::time::timeout(DEADLINE, async {
            loop {
                if let Some(state) = states.borrow_and_update().clone()
                    && test(&state)
                {
                    return state;
                }
                if states.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
        match waited {
            Ok(state) => state,
            Err(_) => panic!(
                "no state {what} within {DEADLINE:?}; last: {:?}",
                self.observer.subscribe_state().borrow().as_deref()
            ),
        }
    }

    /// Waits (at most [`DEADLINE`]) until more than `looks` looks were made and acted upon.
    pub(crate) async fn wait_for_looks_past(&self, looks: u64) {
        let moved = tokio::time::timeout(DEADLINE, async {
            while self.observer.rescans() <= looks {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(moved.is_ok(), "no look past {looks} within {DEADLINE:?}");
    }

    pub(crate) async fn wait_enrolled(&self) -> Arc<AgentState> {
        self.wait_for("enrolled", |state| state.phase.is_enrolled())
            .await
    }

    /// Stops it and returns what `run` returned.
    pub(crate) async fn stop(self) -> Result<(), String> {
        let _ = self.stop.send(());
        self.task.await.unwrap()
    }
}
