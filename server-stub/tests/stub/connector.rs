//! The device connector's session against an in-process server, as a host holding a mass key
//! would use it: one source holds only its share of the sessions, and an old certificate of a
//! unit, refused, leaves the device's live session alone.

use std::net::IpAddr;

use onboard_protocol::routes;
use rcgen::KeyPair;
use reqwest::StatusCode;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use ums_stub::store::Actor;

use crate::server::{Answer, Device, TestServer, enroll, read_answer};

/// A client presenting `certificate` whose connections come from `local`.
fn device_client(
    server: &TestServer,
    certificate: &[u8],
    key: &KeyPair,
    local: IpAddr,
) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(server.ums_id_der.clone()))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(ums_stub::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from(certificate.to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .local_address(local)
        .build()
        .unwrap()
}

/// A session opened (the upgraded connection, held open), or the refusal.
enum Opened {
    Session(reqwest::Upgraded),
    Refused(Answer),
}

/// Asks for a device connector session with `client`.
async fn connect(client: &reqwest::Client, server: &TestServer) -> Opened {
    let response = client
        .get(server.ip_url(routes::DEVICE_CONNECT))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        Opened::Session(response.upgrade().await.unwrap())
    } else {
        Opened::Refused(read_answer(response).await)
    }
}

/// Enrolls `device` with `key`; its certificate.
async fn enrolled(server: &TestServer, device: &Device, key: &str) -> Vec<u8> {
    let answer = enroll(&server.client(None), server, device, key).await;
    answer.certificate.unwrap()
}

/// The value of a new mass-deployment key.
async fn mass_key(server: &TestServer) -> String {
    let (_, key) = server
        .shared
        .stub
        .keys()
        .create_mass(None, "", &Actor::cli())
        .await
        .unwrap();
    key.expose_secret().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_with_a_mass_key_holds_only_its_share_of_the_sessions() {
    // A budget of 32 sessions: one source holds 2 of them.
    let server = TestServer::start_with(|settings| settings.device_sessions.max = 32).await;
    let key = mass_key(&server).await;
    let host: IpAddr = "127.0.0.1".parse().unwrap();
    let mut held = Vec::new();
    let mut refused = Vec::new();
    for n in 0..4 {
        let device = Device::numbered(100 + n);
        let certificate = enrolled(&server, &device, &key).await;
        match connect(
            &device_client(&server, &certificate, &device.key, host),
            &server,
        )
        .await
        {
            Opened::Session(session) => held.push(session),
            Opened::Refused(answer) => refused.push(answer),
        }
    }
    assert_eq!(held.len(), 2, "the host holds its share");
    for answer in &refused {
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(answer.retry_after.is_some());
        let detail = answer.problem.as_ref().unwrap()["detail"].as_str().unwrap();
        assert!(detail.contains("this address"), "{detail}");
    }
    assert_eq!(server.shared.connector.connected(), 2);

    // A device on another address still gets its session.
    let device = Device::numbered(200);
    let certificate = enrolled(&server, &device, &key).await;
    let other = device_client(
        &server,
        &certificate,
        &device.key,
        "127.0.0.2".parse().unwrap(),
    );
    assert!(matches!(connect(&other, &server).await, Opened::Session(_)));
    drop(held);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_certificate_refused_leaves_the_devices_live_session_alone() {
    let server = TestServer::start_with(|_| {}).await;
    let key = mass_key(&server).await;
    let host: IpAddr = "127.0.0.1".parse().unwrap();
    let device = Device::numbered(300);
    let first = enrolled(&server, &device, &key).await;
    // Renewed, and the new certificate seen: the first is neither current nor previous.
    let next = Device::new(&device.unit_id);
    let renewed = read_answer(
        device_client(&server, &first, &device.key, host)
            .post(server.ip_url(routes::EST_SIMPLEREENROLL))
            .body(next.csr_base64.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    let second = renewed.certificate.unwrap();
    let Opened::Session(live) =
        connect(&device_client(&server, &second, &next.key, host), &server).await
    else {
        panic!("the current certificate opens a session");
    };
    assert_eq!(server.shared.connector.connected(), 1);

    // Whoever holds the old certificate and key is refused, and the live session stays.
    let Opened::Refused(answer) =
        connect(&device_client(&server, &first, &device.key, host), &server).await
    else {
        panic!("an old certificate opens no session");
    };
    assert_eq!(
        (answer.status, answer.code()),
        (StatusCode::FORBIDDEN, "certificate_not_current")
    );
    assert_eq!(
        server.shared.connector.connected(),
        1,
        "the live session stays"
    );
    let view = server
        .shared
        .stub
        .devices()
        .get(&device.unit_id.parse().unwrap())
        .await
        .unwrap();
    assert!(view.online, "the device still shows online");
    drop(live);
    server.stop().await;
}
