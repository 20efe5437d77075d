//! Test-rig mode's controls: the server's clock moved (in-process and over the control listener)
//! changes what the server decides, without sleeping: keys past their lifetime or come into it,
//! certificates within and past the renewal grace, tokens and sessions past their lifetime,
//! heartbeats gone stale, on both store backends; strict mode's counts; the control listener's
//! routes and refusals; and `ums-stub serve --test-rig` as a process (its banner, its address, its
//! loopback-only listener) against a normal `serve`, which has none of it.

use std::sync::Arc;

use onboard_protocol::admin::{CreateKeys, NewAccount, NewToken, Right};
use onboard_protocol::{KeyKind, routes};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};
use ums_stub::accounts::Granter;
use ums_stub::config::Settings;
use ums_stub::rig::Clock;
use ums_stub::rig::control::{self, Control, Facts};
use ums_stub::store::{PostgresStore, ServerBeat, SqliteStore, Store};

use crate::pg::PgCluster;
use crate::server::{Device, TestServer, enroll, generous, keys_as, read_answer};
use crate::util::DataDir;

/// A server in test-rig mode with generous rate limits, `adjust` changing its settings.
async fn rig_server(adjust: impl FnOnce(&mut Settings) + Send) -> TestServer {
    TestServer::start_with(|settings| {
        settings.rate_limits = generous();
        settings.test_rig = true;
        adjust(settings);
    })
    .await
}

/// The server's clock, as its rig moves it.
fn clock(server: &TestServer) -> Clock {
    server.running().rig().expect("test-rig mode").clock.clone()
}

fn one_time(expires_at: Option<OffsetDateTime>, not_before: Option<OffsetDateTime>) -> CreateKeys {
    CreateKeys::OneTime {
        quantity: 1,
        comment: String::new(),
        expires_at,
        not_before,
        folder: None,
    }
}

fn mass() -> CreateKeys {
    CreateKeys::Mass {
        password: None,
        comment: String::new(),
        expires_at: None,
        not_before: None,
        folder: None,
        usage_limit: None,
    }
}

async fn status_of(server: &TestServer, id: i64) -> String {
    let view = server.shared.stub.keys().get(id, false).await.unwrap();
    view.status.as_str().to_owned()
}

#[tokio::test]
async fn a_moved_clock_expires_keys_and_brings_others_into_their_lifetime() {
    let server = rig_server(|_| {}).await;
    let client = server.client(None);
    let now = OffsetDateTime::now_utc();
    let [(expiring, expiring_key)] = keys_as(&server, one_time(Some(now + Duration::DAY), None))
        .await
        .try_into()
        .unwrap();
    let [(later, later_key)] = keys_as(&server, one_time(None, Some(now + Duration::DAY)))
        .await
        .try_into()
        .unwrap();
    assert_eq!(status_of(&server, expiring).await, "active");
    assert_eq!(status_of(&server, later).await, "not_yet_valid");
    let early = enroll(&client, &server, &Device::numbered(1), &later_key).await;
    assert_eq!(early.code(), "key_not_yet_valid");

    clock(&server).advance(Duration::days(2)).unwrap();
    // The key list judges by the moved clock, and so do enrollment and the key check.
    assert_eq!(status_of(&server, expiring).await, "expired");
    assert_eq!(status_of(&server, later).await, "active");
    let expired = enroll(&client, &server, &Device::numbered(2), &expiring_key).await;
    assert_eq!(
        (expired.status, expired.code()),
        (StatusCode::FORBIDDEN, "key_expired")
    );
    let checked = client
        .post(server.url(routes::DEVICE_CHECK_KEYS))
        .basic_auth("00E0C5000002", Some(&expiring_key))
        .header("content-type", "application/pkcs10")
        .body(Device::numbered(2).csr_base64.clone())
        .send()
        .await
        .unwrap();
    let checked: Value = checked.json().await.unwrap();
    assert_eq!(checked["keys"][0]["code"], "key_expired", "{checked}");
    let enrolled = enroll(&client, &server, &Device::numbered(1), &later_key).await;
    assert_eq!(enrolled.status, StatusCode::OK, "{:?}", enrolled.problem);
    server.stop().await;
}

