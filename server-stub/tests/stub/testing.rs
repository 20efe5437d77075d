//! `ums_stub::testing`, the one way tests and rigs start a server: a fixed UMS ID from a fixture,
//! stick files a device enrolls with, the waiting helpers, test-rig mode on by default, restarts
//! over a kept data directory, clean-up on drop, PostgreSQL, and `serve` as a process stopped by
//! signals.

use onboard_protocol::{KeyFile, KeyKind, Limits, UnitId, routes};
use reqwest::StatusCode;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use ums_stub::testing::{ServeCommand, Signal, TestServer, send_signal, ums_id_backup};

use crate::server::{Device, read_answer};
use crate::util::DataDir;

/// Enrolls `device` with `key` against `server`; its certificate.
async fn enroll(server: &TestServer, device: &Device, key: &str) -> Vec<u8> {
    let response = server
        .client()
        .unwrap()
        .post(format!("{}{}", server.url(), routes::EST_SIMPLEENROLL))
        .basic_auth(&device.unit_id, Some(key))
        .header("content-type", "application/pkcs10")
        .body(device.csr_base64.clone())
        .send()
        .await
        .unwrap();
    let answer = read_answer(response).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.problem);
    answer.certificate.unwrap()
}

#[tokio::test]
async fn two_servers_started_from_one_fixture_have_one_fingerprint() {
    let fixture = ums_id_backup().unwrap();
    let a = TestServer::builder()
        .ums_id(fixture.clone())
        .start()
        .await
        .unwrap();
    let b = TestServer::builder().ums_id(fixture).start().await.unwrap();
    let other = TestServer::start().await.unwrap();
    assert_eq!(a.fingerprint(), b.fingerprint());
    assert_eq!(a.certificate_der(), b.certificate_der());
    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());
    assert_ne!(
        a.fingerprint(),
        other.fingerprint(),
        "no fixture, a new UMS ID"
    );
    // The PEM is the DER's.
    assert_eq!(
        pem::parse(a.certificate_pem()).unwrap().contents(),
        a.certificate_der()
    );
}

#[tokio::test]
async fn a_fixture_that_is_no_backup_is_refused() {
    let error = TestServer::builder()
        .ums_id("not a backup")
        .start()
        .await
        .unwrap_err();
    assert!(
        format!("{error:#}").contains("cannot install the fixed UMS ID"),
        "{error:#}"
    );
}

#[tokio::test]
async fn a_key_file_names_the_server_pins_its_ums_id_and_a_device_enrolls_with_it() {
    let server = TestServer::start().await.unwrap();
    let bytes = server.key_file(KeyKind::OneTime, 2).await.unwrap();
    let file = KeyFile::parse(&bytes, &Limits::default()).unwrap();
    assert_eq!(file.ums_id, server.fingerprint());
    assert_eq!(file.servers, vec![server.server()]);
    assert_eq!(file.keys.len(), 2);
    assert!(file.keys.iter().all(|key| key.kind() == KeyKind::OneTime));
    assert!(server.devices().await.unwrap().is_empty());

    let device = Device::numbered(1);
    let certificate = enroll(&server, &device, file.keys[0].key().expose_secret()).await;
    let unit: UnitId = device.unit_id.parse().unwrap();
    let record = server.enrolled(&unit).await.unwrap();
    assert_eq!(record.certificate, certificate);
    assert_eq!(server.devices().await.unwrap().len(), 1);
    let audit = server.audit().await.unwrap();
    assert!(
        audit.iter().any(|entry| entry.event == "enroll"),
        "{audit:?}"
    );

    let mass = server.key_file(KeyKind::MassDeployment, 1).await.unwrap();
    let mass = KeyFile::parse(&mass, &Limits::default()).unwrap();
    assert_eq!(mass.keys.len(), 1);
    assert_eq!(mass.keys[0].kind(), KeyKind::MassDeployment);
    let bound = server.device_bound_key_file(&[unit]).await.unwrap();
    let bound = KeyFile::parse(&bound, &Limits::default()).unwrap();
    assert_eq!(bound.keys[0].kind(), KeyKind::DeviceBound);
    assert!(server.key_file(KeyKind::DeviceBound, 1).await.is_err());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn connected_sees_a_device_holding_its_connector_session() {
    let server = TestServer::start().await.unwrap();
    let file = server.key_file(KeyKind::MassDeployment, 1).await.unwrap();
    let file = KeyFile::parse(&file, &Limits::default()).unwrap();
    let device = Device::numbered(7);
    let certificate = enroll(&server, &device, file.keys[0].key().expose_secret()).await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(server.certificate_der().to_vec()))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(ums_stub::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from(certificate)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(device.key.serialize_der())),
        )
        .unwrap();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .build()
        .unwrap();
    let unit: UnitId = device.unit_id.parse().unwrap();
    assert_eq!(
        server.enrolled(&unit).await.unwrap().online_server,
        None,
        "enrolled, not connected yet"
    );
    let response = client
        .get(format!("{}{}", server.url(), routes::DEVICE_CONNECT))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let session = response.upgrade().await.unwrap();
    let record = server.connected(&unit).await.unwrap();
    assert_eq!(
        record.online_server.as_deref(),
        Some(server.shared().connector.server())
    );
    drop(session);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn test_rig_mode_is_on_with_faults_off_unless_asked_for_a_plain_server() {
    let rigged = TestServer::start().await.unwrap();
    let rig = rigged.rig().expect("test-rig mode by default");
    assert_eq!(rig.faults(), ums_stub::rig::faults::FaultPlan::default());
    assert!(rigged.shared().stub.settings.test_rig);
    let plain = TestServer::builder().without_rig().start().await.unwrap();
    assert!(plain.rig().is_none());
    assert!(!plain.shared().stub.settings.test_rig);
}

