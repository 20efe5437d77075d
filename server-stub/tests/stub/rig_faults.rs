//! Test-rig faults and one-shot actions against an in-process server in test-rig mode, each seen
//! from a client: refusals with their status, code and `Retry-After`; a delay; a request held
//! until released; a lost answer whose commit stands; connector sessions closed every second;
//! every device certificate expired (renew, then be served again); the UMS ID replaced (the old
//! pin refuses the chain, no key burnt); the store unavailable (503, `/readyz` not ready); the
//! same seed giving the same faults; and none of it on a server not in test-rig mode.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use onboard_protocol::admin::KeyStatus;
use onboard_protocol::routes;
use onboard_protocol::{KeyKind, ProblemCode};
use rcgen::KeyPair;
use reqwest::StatusCode;
use ums_stub::rig::{FaultKind, FaultPlan, Rig, RouteClass, RouteFault, actions};

use crate::server::{Device, TestServer, enroll, keys, read_answer};

/// A server in test-rig mode (faults off).
async fn rig_server() -> TestServer {
    TestServer::start_with(|settings| {
        settings.test_rig = true;
        settings.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
}

fn rig(server: &TestServer) -> &Rig {
    server.running().rig().expect("a server in test-rig mode")
}

/// A plan of `faults` (probability, kind) on `route`, seed `seed`.
fn plan(seed: u64, route: RouteClass, faults: &[(f64, FaultKind)]) -> FaultPlan {
    FaultPlan {
        seed,
        routes: BTreeMap::from([(
            route,
            faults
                .iter()
                .map(|(probability, fault)| RouteFault {
                    probability: *probability,
                    fault: fault.clone(),
                })
                .collect(),
        )]),
        close_sessions_every_seconds: None,
    }
}

/// A key's usage count and status.
async fn usage(server: &TestServer, id: i64) -> (u64, KeyStatus) {
    let view = server.shared.stub.keys().get(id, false).await.unwrap();
    (view.usage_count, view.status)
}

/// A client presenting `certificate` with `key`, trusting the server's UMS ID.
fn device_client(server: &TestServer, certificate: &[u8], key: &KeyPair) -> reqwest::Client {
    server.client(Some((certificate, key)))
}

/// PUTs a small inventory report with `client`; the answer's status and problem code.
async fn inventory(client: &reqwest::Client, server: &TestServer) -> (StatusCode, String) {
    let body = serde_json::json!({ "host_name": "rig-device" });
    let response = client
        .put(server.url(routes::DEVICE_INVENTORY))
        .json(&body)
        .send()
        .await
        .unwrap();
    let answer = read_answer(response).await;
    (answer.status, answer.code().to_owned())
}

/// Asks for a connector session: the upgraded stream, or the refusal's status and code.
async fn connect(
    client: &reqwest::Client,
    server: &TestServer,
) -> Result<reqwest::Upgraded, (StatusCode, String)> {
    let response = client
        .get(server.url(routes::DEVICE_CONNECT))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        Ok(response.upgrade().await.unwrap())
    } else {
        let answer = read_answer(response).await;
        Err((answer.status, answer.code().to_owned()))
    }
}

/// The first WebSocket frame the server sends on `session`: its opcode and payload (frames
/// from a server are not masked; payloads here are short).
async fn next_frame(session: &mut reqwest::Upgraded, within: Duration) -> (u8, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let read = async {
        let mut head = [0u8; 2];
        session.read_exact(&mut head).await.unwrap();
        let length = usize::from(head[1] & 0x7f);
        assert!(length < 126, "a short frame");
        let mut payload = vec![0u8; length];
        session.read_exact(&mut payload).await.unwrap();
        (head[0] & 0x0f, payload)
    };
    tokio::time::timeout(within, read)
        .await
        .expect("a frame in time")
}

/// Waits (up to 10 s) for `condition`.
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "waited 10 s for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn refuse(status: u16, code: Option<ProblemCode>, retry_after_seconds: Option<u64>) -> FaultKind {
    FaultKind::Refuse {
        status,
        code,
        retry_after_seconds,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_answer_the_planned_status_code_and_retry_after_and_consume_no_key() {
    let server = rig_server().await;
    let [(id, key)] = keys(&server, KeyKind::OneTime, 1, None)
        .await
        .try_into()
        .unwrap();
    let client = server.client(None);
    let device = Device::numbered(1);
    let table = [
        (refuse(503, None, Some(2)), 503, "unavailable", Some("2")),
        (
            refuse(429, Some(ProblemCode::RateLimited), None),
            429,
            "rate_limited",
            Some("1"),
        ),
        (
            refuse(500, Some(ProblemCode::BadRequest), Some(7)),
            500,
            "bad_request",
            None,
        ),
    ];
    for (fault, status, code, retry_after) in table {
        rig(&server).set_faults(plan(1, RouteClass::Enrollment, &[(1.0, fault)]));
        let answer = enroll(&client, &server, &device, &key).await;
        assert_eq!(answer.status.as_u16(), status);
        assert_eq!(answer.code(), code);
        assert_eq!(answer.retry_after.as_deref(), retry_after, "{status}");
        // Refusals carry the headers of every answer.
        assert!(
            answer
                .headers
                .iter()
                .any(|(name, _)| name == "strict-transport-security")
        );
        // Other route classes are left alone.
        let page = client.get(server.url("/")).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
    }
    assert_eq!(
        usage(&server, id).await,
        (0, KeyStatus::Active),
        "nothing consumed"
    );
    rig(&server).set_faults(FaultPlan::default());
    let answer = enroll(&client, &server, &device, &key).await;
    assert_eq!(answer.status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_holds_the_answer_back_at_least_that_long() {
    let server = rig_server().await;
    rig(&server).set_faults(plan(
        1,
        RouteClass::Admin,
        &[(1.0, FaultKind::Delay { millis: 400 })],
    ));
    let client = server.client(None);
    let started = Instant::now();
    let page = client.get(server.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "answered after {:?}",
        started.elapsed()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_request_waits_until_released_and_is_counted_meanwhile() {
    let server = rig_server().await;
    let [(id, key)] = keys(&server, KeyKind::OneTime, 1, None)
        .await
        .try_into()
        .unwrap();
    rig(&server).set_faults(plan(1, RouteClass::Enrollment, &[(1.0, FaultKind::Hold)]));
    let client = server.client(None);
    let url = server.url(routes::EST_SIMPLEENROLL);
    let device = Device::numbered(2);
    let request = client
        .post(url)
        .basic_auth(&device.unit_id, Some(&key))
        .header("content-type", "application/pkcs10")
        .body(device.csr_base64.clone());
    let answer = tokio::spawn(async move { read_answer(request.send().await.unwrap()).await });
    until("the request held", || rig(&server).held() == 1).await;
    // Held: nothing ran.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!answer.is_finished());
    assert_eq!(usage(&server, id).await, (0, KeyStatus::Active));
    assert_eq!(rig(&server).release_held(), 1);
    let answer = answer.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(rig(&server).held(), 0);
    assert_eq!(usage(&server, id).await, (1, KeyStatus::Used));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_commits_and_the_retry_gets_the_same_certificate() {
    let server = rig_server().await;
    let [(id, key)] = keys(&server, KeyKind::OneTime, 1, None)
        .await
        .try_into()
        .unwrap();
    rig(&server).set_faults(plan(
        1,
        RouteClass::Enrollment,
        &[(1.0, FaultKind::DropAfterCommit)],
    ));
    let client = server.client(None);
    let device = Device::numbered(3);
    let lost = client
        .post(server.url(routes::EST_SIMPLEENROLL))
        .basic_auth(&device.unit_id, Some(&key))
        .header("content-type", "application/pkcs10")
        .body(device.csr_base64.clone())
        .send()
        .await;
    let error = lost.expect_err("the connection closes with no answer");
    assert!(!error.is_timeout(), "{error:?}");
    // The commit stands: the key is used and the device recorded.
    assert_eq!(usage(&server, id).await, (1, KeyStatus::Used));
    let devices = server.devices().await;
    assert_eq!(devices.len(), 1);
    // The device asks again (the answers are back): the same certificate, nothing more consumed.
    rig(&server).set_faults(FaultPlan::default());
    let answer = enroll(&client, &server, &device, &key).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.certificate.unwrap(), devices[0].certificate);
    assert_eq!(usage(&server, id).await, (1, KeyStatus::Used));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_sessions_are_closed_every_n_seconds_and_devices_come_back() {
    let server = rig_server().await;
    let [(_, key)] = keys(&server, KeyKind::OneTime, 1, None)
        .await
        .try_into()
        .unwrap();
    let device = Device::numbered(4);
    let certificate = enroll(&server.client(None), &server, &device, &key)
        .await
        .certificate
        .unwrap();
    let client = device_client(&server, &certificate, &device.key);
    rig(&server).set_faults(FaultPlan {
        close_sessions_every_seconds: Some(1),
        ..FaultPlan::default()
    });
    for _ in 0..2 {
        let mut session = connect(&client, &server).await.expect("a session");
        until("the session registered", || {
            server.shared.connector.connected() == 1
        })
        .await;
        // A Close frame (opcode 8) naming the rig, within a few seconds.
        let (opcode, payload) = next_frame(&mut session, Duration::from_secs(5)).await;
        assert_eq!(opcode, 8);
        assert!(
            String::from_utf8_lossy(&payload).contains("test rig"),
            "{payload:?}"
        );
        drop(session);
        until("the session gone", || {
            server.shared.connector.connected() == 0
        })
        .await;
    }
    // Sessions are left alone once the plan sets no period.
    rig(&server).set_faults(FaultPlan::default());
    let mut session = connect(&client, &server).await.expect("a session");
    let quiet = tokio::time::timeout(
        Duration::from_millis(2500),
        next_frame(&mut session, Duration::from_secs(3)),
    )
    .await;
    assert!(quiet.is_err(), "no frame while no period is set");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificates_are_renewed_before_the_devices_are_served_again() {
    let server = rig_server().await;
    let [(_, key)] = keys(&server, KeyKind::OneTime, 1, None)
        .await
        .try_into()
        .unwrap();
    let device = Device::numbered(5);
    let certificate = enroll(&server.client(None), &server, &device, &key)
        .await
        .certificate
        .unwrap();
    let old = device_client(&server, &certificate, &device.key);
    assert_eq!(inventory(&old, &server).await.0, StatusCode::NO_CONTENT);
    let mut session = connect(&old, &server).await.expect("a session");
    until("the session registered", || {
        server.shared.connector.connected() == 1
    })
    .await;

    assert_eq!(
        actions::expire_certificates(&server.shared).await.unwrap(),
        1
    );
    // The connected device is told to renew now.
    let (opcode, payload) = next_frame(&mut session, Duration::from_secs(5)).await;
    assert_eq!(opcode, 1, "a text frame");
    assert!(
        String::from_utf8_lossy(&payload).contains("renew-now"),
        "{payload:?}"
    );
    // The old certificate is expired as the server sees it: not served, but it renews.
    let expired = (StatusCode::BAD_REQUEST, "bad_request".to_owned());
    assert_eq!(inventory(&old, &server).await, expired);
    assert_eq!(connect(&old, &server).await.err(), Some(expired));
    let next = Device::new(&device.unit_id);
    let renewed = read_answer(
        old.post(server.url(routes::EST_SIMPLEREENROLL))
            .body(next.csr_base64.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(renewed.status, StatusCode::OK);
    let fresh = device_client(&server, &renewed.certificate.unwrap(), &next.key);
    assert_eq!(inventory(&fresh, &server).await.0, StatusCode::NO_CONTENT);
    assert!(connect(&fresh, &server).await.is_ok());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_drill_presents_a_chain_the_old_pin_refuses_and_burns_no_key() {
    let server = rig_server().await;
    let [(id, key)] = keys(&server, KeyKind::OneTime, 1, None)
        .await
        .try_into()
        .unwrap();
    let before = server.running().ums_id_fingerprint();
    let fresh = actions::replace_ums_id(&server.shared).await.unwrap();
    assert_ne!(fresh, before);
    // The chain presented now is under the fresh UMS ID, not the pinned one.
    let leaf = server.running().tls_leaf().certificate_der();
    let (_, leaf) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let (_, pinned) = x509_parser::parse_x509_certificate(&server.ums_id_der).unwrap();
    assert!(leaf.verify_signature(Some(pinned.public_key())).is_err());
    // A device pinning the old UMS ID refuses the handshake: its key never travels.
    let device = Device::numbered(6);
    let refused = server
        .client(None)
        .post(server.url(routes::EST_SIMPLEENROLL))
        .basic_auth(&device.unit_id, Some(&key))
        .header("content-type", "application/pkcs10")
        .body(device.csr_base64.clone())
        .send()
        .await
        .expect_err("the pinned handshake fails");
    assert!(refused.is_connect(), "{refused:?}");
    assert_eq!(usage(&server, id).await, (0, KeyStatus::Active));
    assert!(server.devices().await.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_made_unavailable_answers_503_and_readyz_is_not_ready_until_it_is_back() {
    let server = rig_server().await;
    let [(id, key)] = keys(&server, KeyKind::OneTime, 1, None)
        .await
        .try_into()
        .unwrap();
    let metrics = server.running().metrics_addr().unwrap();
    let readyz = || async move {
        let response = reqwest::get(format!("http://{metrics}/readyz"))
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    };
    assert_eq!(readyz().await.0, StatusCode::OK);
    actions::store_unavailable(&server.shared, Duration::from_secs(2)).unwrap();
    let client = server.client(None);
    let device = Device::numbered(7);
    let answer = enroll(&client, &server, &device, &key).await;
    assert_eq!(
        (answer.status, answer.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );
    let wait: u64 = answer.retry_after.unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    let api = client.get(server.url("/api/v1/keys")).send().await.unwrap();
    assert_eq!(api.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (status, text) = readyz().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text.contains("the store does not answer"), "{text}");
    assert_eq!(usage(&server, id).await, (0, KeyStatus::Active));
    // Back after the time asked for.
    let deadline = Instant::now() + Duration::from_secs(10);
    while readyz().await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "still not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = enroll(&client, &server, &device, &key).await;
    assert_eq!(answer.status, StatusCode::OK);
    server.stop().await;
}

/// The statuses of `count` requests of the enrollment class (the EST CA certificates) under
/// `plan`, on a fresh server.
async fn statuses_under(plan: FaultPlan, count: usize) -> Vec<u16> {
    let server = rig_server().await;
    rig(&server).set_faults(plan);
    let client = server.client(None);
    let mut statuses = Vec::with_capacity(count);
    for _ in 0..count {
        let response = client
            .get(server.url(routes::EST_CACERTS))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    server.stop().await;
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_gives_the_same_faults_in_the_same_order() {
    let faults = [
        (0.3, refuse(503, None, Some(1))),
        (0.2, refuse(429, Some(ProblemCode::RateLimited), Some(1))),
    ];
    let one = statuses_under(plan(11, RouteClass::Enrollment, &faults), 40).await;
    let two = statuses_under(plan(11, RouteClass::Enrollment, &faults), 40).await;
    assert_eq!(one, two);
    assert!(
        one.contains(&200) && one.contains(&503) && one.contains(&429),
        "{one:?}"
    );
    let other = statuses_under(plan(12, RouteClass::Enrollment, &faults), 40).await;
    assert_ne!(one, other, "another seed, another sequence");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_not_in_test_rig_mode_has_no_rig_and_refuses_the_actions() {
    let server =
        TestServer::from_builder(ums_stub::testing::TestServer::builder().without_rig()).await;
    assert!(server.running().rig().is_none());
    let refused = [
        actions::expire_certificates(&server.shared)
            .await
            .unwrap_err()
            .to_string(),
        actions::replace_ums_id(&server.shared)
            .await
            .unwrap_err()
            .to_string(),
        actions::store_unavailable(&server.shared, Duration::from_secs(1))
            .unwrap_err()
            .to_string(),
    ];
    for message in refused {
        assert!(message.contains("not in test-rig mode"), "{message}");
    }
    server.stop().await;
}
