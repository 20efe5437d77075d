//! The device connector against an in-process `ums-stub`: an enrolled agent stays connected and
//! shows online, comes back after the server restarts, renews on `renew-now`, reports on
//! `inventory-now`, is disconnected and kept out once deleted; the server's SIGTERM path closes
//! every session within its bound; a certificate of another UMS ID is refused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use onboard_agent::device_key::DeviceKeyAlgorithm;
use onboard_agent::lifecycle::Phase;
use onboard_agent::state::AgentState;
use onboard_protocol::connector::Command;
use onboard_protocol::{KeyKind, UnitId};
use ums_stub::store::Actor;

use crate::rig::{Agent, Ums, plug_in, settings};
use crate::util::DEADLINE;

const UNIT: &str = "00E0C5540B8B";

impl Agent {
    /// Waits (at most [`DEADLINE`]) until the connector holds a session (`Some`) or holds none.
    pub(crate) async fn wait_connected(&self, connected: bool) -> Option<String> {
        let mut changes = self.observer.subscribe_connector();
        let seen = tokio::time::timeout(DEADLINE, async {
            loop {
                let now = changes.borrow_and_update().clone();
                if now.is_some() == connected {
                    return now;
                }
                changes.changed().await.unwrap();
            }
        })
        .await;
        seen.unwrap_or_else(|_| panic!("the connector was not {connected} within {DEADLINE:?}"))
    }
}