/// PUTs an empty inventory report with `certificate`; the answer.
async fn report(
    server: &TestServer,
    certificate: &[u8],
    device: &Device,
) -> Result<crate::server::Answer, reqwest::Error> {
    let response = server
        .client(Some((certificate, &device.key)))
        .put(server.url(routes::DEVICE_INVENTORY))
        .header("content-type", routes::CONTENT_TYPE_JSON)
        .body(r#"{"host_name": "rig"}"#)
        .send()
        .await?;
    Ok(read_answer(response).await)
}

/// Renews with `certificate`; the answer, or the error of a refused handshake.
async fn renew(
    server: &TestServer,
    certificate: &[u8],
    device: &Device,
) -> Result<crate::server::Answer, reqwest::Error> {
    let response = server
        .client(Some((certificate, &device.key)))
        .post(server.url(routes::EST_SIMPLEREENROLL))
        .body(device.csr_base64.clone())
        .send()
        .await?;
    Ok(read_answer(response).await)
}

#[tokio::test]
async fn a_moved_clock_expires_certificates_renews_them_within_the_grace_and_not_past_it() {
    // Certificates of 10 days, a grace of 30.
    let server = rig_server(|settings| {
        settings.certificate_lifetime = Duration::days(10);
        settings.renewal_grace = Duration::days(30);
    })
    .await;
    let [(_, key)] = keys_as(&server, mass()).await.try_into().unwrap();
    let device = Device::numbered(7);
    let first = enroll(&server.client(None), &server, &device, &key)
        .await
        .certificate
        .unwrap();
    assert!(
        report(&server, &first, &device)
            .await
            .unwrap()
            .status
            .is_success()
    );

    clock(&server).advance(Duration::days(11)).unwrap();
    // Past its lifetime by the moved clock: served only to renew.
    let refused = report(&server, &first, &device).await.unwrap();
    assert_eq!(refused.code(), "bad_request");
    assert!(
        refused.problem.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    let renewed = renew(&server, &first, &device).await.unwrap();
    assert_eq!(renewed.status, StatusCode::OK, "{:?}", renewed.problem);
    let second = renewed.certificate.unwrap();
    assert_ne!(second, first);
    // Issued by the moved clock (valid from an hour before it, ahead of the machine's clock), and
    // taken by the server, which judges it by the same clock.
    let issued = server.devices().await.remove(0);
    assert!(issued.not_after > OffsetDateTime::now_utc() + Duration::days(20));
    assert!(
        report(&server, &second, &device)
            .await
            .unwrap()
            .status
            .is_success()
    );

    // Past its lifetime and the grace: the handshake refuses it, nothing renews.
    clock(&server).advance(Duration::days(41)).unwrap();
    assert!(
        renew(&server, &second, &device).await.is_err(),
        "the handshake took a lapsed certificate"
    );
    // The record has lapsed by the moved clock: the key enrolls the device anew (a new
    // certificate, not the stored one handed back as a repeat).
    let again = enroll(&server.client(None), &server, &device, &key).await;
    assert_eq!(again.status, StatusCode::OK, "{:?}", again.problem);
    assert_ne!(again.certificate.unwrap(), second);
    server.stop().await;
}

async fn account_with_token(server: &TestServer, expires_days: u32) -> String {
    let accounts = server.shared.stub.accounts();
    accounts
        .create(
            NewAccount {
                name: "rig-admin".to_owned(),
                password: "a rig's long password".to_owned(),
                rights: Right::ALL.to_vec(),
            },
            &Granter::cli(),
        )
        .await
        .unwrap();
    accounts
        .create_token(
            NewToken {
                account: "rig-admin".to_owned(),
                name: "rig".to_owned(),
                rights: None,
                expires_days: Some(expires_days),
            },
            &Granter::cli(),
        )
        .await
        .unwrap()
        .token
}

#[tokio::test]
async fn a_moved_clock_ends_tokens_and_sessions_past_their_lifetime() {
    let server = rig_server(|settings| settings.session_lifetime = Duration::hours(8)).await;
    let token = account_with_token(&server, 1).await;
    let client = server.client(None);
    let keys = |bearer: Option<&str>, cookie: Option<&str>| {
        let mut request = client.get(server.url("/api/v1/session"));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send()
    };
    let login = client
        .post(server.url("/api/v1/session"))
        .json(&json!({"name": "rig-admin", "password": "a rig's long password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let cookie = login
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(
        keys(Some(&token), None).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        keys(None, Some(&cookie)).await.unwrap().status(),
        StatusCode::OK
    );

    // Past the session's 8 hours, inside the token's day.
    clock(&server).advance(Duration::hours(9)).unwrap();
    assert_eq!(
        keys(None, Some(&cookie)).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        keys(Some(&token), None).await.unwrap().status(),
        StatusCode::OK
    );
    // Past the token's day.
    clock(&server).advance(Duration::hours(16)).unwrap();
    assert_eq!(
        keys(Some(&token), None).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    server.stop().await;
}

/// What every store measures by the server's clock: its now, heartbeats and their staleness, key
/// lifetimes at enrollment, and ended sessions.
async fn measures_by_the_moved_clock(store: Arc<dyn Store>, clock: Clock) {
    let told = store.clock().await.unwrap();
    assert!((told - OffsetDateTime::now_utc()).abs() < Duration::seconds(5));
    let beat = ServerBeat {
        name: "rig:8443".to_owned(),
        fingerprint: ums_stub::ums_id::UmsId::generate().unwrap().fingerprint(),
        status: ums_stub::cluster::SyncStatus::Main,
    };
    store.heartbeat(&beat).await.unwrap();
    let running = |rows: Vec<ums_stub::store::ServerRow>| rows[0].running;
    let within = std::time::Duration::from_secs(60);
    assert!(running(store.servers(within).await.unwrap()));

    clock.advance(Duration::hours(1)).unwrap();
    let told = store.clock().await.unwrap();
    assert!(
        (told - OffsetDateTime::now_utc() - Duration::hours(1)).abs() < Duration::seconds(5),
        "the database's clock moved with the server's: {told}"
    );
    assert!(
        !running(store.servers(within).await.unwrap()),
        "a beat an hour old by the moved clock is stale"
    );
    store.heartbeat(&beat).await.unwrap();
    assert!(
        running(store.servers(within).await.unwrap()),
        "a beat by the moved clock is fresh"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_store_measures_by_the_moved_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::system();
    let (path, sqlite_clock) = (dir.path().join("store.db"), clock.clone());
    let sqlite =
        tokio::task::spawn_blocking(move || SqliteStore::open_with_clock(&path, sqlite_clock))
            .await
            .unwrap()
            .unwrap();
    measures_by_the_moved_clock(Arc::new(sqlite), clock).await;

    let cluster = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    let clock = Clock::system();
    let postgres = PostgresStore::open(&cluster.database())
        .await
        .unwrap()
        .with_clock(clock.clone());
    measures_by_the_moved_clock(Arc::new(postgres), clock).await;
}

/// The control listener of `server` on a free loopback port: its base URL and task.
async fn control_of(server: &TestServer) -> (String, tokio::task::JoinHandle<()>) {
    let controls = Control::new(
        server.shared.clone(),
        Facts {
            host: "localhost".to_owned(),
            port: server.port,
        },
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind(control::DEFAULT_LISTEN)
        .await
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    (base, control::spawn(listener, controls))
}

/// The status and JSON body of a control request.
async fn answer(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_control_listener_moves_the_clock_sets_faults_tells_certificates_and_resets() {
    let server = rig_server(|settings| {
        settings.certificate_lifetime = Duration::days(10);
        settings.renewal_grace = Duration::days(30);
    })
    .await;
    let (base, control) = control_of(&server).await;
    let http = reqwest::Client::new();
    let at = |path: &str| format!("{base}/rig/v1/{path}");

    let (status, facts) = answer(http.get(at("server"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(facts["url"], format!("https://localhost:{}", server.port));
    assert_eq!(
        facts["ums_id_fingerprint"],
        server.shared.stub.ums_id.fingerprint().to_string()
    );
    assert_eq!(
        facts["ums_id_certificate_pem"],
        server.shared.stub.ums_id.certificate_pem()
    );

    // A plan that does not validate is refused naming the field, and nothing changes.
    let rig = server.running().rig().unwrap().clone();
    for (plan, field) in [
        (
            json!({"routes": {"enrollment": [{"probability": 1.5, "fault": {"kind": "hold"}}]}}),
            "routes.enrollment[0].probability",
        ),
        (
            json!({"routes": {"renewal": [{"probability": 0.5, "fault": {"kind": "refuse", "status": 200}}]}}),
            "routes.renewal[0].fault.status",
        ),
        (json!({"seed": 1, "rutes": {}}), "rutes"),
        (
            json!({"close_sessions_every_seconds": 0}),
            "close_sessions_every_seconds",
        ),
    ] {
        let (status, problem) = answer(http.put(at("faults")).json(&plan)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{plan}");
        assert_eq!(problem["code"], "invalid");
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "{problem} names {field}"
        );
    }
    assert!(rig.faults().is_off());
    let plan = json!({"seed": 7, "routes": {"admin": [{"probability": 0.25, "fault": {"kind": "delay", "millis": 1}}]}});
    let (status, put) = answer(http.put(at("faults")).json(&plan)).await;
    assert_eq!(status, StatusCode::OK, "{put}");
    assert_eq!(answer(http.get(at("faults"))).await.1, put);
    assert_eq!(rig.faults().seed, 7);
    assert!(!rig.faults().is_off());

    // A key file for a stick, naming this server; a device enrolls with its key.
    let response = http
        .post(at("key-files"))
        .json(&json!({"kind": "one-time", "count": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let file = onboard_protocol::KeyFile::parse(
        &response.bytes().await.unwrap(),
        &onboard_protocol::keyfile::Limits::default(),
    )
    .unwrap();
    assert_eq!(file.count(KeyKind::OneTime), 2);
    assert_eq!(file.ums_id, server.shared.stub.ums_id.fingerprint());
    let value = file.keys[0].key().expose_secret().to_owned();
    let device = Device::numbered(9);
    let certificate = enroll(&server.client(None), &server, &device, &value)
        .await
        .certificate
        .unwrap();
    let serial = server.devices().await.remove(0).serial;

    let (_, status_now) = answer(http.get(at(&format!("certificates/{serial}")))).await;
    assert_eq!(status_now["status"], "valid");
    assert_eq!(status_now["unit_id"], device.unit_id);
    let (status, moved) = answer(
        http.post(at("clock/advance"))
            .json(&json!({"seconds": 11 * 86_400})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(moved["offset_seconds"], 11 * 86_400);
    // The move recorded the server's heartbeat by the moved clock: it still shows running.
    let servers = server
        .shared
        .stub
        .store
        .servers(ums_stub::cluster::RUNNING_WITHIN)
        .await
        .unwrap();
    assert!(servers.iter().all(|row| row.running), "{servers:?}");
    assert_eq!(servers.len(), 1);
    assert_eq!(
        answer(http.get(at("clock"))).await.1["offset_seconds"],
        11 * 86_400
    );
    let (_, expired) =
        answer(http.get(at(&format!("certificates/{}", serial.to_uppercase())))).await;
    assert_eq!(expired["status"], "expired", "{expired}");
    let renewed = renew(&server, &certificate, &device).await.unwrap();
    assert_eq!(renewed.status, StatusCode::OK, "{:?}", renewed.problem);
    let current = server.devices().await.remove(0).serial;
    let (_, old) = answer(http.get(at(&format!("certificates/{serial}")))).await;
    assert_eq!(old["status"], "renewed", "{old}");
    assert_eq!(
        answer(http.get(at(&format!("certificates/{current}"))))
            .await
            .1["status"],
        "valid"
    );
    assert_eq!(
        answer(http.get(at("certificates/abc123"))).await.1["status"],
        "unknown"
    );
    let (status, problem) = answer(http.get(at("certificates/not-hex"))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem["detail"].as_str().unwrap().starts_with("serial:"));
    for (path, body, field) in [
        (
            "clock/advance",
            json!({"seconds": 200u64 * 365 * 86_400}),
            "seconds:",
        ),
        ("clock/advance", json!({"minutes": 1}), "minutes"),
        (
            "actions/store-unavailable",
            json!({"seconds": 0}),
            "seconds:",
        ),
        (
            "key-files",
            json!({"kind": "one-time", "count": 0}),
            "count:",
        ),
    ] {
        let (status, problem) = answer(http.post(at(path)).json(&body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path} {body}");
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "{path}: {problem} names {field}"
        );
    }

    // Reset: faults off, the clock back, certificates judged by the machine's clock again.
    let (status, _) = answer(http.post(at("reset"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(rig.faults().is_off());
    assert_eq!(rig.clock.offset(), Duration::ZERO);
    assert_eq!(
        answer(http.get(at(&format!("certificates/{current}"))))
            .await
            .1["status"],
        "valid"
    );
    control.abort();
    server.stop().await;
}

#[tokio::test]
async fn strict_mode_counts_what_the_server_does_not_serve_and_a_normal_server_has_none() {
    let metrics_on = |settings: &mut Settings| {
        settings.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    };
    let server = rig_server(metrics_on).await;
    let token = account_with_token(&server, 1).await;
    let (base, control) = control_of(&server).await;
    let http = reqwest::Client::new();
    let client = server.client(None);
    let unserved = [
        (reqwest::Method::GET, "/api/v2/keys", StatusCode::NOT_FOUND),
        (reqwest::Method::GET, "/api/v2/keys", StatusCode::NOT_FOUND),
        (
            reqwest::Method::DELETE,
            routes::EST_CACERTS,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ];
    for (method, path, status) in &unserved {
        let response = client
            .request(method.clone(), server.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), *status, "{method} {path}");
    }
    // A route's own 404 (a device it does not know) is no unknown route.
    let own = client
        .get(server.url("/api/v1/devices/00E0C5999999"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::NOT_FOUND);

    let (_, counted) = answer(http.get(format!("{base}/rig/v1/strict"))).await;
    assert_eq!(
        counted,
        json!({"total": 3, "not_itemised": 0, "requests": [
            {"method": "DELETE", "path": routes::EST_CACERTS, "count": 1},
            {"method": "GET", "path": "/api/v2/keys", "count": 2},
        ]})
    );
    let scrape = |addr: std::net::SocketAddr| async move {
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let text = scrape(server.running().metrics_addr().unwrap()).await;
    assert!(
        text.contains("ums_stub_rig_unknown_requests_total{method=\"GET\"} 2"),
        "{text}"
    );
    assert!(text.contains("ums_stub_rig_unknown_requests_total{method=\"DELETE\"} 1"));
    answer(http.post(format!("{base}/rig/v1/reset"))).await;
    assert_eq!(
        answer(http.get(format!("{base}/rig/v1/strict"))).await.1["total"],
        0
    );
    control.abort();
    server.stop().await;

    // A normal server: no rig, no strict mode, no control listener to start.
    let normal = TestServer::from_builder(
        ums_stub::testing::TestServer::builder()
            .without_rig()
            .settings(metrics_on),
    )
    .await;
    assert!(normal.running().rig().is_none());
    assert!(normal.shared.strict.is_none());
    assert!(
        Control::new(
            normal.shared.clone(),
            Facts {
                host: "localhost".to_owned(),
                port: normal.port
            }
        )
        .is_err()
    );
    let response = normal
        .client(None)
        .get(normal.url("/api/v2/keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let text = scrape(normal.running().metrics_addr().unwrap()).await;
    assert!(
        !text.contains("ums_stub_rig_unknown_requests_total{"),
        "{text}"
    );
    normal.stop().await;
}

/// `ums-stub serve` as a process on port 0 (through `ums_stub::testing`), `extra` added to its
/// arguments; its standard error goes to `stderr`.
struct Served {
    process: ums_stub::testing::ServeProcess,
    main: std::net::SocketAddr,
    control: Option<std::net::SocketAddr>,
}

impl Served {
    fn start(dir: &DataDir, extra: &[&str], stderr: &std::path::Path) -> Served {
        let mut command = ums_stub::testing::ServeCommand::program(dir.command(&[]))
            .hosts(&["localhost", "127.0.0.1"])
            .stderr(std::fs::File::create(stderr).unwrap());
        for arg in extra {
            command = command.arg(arg);
        }
        let process = command.start().unwrap();
        let main = process.addr();
        // The control listener's line follows the main one's.
        let control = extra.contains(&"--test-rig").then(|| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                let printed = process.printed();
                if let Some(at) = printed
                    .iter()
                    .find_map(|line| line.strip_prefix("test-rig control on "))
                {
                    break at.parse().unwrap();
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "serve --test-rig printed {printed:?}"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        });
        Served {
            process,
            main,
            control,
        }
    }

    /// How many TCP sockets the process listens on.
    fn listeners(&self) -> usize {
        let fds = format!("/proc/{}/fd", self.process.pid());
        let inodes: std::collections::HashSet<String> = std::fs::read_dir(fds)
            .unwrap()
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter_map(|link| {
                let link = link.to_string_lossy().into_owned();
                Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
            })
            .collect();
        ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .filter_map(|table| std::fs::read_to_string(table).ok())
            .flat_map(|text| {
                text.lines()
                    .skip(1)
                    .map(|line| {
                        line.split_whitespace()
                            .map(str::to_owned)
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<_>>()
            })
            .filter(|fields| fields[3] == "0A" && inodes.contains(&fields[9]))
            .count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_test_rig_opens_a_loopback_control_listener_and_a_normal_serve_none() {
    let dir = DataDir::new();
    let stderr = dir.scratch().join("stderr");
    let served = tokio::task::block_in_place(|| Served::start(&dir, &["--test-rig"], &stderr));
    let control = served.control.unwrap();
    assert!(control.ip().is_loopback());
    assert_eq!(served.listeners(), 2, "the main and the control listener");
    let log = std::fs::read_to_string(&stderr).unwrap();
    assert!(log.contains("TEST-RIG MODE"), "{log}");
    assert!(log.contains(&format!("http://{control}/rig/v1/")), "{log}");
    let http = reqwest::Client::new();
    let (status, moved) = answer(
        http.post(format!("http://{control}/rig/v1/clock/advance"))
            .json(&json!({"seconds": 60})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(moved["offset_seconds"], 60);
    let (_, facts) = answer(http.get(format!("http://{control}/rig/v1/server"))).await;
    assert_eq!(
        facts["url"],
        format!("https://localhost:{}", served.main.port())
    );
    let document: Value = http
        .get(format!("http://{control}/rig/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(document["paths"]["/rig/v1/clock/advance"]["post"]["tags"][0] == "test-rig");
    drop(served);

    // A normal serve: one listener, no control line, no banner, no rig routes.
    let pinned = crate::server::pinned_client(dir_ums_id(&dir).as_slice(), None);
    let stderr = dir.scratch().join("stderr-normal");
    let served = tokio::task::block_in_place(|| Served::start(&dir, &[], &stderr));
    assert_eq!(served.listeners(), 1, "the main listener only");
    for path in ["/rig/v1/clock", "/rig/v1/server"] {
        let response = pinned
            .get(format!("https://localhost:{}{path}", served.main.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    drop(served);
    let log = std::fs::read_to_string(&stderr).unwrap();
    assert!(!log.contains("TEST-RIG"), "{log}");
}

/// The UMS ID certificate (DER) of the data directory `dir`.
fn dir_ums_id(dir: &DataDir) -> Vec<u8> {
    let out = dir.scratch().join("ums-id.crt");
    dir.ok(&[
        "ums-id",
        "export",
        "--out",
        out.to_str().unwrap(),
        "--force",
    ]);
    pem::parse(std::fs::read(out).unwrap())
        .unwrap()
        .into_contents()
}

#[test]
fn serve_refuses_a_control_address_off_loopback_naming_the_flag() {
    let dir = DataDir::new();
    for addr in ["0.0.0.0:0", "192.0.2.1:9999", "[::]:0"] {
        // A server that took the address would listen: `start` would succeed (and the server
        // be stopped when dropped), failing the test rather than waiting for it.
        let stderr = dir.scratch().join("refused");
        let started = ums_stub::testing::ServeCommand::program(dir.command(&[]))
            .arg("--test-rig")
            .arg("--test-rig-listen")
            .arg(addr)
            .stderr(std::fs::File::create(&stderr).unwrap())
            .start();
        let ended = started.expect_err("serve listened with a control address off loopback");
        let error = std::fs::read_to_string(&stderr).unwrap();
        assert!(
            ended.to_string().contains("exit status: 1"),
            "{addr}: {ended:#}: {error}"
        );
        assert!(error.contains("--test-rig-listen"), "{error}");
        assert!(error.contains("loopback"), "{error}");
    }
    // The control address without test-rig mode is a usage error.
    let output = dir.run(&["serve", "--test-rig-listen", "127.0.0.1:0"]);
    assert_eq!(output.status.code(), Some(2));
}
