//! The metrics and health listener (`metrics_listen`): a scrape after a small fleet shows the
//! fleet as the store counts it, no identifier reaches a label, `/readyz` follows the store (a
//! PostgreSQL server stopped and started again) and says when it is shutting down, and the
//! listener is off unless asked for.

use std::collections::BTreeMap;

use onboard_protocol::KeyKind;
use onboard_protocol::admin::KeyStatus;
use ums_stub::store::Database;
use ums_stub::store::{Actor, KeyFilter, PageRequest};

use crate::pg::PgCluster;
use crate::server::{Device, TestServer, enroll};

/// The samples of a scrape by their full name with labels (`name{labels}`).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn sample(all: &BTreeMap<String, f64>, name: &str) -> f64 {
    *all.get(name)
        .unwrap_or_else(|| panic!("no sample {name} in {all:#?}"))
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_a_fleet_shows_the_fleet_as_the_store_counts_it() {
    let server = TestServer::start_with(|settings| {
        settings.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        settings.rate_limits = crate::server::generous();
    })
    .await;
    let at = server.running().metrics_addr().expect("metrics are on");
    assert!(at.ip().is_loopback());
    let admin = server.shared.stub.keys();
    let ids = admin
        .create_one_time(6, "", Box::new(|_| {}), &Actor::cli())
        .await
        .unwrap();
    let listed = admin
        .list(
            &KeyFilter {
                ids: Some(ids),
                ..KeyFilter::default()
            },
            &PageRequest::all(),
            true,
        )
        .await
        .unwrap()
        .items;
    let client = server.client(None);
    let devices: Vec<Device> = (0..5).map(Device::numbered).collect();
    for (device, key) in devices.iter().zip(&listed) {
        let answer = enroll(&client, &server, device, &key.key).await;
        assert_eq!(
            answer.status,
            reqwest::StatusCode::OK,
            "{:?}",
            answer.problem
        );
    }
    // A lost answer's retry, and a guess.
    let again = enroll(&client, &server, &devices[0], &listed[0].key).await;
    assert_eq!(again.status, reqwest::StatusCode::OK);
    let guess = enroll(
        &client,
        &server,
        &Device::numbered(9),
        "not-a-key-at-all-0000",
    )
    .await;
    assert_eq!(guess.code(), "key_unknown");

    let (status, text) = get(&format!("http://{at}/metrics")).await;
    assert_eq!(status, 200);
    let all = samples(&text);
    let used = server
        .shared
        .stub
        .store
        .count_keys(&KeyFilter {
            kind: Some(KeyKind::OneTime),
            status: Some(KeyStatus::Used),
            ..KeyFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(used, 5);
    assert_eq!(
        sample(
            &all,
            r#"ums_stub_enrollments_total{outcome="issued",code="none",key_type="one-time"}"#
        ),
        used as f64
    );
    assert_eq!(
        sample(
            &all,
            r#"ums_stub_enrollments_total{outcome="repeated",code="none",key_type="one-time"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &all,
            r#"ums_stub_enrollments_total{outcome="refused",code="key_unknown",key_type="unknown"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&all, r#"ums_stub_keys{key_type="one-time",status="used"}"#),
        used as f64
    );
    assert_eq!(
        sample(
            &all,
            r#"ums_stub_keys{key_type="one-time",status="active"}"#
        ),
        1.0
    );
    assert_eq!(sample(&all, "ums_stub_enrollment_seconds_count"), 7.0);
    assert_eq!(
        sample(&all, r#"ums_stub_store_seconds_count{operation="enroll"}"#),
        7.0,
        "a single well-formed key goes to the store"
    );
    assert!(all.contains_key("ums_stub_connections"), "{text}");
    assert_eq!(sample(&all, "ums_stub_connector_sessions"), 0.0);
    assert!(
        text.contains(&format!(
            "ums_stub_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    // No unit ID, key value or address in any label.
    for device in &devices {
        assert!(!text.contains(&device.unit_id), "{text}");
    }
    for key in &listed {
        assert!(!text.contains(&key.key), "{text}");
    }
    assert!(!text.contains("127.0.0.1"), "{text}");

    assert_eq!(
        get(&format!("http://{at}/livez")).await,
        (200, "ok\n".to_owned())
    );
    assert_eq!(get(&format!("http://{at}/readyz")).await.0, 200);
    server.stop().await;
}

#[tokio::test]
async fn no_metrics_listener_unless_asked_for() {
    let server = TestServer::start(crate::server::generous()).await;
    assert_eq!(server.running().metrics_addr(), None);
    assert_eq!(server.shared.stub.settings.metrics_listen, None);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_503_while_postgres_is_down_and_200_when_it_is_back() {
    let cluster = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    let url = cluster.database();
    let folder = tempfile::tempdir().unwrap();
    let secret = folder.path().join("cluster.secret");
    ums_stub::cluster::ClusterSecret::create(&secret).unwrap();
    let server = TestServer::start_with(move |settings| {
        settings.database = Database::parse(&url).unwrap();
        settings.cluster_secret = Some(secret);
        settings.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let readyz = format!("http://{}/readyz", server.running().metrics_addr().unwrap());
    assert_eq!(get(&readyz).await, (200, "ready\n".to_owned()));

    let cluster = std::sync::Arc::new(cluster);
    let stopping = cluster.clone();
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .unwrap();
    let (status, text) = get(&readyz).await;
    assert_eq!(status, 503, "{text}");
    assert_eq!(text, "not ready: the store does not answer\n");
    // Liveness is not readiness: the process still serves.
    assert_eq!(get(&readyz.replace("readyz", "livez")).await.0, 200);

    let starting = cluster.clone();
    tokio::task::spawn_blocking(move || starting.start_again())
        .await
        .unwrap();
    // The pool makes new connections as it needs them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, text) = get(&readyz).await;
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still not ready 30 s after PostgreSQL came back: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    server.stop().await;
}