/// Waits (at most [`DEADLINE`]) until the store says the device is online (or not).
async fn wait_online(ums: &Ums, unit: &str, online: bool) {
    let unit: UnitId = unit.parse().unwrap();
    let waited = tokio::time::timeout(DEADLINE, async {
        loop {
            let view = ums.running.shared().stub.devices().get(&unit).await;
            if view.as_ref().is_ok_and(|view| view.online == online) || (!online && view.is_err()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "{unit} not online={online} within {DEADLINE:?}"
    );
}

async fn enrolled_agent(ums: &Ums, unit: &str) -> (Agent, tempfile::TempDir, tempfile::TempDir) {
    enrolled_agent_with(ums, unit, DeviceKeyAlgorithm::P256).await
}

/// [`enrolled_agent`] with a device key pair of `algorithm`.
async fn enrolled_agent_with(
    ums: &Ums,
    unit: &str,
    algorithm: DeviceKeyAlgorithm,
) -> (Agent, tempfile::TempDir, tempfile::TempDir) {
    let ids = ums.create(KeyKind::MassDeployment, 1, None).await;
    let key_file = ums.export(&ids, vec![ums.server()]).await;
    let root = tempfile::tempdir().unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    plug_in(root.path(), &key_file);
    let mut settings = settings(unit, root.path(), state_dir.path());
    settings.device_key = algorithm;
    let agent = Agent::start(settings);
    agent.wait_enrolled().await;
    (agent, root, state_dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_agent_stays_connected_and_comes_back_after_a_server_restart() {
    let ums = Ums::start().await;
    let addr = ums.running.addr();
    let (agent, _root, _state) = enrolled_agent(&ums, UNIT).await;
    let server = agent.wait_connected(true).await.unwrap();
    assert_eq!(server, ums.server().to_string());
    wait_online(&ums, UNIT, true).await;
    let view = ums
        .running
        .shared()
        .stub
        .devices()
        .get(&UNIT.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        view.connected_to.as_deref(),
        Some(ums.running.shared().connector.server())
    );

    // The server stops (its sessions closed cleanly) and starts again on the same port.
    let data = ums.stop_keeping_data().await;
    agent.wait_connected(false).await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let ums = Ums::start_in(data, listener, 365).await;
    agent.wait_connected(true).await;
    wait_online(&ums, UNIT, true).await;

    // The agent stopping closes its session: the server shows it offline, last seen then.
    let before = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
    agent.stop().await.unwrap();
    wait_online(&ums, UNIT, false).await;
    let device = ums.devices().await.remove(0);
    assert_eq!(device.online_server, None);
    assert!(device.last_seen >= before, "{:?}", device.last_seen);
    ums.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_now_renews_and_inventory_now_reports_through_the_connector() {
    renews_and_reports_through_the_connector(DeviceKeyAlgorithm::P256).await;
}

/// The agent's other device key: a P-384 device enrolls, connects, renews and reports end to end,
/// and the server certifies its P-384 key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p384_device_enrolls_connects_renews_and_reports() {
    renews_and_reports_through_the_connector(DeviceKeyAlgorithm::P384).await;
}

/// The curve OID of the key a DER certificate certifies.
fn certified_curve(der: &[u8]) -> String {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).unwrap();
    let key = &certificate.tbs_certificate.subject_pki.algorithm;
    key.parameters
        .as_ref()
        .and_then(|parameters| parameters.as_oid().ok())
        .map(|oid| oid.to_id_string())
        .unwrap_or_default()
}

async fn renews_and_reports_through_the_connector(algorithm: DeviceKeyAlgorithm) {
    // secp256r1 and secp384r1.
    let curve = match algorithm {
        DeviceKeyAlgorithm::P256 => "1.2.840.10045.3.1.7",
        DeviceKeyAlgorithm::P384 => "1.3.132.0.34",
    };
    let ums = Ums::start().await;
    let (agent, _root, _state) = enrolled_agent_with(&ums, UNIT, algorithm).await;
    assert_eq!(
        certified_curve(&ums.devices().await[0].certificate),
        curve,
        "{algorithm:?}"
    );
    agent.wait_connected(true).await;
    wait_online(&ums, UNIT, true).await;
    let enrolled = agent.wait_enrolled().await;
    let serial = enrolled.certificate_serial.clone().unwrap();
    let devices = ums.running.shared().stub.devices();
    let unit: UnitId = UNIT.parse().unwrap();

    let through = devices
        .send(&unit, Command::RenewNow, &Actor::cli())
        .await
        .unwrap();
    assert_eq!(through, ums.running.shared().connector.server());
    let renewed: Arc<AgentState> = agent
        .wait_for("renewed", |state| {
            state.certificate_serial.as_deref() != Some(serial.as_str())
        })
        .await;
    assert!(renewed.renewed_at.is_some());
    assert_eq!(renewed.phase, Phase::Enrolled);
    // The server holds the new certificate as current, seen with the report that followed.
    let reported = agent
        .wait_for("the report after the renewal", |state| {
            state.inventory_reported_at.is_some() && state.inventory_reported_at >= state.renewed_at
        })
        .await
        .inventory_reported_at
        .clone();
    let device = ums.devices().await.remove(0);
    assert_eq!(Some(device.serial.clone()), renewed.certificate_serial);
    assert_eq!(device.previous_serial, None, "the new certificate was seen");
    assert_eq!(certified_curve(&device.certificate), curve, "{algorithm:?}");

    // Times are kept to the second: the next report must land in a later one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    devices
        .send(&unit, Command::InventoryNow, &Actor::cli())
        .await
        .unwrap();
    agent
        .wait_for("reported again", |state| {
            state.inventory_reported_at > reported
        })
        .await;
    let commands: Vec<String> = ums
        .audit()
        .await
        .into_iter()
        .filter(|entry| entry.event == "devices.command")
        .map(|entry| entry.detail)
        .collect();
    assert_eq!(commands, ["renew-now", "inventory-now"]);
    agent.stop().await.unwrap();

    // Offline, a command is refused rather than queued for nobody.
    wait_online(&ums, UNIT, false).await;
    let refused = devices.send(&unit, Command::RenewNow, &Actor::cli()).await;
    assert!(
        matches!(refused, Err(ums_stub::devices::CommandError::Offline(_))),
        "{refused:?}"
    );
    ums.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_device_is_disconnected_and_not_let_back_in() {
    let ums = Ums::start().await;
    let (agent, _root, _state) = enrolled_agent(&ums, UNIT).await;
    agent.wait_connected(true).await;
    wait_online(&ums, UNIT, true).await;
    ums.running
        .shared()
        .stub
        .devices()
        .delete(&UNIT.parse().unwrap(), &Actor::cli())
        .await
        .unwrap();
    // Closed by the server within its command poll; the agent tries again and is refused for
    // good: its certificate is no longer a device's. It says so and waits for a key.
    let state = agent
        .wait_for("orphaned", |state| {
            matches!(state.phase, Phase::Orphaned { .. })
        })
        .await;
    let Phase::Orphaned { detail } = &state.phase else {
        unreachable!()
    };
    assert!(detail.contains("enroll again"), "{detail}");
    assert_eq!(agent.observer.subscribe_connector().borrow().clone(), None);
    assert_eq!(ums.running.shared().connector.connected(), 0);
    assert!(ums.devices().await.is_empty());
    agent.stop().await.unwrap();
    ums.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_closes_every_session_within_the_bound() {
    let ums = Ums::start().await;
    let mut agents = Vec::new();
    for n in 0..5 {
        let unit = format!("00E0C500000{n}");
        agents.push(enrolled_agent(&ums, &unit).await);
    }
    for (agent, _, _) in &agents {
        agent.wait_connected(true).await;
    }
    let sessions = ums.running.shared().connector.clone();
    let waited = tokio::time::timeout(DEADLINE, async {
        while sessions.connected() < 5 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok());
    let store = ums.running.shared().stub.store.clone();
    let started = Instant::now();
    ums.running.stop().await.unwrap();
    let took = started.elapsed();
    // Each device was sent a Close frame and answered it: nowhere near the 30 s bound.
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(sessions.connected(), 0);
    for (agent, _, _) in &agents {
        agent.wait_connected(false).await;
    }
    let page = store
        .devices(&ums_stub::store::PageRequest::all())
        .await
        .unwrap();
    assert_eq!(page.len(), 5);
    assert!(page.iter().all(|device| device.online_server.is_none()));
    for (agent, _, _) in agents {
        agent.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_keep_a_session_alive_past_the_servers_idle_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ums = Ums::start_with(dir, listener, |settings| {
        settings.device_sessions.idle = Duration::from_millis(600);
    })
    .await;
    let ids = ums.create(KeyKind::MassDeployment, 1, None).await;
    let key_file = ums.export(&ids, vec![ums.server()]).await;
    let root = tempfile::tempdir().unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    plug_in(root.path(), &key_file);
    let mut pinging = settings(UNIT, root.path(), state_dir.path());
    pinging.connector_ping = Duration::from_millis(200);
    let agent = Agent::start(pinging);
    agent.wait_connected(true).await;
    let mut changes = agent.observer.subscribe_connector();
    changes.borrow_and_update();
    // Five idle time-outs long: the pings keep the one session; nothing reconnects.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!changes.has_changed().unwrap(), "the session was dropped");
    assert_eq!(ums.running.shared().connector.connected(), 1);
    agent.stop().await.unwrap();

    // A device that stops pinging is closed after the idle time-out.
    let root = tempfile::tempdir().unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    plug_in(root.path(), &key_file);
    let mut silent = settings("00E0C5000009", root.path(), state_dir.path());
    silent.connector_ping = Duration::from_secs(3600);
    let agent = Agent::start(silent);
    agent.wait_connected(true).await;
    let mut changes = agent.observer.subscribe_connector();
    changes.borrow_and_update();
    tokio::time::timeout(DEADLINE, changes.changed())
        .await
        .expect("the server closes a silent session")
        .unwrap();
    agent.stop().await.unwrap();
    ums.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_issued_by_another_ums_id_is_refused() {
    use onboard_agent::pin::Pin;
    use onboard_agent::state::{DEVICE_CERT_FILE, DEVICE_KEY_FILE, certificate_der};
    use onboard_agent::tls::{ClientIdentity, PinnedVerifier, client_config};
    use onboard_protocol::routes::DEVICE_CONNECT;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let ums = Ums::start().await;
    let other = Ums::start().await;
    // Enrolled with the other UMS ID, holding its certificate.
    let (agent, _root, state_dir) = enrolled_agent(&other, UNIT).await;
    agent.stop().await.unwrap();
    let key = std::fs::read_to_string(state_dir.path().join(DEVICE_KEY_FILE)).unwrap();
    let certificate = std::fs::read(state_dir.path().join(DEVICE_CERT_FILE)).unwrap();
    let identity = ClientIdentity {
        certificate: certificate_der(&certificate).unwrap(),
        private_key: rcgen::KeyPair::from_pem(&key).unwrap().serialize_der(),
    };
    // Pinned to this server (the handshake is not what is at stake), presenting that certificate.
    let verifier = PinnedVerifier::new(
        Pin::Fingerprint(ums.fingerprint()),
        onboard_agent::clock::system(),
    );
    let config = client_config(verifier, Some(&identity)).unwrap();
    let tcp = tokio::net::TcpStream::connect(ums.running.addr())
        .await
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let opened = match connector.connect(name, tcp).await {
        Ok(stream) => {
            let request = format!("wss://{}{DEVICE_CONNECT}", ums.server())
                .into_client_request()
                .unwrap();
            tokio_tungstenite::client_async(request, stream)
                .await
                .map(|_| ())
                .map_err(|error| error.to_string())
        }
        Err(error) => Err(error.to_string()),
    };
    assert!(
        opened.is_err(),
        "a session was opened with a foreign certificate"
    );
    assert_eq!(ums.running.shared().connector.connected(), 0);
    assert!(ums.devices().await.is_empty());
    other.stop().await;
    ums.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_agent_wakes_only_to_ping_and_read_the_pong() {
    let ums = Ums::start().await;
    let ids = ums.create(KeyKind::MassDeployment, 1, None).await;
    let key_file = ums.export(&ids, vec![ums.server()]).await;
    let root = tempfile::tempdir().unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    plug_in(root.path(), &key_file);
    let mut pinging = settings(UNIT, root.path(), state_dir.path());
    pinging.connector_ping = Duration::from_millis(250);
    let agent = Agent::start(pinging);
    agent.wait_connected(true).await;
    let (wakeups, started) = (agent.observer.connector_wakeups(), Instant::now());
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let woke = agent.observer.connector_wakeups() - wakeups;
    let pings = (started.elapsed().as_millis() / 250) as u64;
    // Each ping is one wake to send it and one to read its pong; nothing in between.
    assert!(
        woke >= pings && woke <= 2 * pings + 2,
        "{woke} wake-ups for about {pings} pings"
    );
    agent.stop().await.unwrap();
    ums.stop().await;
}

/// Copies the folder `from` into `to`, recursively.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_from_a_server_that_did_not_issue_the_certificate_is_passed_over() {
    // A and B share the UMS ID and the keys, but B's database is a copy made before the device
    // enrolled: B has never heard of it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a_addr = listener.local_addr().unwrap();
    let a = Ums::start_on(listener, 365).await;
    let ids = a.create(KeyKind::MassDeployment, 1, None).await;
    let a_dir = a.stop_keeping_data().await;
    let b_dir = tempfile::tempdir().unwrap();
    copy_tree(a_dir.path(), b_dir.path());
    let a = Ums::start_in(
        a_dir,
        tokio::net::TcpListener::bind(a_addr).await.unwrap(),
        365,
    )
    .await;
    let b = Ums::start_in(
        b_dir,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        365,
    )
    .await;
    assert_eq!(a.fingerprint(), b.fingerprint());
    let key_file = a.export(&ids, vec![a.server(), b.server()]).await;
    let root = tempfile::tempdir().unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    plug_in(root.path(), &key_file);
    let agent = Agent::start(settings(UNIT, root.path(), state_dir.path()));
    agent.wait_enrolled().await;
    assert_eq!(
        agent.wait_connected(true).await.unwrap(),
        a.server().to_string()
    );

    // A stops. B refuses the certificate, but B did not issue it: the device stays enrolled and
    // keeps trying, and is back with A once A is.
    let a_dir = a.stop_keeping_data().await;
    agent.wait_connected(false).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let state = agent.wait_enrolled().await;
    assert_eq!(state.phase, Phase::Enrolled);
    assert_eq!(agent.observer.subscribe_connector().borrow().clone(), None);
    let a = Ums::start_in(
        a_dir,
        tokio::net::TcpListener::bind(a_addr).await.unwrap(),
        365,
    )
    .await;
    assert_eq!(
        agent.wait_connected(true).await.unwrap(),
        a.server().to_string()
    );
    agent.stop().await.unwrap();
    a.stop().await;
    b.stop().await;
}