#[tokio::test]
async fn settings_apply_in_order_after_the_builders_own() {
    let server = TestServer::builder()
        .hosts(&["example.test"])
        .settings(|settings| settings.certificate_lifetime = time::Duration::days(3))
        .settings(|settings| {
            assert_eq!(settings.hosts, ["example.test"]);
            settings.certificate_lifetime += time::Duration::days(1);
        })
        .start()
        .await
        .unwrap();
    assert_eq!(
        server.shared().certificate_lifetime,
        time::Duration::days(4)
    );
}

#[tokio::test]
async fn a_server_restarted_over_its_kept_dir_on_its_listener_has_its_ums_id_and_devices() {
    let server = TestServer::start().await.unwrap();
    let file = server.key_file(KeyKind::OneTime, 1).await.unwrap();
    let file = KeyFile::parse(&file, &Limits::default()).unwrap();
    let device = Device::numbered(2);
    enroll(&server, &device, file.keys[0].key().expose_secret()).await;
    let (addr, fingerprint) = (server.addr(), server.fingerprint());
    let dir = server.stop_keeping_dir().await.unwrap();
    assert!(dir.path().join("data").exists());

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let again = TestServer::builder()
        .in_dir(dir)
        .listener(listener)
        .start()
        .await
        .unwrap();
    assert_eq!(again.addr(), addr);
    assert_eq!(again.fingerprint(), fingerprint);
    let unit: UnitId = device.unit_id.parse().unwrap();
    again.enrolled(&unit).await.unwrap();

    // A data directory the test owns stays where it is.
    let own = tempfile::tempdir().unwrap();
    let at = TestServer::builder()
        .data_dir(own.path().join("data"))
        .start()
        .await
        .unwrap();
    assert!(at.stop_keeping_dir().await.is_err());
    assert!(own.path().join("data/ums-id").exists());
}

#[tokio::test]
async fn dropped_it_stops_and_removes_its_data_directory() {
    let server = TestServer::start().await.unwrap();
    let (addr, data) = (server.addr(), server.data_dir().to_owned());
    assert!(data.exists());
    drop(server);
    assert!(!data.exists(), "the data directory is removed");
    // The listener closes once the accept loop has seen the stop.
    let deadline = std::time::Instant::now() + ums_stub::testing::DEADLINE;
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "still accepting on {addr}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_postgres_keeps_its_store_there() {
    let cluster = tokio::task::spawn_blocking(crate::pg::PgCluster::start)
        .await
        .unwrap();
    let url = cluster.database();
    let server = TestServer::builder().postgres(&url).start().await.unwrap();
    assert!(matches!(
        server.shared().stub.settings.database,
        ums_stub::store::Database::Postgres(_)
    ));
    assert!(server.shared().stub.settings.cluster_secret.is_some());
    server.key_file(KeyKind::OneTime, 3).await.unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let keys: i64 = client
        .query_one("SELECT count(*) FROM keys", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys, 3);
    server.stop().await.unwrap();
}

#[test]
fn serve_as_a_process_tells_its_address_and_stops_on_the_signals_it_is_sent() {
    let dir = DataDir::new();
    let server = ServeCommand::program(dir.command(&[]))
        .stderr(std::process::Stdio::null())
        .start()
        .unwrap();
    assert_eq!(server.addr().ip().to_string(), "127.0.0.1");
    assert_ne!(server.port(), 0);
    assert!(
        server
            .printed()
            .contains(&format!("listening on {}", server.addr())),
        "{:?}",
        server.printed()
    );
    std::net::TcpStream::connect(server.addr()).unwrap();
    let status = server.terminate().unwrap();
    assert!(status.success(), "SIGTERM stops it gracefully: {status}");

    let killed = ServeCommand::program(dir.command(&[]))
        .stderr(std::process::Stdio::null())
        .start()
        .unwrap();
    let status = killed.kill().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
}

#[test]
fn a_serve_that_cannot_start_is_an_error_not_a_hang() {
    let dir = DataDir::new();
    let error = ServeCommand::program(dir.command(&[]))
        .listen("not-an-address")
        .stderr(std::process::Stdio::null())
        .start()
        .unwrap_err();
    assert!(
        format!("{error:#}").contains("ended before it listened"),
        "{error:#}"
    );
}

#[test]
fn a_signal_to_no_process_is_an_error() {
    // Process IDs do not reach i32::MAX on Linux (pid_max is at most 2^22).
    let error = send_signal(i32::MAX as u32, Signal::SIGTERM).unwrap_err();
    assert!(
        format!("{error:#}").contains("cannot send SIGTERM"),
        "{error:#}"
    );
}
