//! The inventory report over mutual TLS against an in-process server: what is stored and what
//! `ums-stub devices list` shows, and every refusal storing nothing.

use onboard_protocol::admin::{DeviceView, Page};
use onboard_protocol::inventory::MAX_INVENTORY_BYTES;
use onboard_protocol::{Inventory, Nic, UnitId, routes};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair,
};
use reqwest::StatusCode;
use time::OffsetDateTime;
use ums_stub::store::Actor;

use crate::server::{Answer, Device, TestServer, enroll, generous, read_answer};

fn report() -> Inventory {
    Inventory {
        host_name: "tc-0042".to_owned(),
        os_name: Some("IGEL OS".to_owned()),
        os_version: Some("12.4.2".to_owned()),
        kernel: Some("6.8.0-48-generic".to_owned()),
        cpu_model: Some("Intel(R) Celeron(R) J4125 CPU @ 2.00GHz".to_owned()),
        memory_bytes: 8 << 30,
        nics: vec![
            Nic {
                name: "eth0".to_owned(),
                mac: "00:e0:c5:54:0b:8b".to_owned(),
            },
            Nic {
                name: "wlan0".to_owned(),
                mac: "00:e0:c5:54:0b:8c".to_owned(),
            },
        ],
    }
}

/// Enrolls `device` with a new mass-deployment key; returns its certificate.
async fn enrolled(server: &TestServer, device: &Device) -> Vec<u8> {
    let (_, key) = server
        .shared
        .stub
        .keys()
        .create_mass(None, "", &Actor::cli())
        .await
        .unwrap();
    let answer = enroll(&server.client(None), server, device, key.expose_secret()).await;
    answer.certificate.unwrap()
}

/// PUTs `body` to the inventory route with `client`.
async fn put(
    client: &reqwest::Client,
    server: &TestServer,
    body: Vec<u8>,
) -> reqwest::Result<reqwest::Response> {
    client
        .put(server.url(routes::DEVICE_INVENTORY))
        .header("content-type", routes::CONTENT_TYPE_JSON)
        .body(body)
        .send()
        .await
}

async fn put_answer(client: &reqwest::Client, server: &TestServer, body: Vec<u8>) -> Answer {
    read_answer(put(client, server, body).await.unwrap()).await
}

/// The inventory the store holds for the only device.
async fn stored(server: &TestServer) -> Option<String> {
    let mut devices = server.devices().await;
    assert_eq!(devices.len(), 1);
    devices.pop().unwrap().inventory
}

/// `ums-stub devices list` with `extra` arguments, run on the server's data directory.
fn devices_list(server: &TestServer, extra: &[&str]) -> String {
    let output = std::process::Command::new(crate::util::BIN)
        .env_remove("UMS_STUB_DATA_DIR")
        .env_remove("UMS_STUB_CONFIG")
        .arg("--data-dir")
        .arg(server.data_dir())
        .args(["devices", "list"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn an_enrolled_device_reports_its_inventory_and_devices_list_shows_it() {
    let server = TestServer::start(generous()).await;
    let device = Device::numbered(1);
    let certificate = enrolled(&server, &device).await;
    // Make "last seen" old, so that the report visibly moves it.
    rusqlite::Connection::open(server.shared.stub.settings.database_file())
        .unwrap()
        .execute("UPDATE devices SET last_seen = 0", [])
        .unwrap();
    let before = OffsetDateTime::now_utc().unix_timestamp();

    let client = server.client(Some((&certificate, &device.key)));
    let response = put(&client, &server, serde_json::to_vec(&report()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let record = server.devices().await.pop().unwrap();
    assert!(record.last_seen.unix_timestamp() >= before);
    let saved: Inventory = serde_json::from_str(record.inventory.as_deref().unwrap()).unwrap();
    assert_eq!(saved, report());

    let listed: Page<DeviceView, UnitId> =
        serde_json::from_str(&devices_list(&server, &["--json"])).unwrap();
    let [row] = listed.items.as_slice() else {
        panic!("{listed:?}")
    };
    assert_eq!(row.inventory, Some(report()), "{row:?}");
    assert!(row.last_seen.unix_timestamp() >= before, "{row:?}");
    let last_seen = row
        .last_seen
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();

    let text = devices_list(&server, &[]);
    let line = text
        .lines()
        .find(|line| line.starts_with(&device.unit_id))
        .unwrap_or_else(|| panic!("{text}"));
    for fact in [
        "tc-0042",
        "IGEL OS 12.4.2",
        "6.8.0-48-generic",
        "Intel(R) Celeron(R) J4125 CPU @ 2.00GHz",
        "8.0 GiB",
        "eth0 00:e0:c5:54:0b:8b, wlan0 00:e0:c5:54:0b:8c",
        &last_seen,
    ] {
        assert!(line.contains(fact), "{fact} missing from {text}");
    }
    for heading in [
        "Host name",
        "OS",
        "Kernel",
        "CPU",
        "Memory",
        "Last seen",
        "NICs",
    ] {
        assert!(text.lines().next().unwrap().contains(heading), "{text}");
    }

    // A later report replaces the earlier one.
    let mut moved = report();
    moved.host_name = "tc-0043".to_owned();
    moved.nics.truncate(1);
    let again = put(&client, &server, serde_json::to_vec(&moved).unwrap())
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        serde_json::from_str::<Inventory>(&stored(&server).await.unwrap()).unwrap(),
        moved
    );
    server.stop().await;
}

#[tokio::test]
async fn a_device_that_has_not_reported_lists_with_dashes() {
    let server = TestServer::start(generous()).await;
    let device = Device::numbered(2);
    enrolled(&server, &device).await;
    let text = devices_list(&server, &[]);
    let line = text
        .lines()
        .find(|line| line.starts_with(&device.unit_id))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains(" -  "), "{line}");
    let listed: Page<DeviceView, UnitId> =
        serde_json::from_str(&devices_list(&server, &["--json"])).unwrap();
    assert_eq!(listed.items[0].inventory, None);
    server.stop().await;
}

/// A client certificate for `unit_id` from a CA the server does not know.
fn foreign_certificate(device: &Device) -> Vec<u8> {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "UMS ID");
    ca.distinguished_name = name;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_der = ca.self_signed(&ca_key).unwrap().der().to_vec();
    let issuer = Issuer::from_ca_cert_der(&ca_der.into(), &ca_key).unwrap();
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, device.unit_id.as_str());
    params.distinguished_name = name;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
        .signed_by(&device.key, &issuer)
        .unwrap()
        .der()
        .to_vec()
}

#[tokio::test]
async fn the_report_needs_the_current_certificate_of_an_enrolled_device() {
    let server = TestServer::start(generous()).await;
    let device = Device::numbered(3);
    let first = enrolled(&server, &device).await;
    let body = || serde_json::to_vec(&report()).unwrap();

    // No client certificate.
    let answer = put_answer(&server.client(None), &server, body()).await;
    assert_eq!(
        (answer.status, answer.code()),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    let detail = answer.problem.unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(detail.contains("mutual TLS"), "{detail}");

    // A certificate naming the same unit ID from another CA: TLS refuses it (or, were it let
    // through, the endpoint would).
    let foreign = foreign_certificate(&device);
    match put(
        &server.client(Some((&foreign, &device.key))),
        &server,
        body(),
    )
    .await
    {
        Err(_) => {}
        Ok(response) => {
            let answer = read_answer(response).await;
            assert_eq!(
                (answer.status, answer.code()),
                (StatusCode::BAD_REQUEST, "bad_request")
            );
        }
    }

    // A certificate superseded by renewal.
    let next = Device::new(&device.unit_id);
    let renewed = read_answer(
        server
            .client(Some((&first, &device.key)))
            .post(server.url(routes::EST_SIMPLEREENROLL))
            .body(next.csr_base64.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    let second = renewed.certificate.unwrap();
    // The certificate before it still reports until the new one is seen (its renewal answer may
    // have been lost); once the new one reported, the old one is done.
    let previous = put_answer(&server.client(Some((&first, &device.key))), &server, body()).await;
    assert_eq!(previous.status, StatusCode::NO_CONTENT);
    let current = put_answer(&server.client(Some((&second, &next.key))), &server, body()).await;
    assert_eq!(current.status, StatusCode::NO_CONTENT);
    let stale = put_answer(&server.client(Some((&first, &device.key))), &server, body()).await;
    assert_eq!(
        (stale.status, stale.code()),
        (StatusCode::FORBIDDEN, "certificate_not_current")
    );

    // A certificate of a device since deleted.
    server
        .shared
        .stub
        .store
        .delete_device(&device.unit_id.parse().unwrap(), &Actor::cli())
        .await
        .unwrap();
    let other = Device::numbered(4);
    let other_certificate = enrolled(&server, &other).await;
    let deleted = put_answer(&server.client(Some((&second, &next.key))), &server, body()).await;
    assert_eq!(deleted.code(), "certificate_not_current");
    assert_eq!(stored(&server).await, None, "nothing stored");

    // The right one still works.
    let response = put(
        &server.client(Some((&other_certificate, &other.key))),
        &server,
        body(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(stored(&server).await.is_some());
    server.stop().await;
}

#[tokio::test]
async fn malformed_or_oversized_reports_get_400_and_change_nothing() {
    let server = TestServer::start(generous()).await;
    let device = Device::numbered(5);
    let certificate = enrolled(&server, &device).await;
    let client = server.client(Some((&certificate, &device.key)));
    let good = serde_json::to_vec(&report()).unwrap();
    assert_eq!(
        put(&client, &server, good).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let kept = stored(&server).await;

    let marker = "MARKER-7d1e";
    let mut too_many = serde_json::to_value(report()).unwrap();
    too_many["nics"] = serde_json::Value::Array(vec![too_many["nics"][0].clone(); 65]);
    let mut padded = serde_json::to_value(report()).unwrap();
    padded["padding"] = serde_json::Value::String("x".repeat(MAX_INVENTORY_BYTES));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not JSON", b"%%% {".to_vec(), "not JSON"),
        (
            "cut short",
            br#"{"host_name": "tc"#.to_vec(),
            "ends too early",
        ),
        (
            "a value of the wrong type",
            format!(r#"{{"host_name": "tc", "memory_bytes": "{marker}"}}"#).into_bytes(),
            "wrong type",
        ),
        (
            "no host name",
            br#"{"os_name": "x"}"#.to_vec(),
            "lacks a member",
        ),
        (
            "a control character",
            format!(r#"{{"host_name": "{marker}\u001b[2J"}}"#).into_bytes(),
            "host_name",
        ),
        (
            "a malformed MAC",
            format!(r#"{{"host_name": "tc", "nics": [{{"name": "eth0", "mac": "{marker}"}}]}}"#)
                .into_bytes(),
            "nics[0].mac",
        ),
        (
            "too many NICs",
            serde_json::to_vec(&too_many).unwrap(),
            "nics",
        ),
        (
            "larger than the limit",
            serde_json::to_vec(&padded).unwrap(),
            "larger than",
        ),
    ];
    for (what, body, said) in cases {
        let answer = put_answer(&client, &server, body).await;
        assert_eq!(
            (answer.status, answer.code()),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "{what}"
        );
        let detail = answer.problem.unwrap()["detail"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(detail.contains(said), "{what}: {detail}");
        assert!(
            !detail.contains(marker),
            "{what}: the value is echoed: {detail}"
        );
    }
    // Past the limit of every route: refused before the endpoint reads it.
    let huge = put(&client, &server, vec![b' '; 100_000]).await.unwrap();
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);

    assert_eq!(
        stored(&server).await,
        kept,
        "the earlier report is untouched"
    );
    server.stop().await;
}

#[tokio::test]
async fn devices_list_pages_by_unit_id() {
    let server = TestServer::start(generous()).await;
    for n in [3, 1, 2] {
        enrolled(&server, &Device::numbered(n)).await;
    }
    let page = |extra: &[&str]| -> Page<DeviceView, UnitId> {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&devices_list(&server, &args)).unwrap()
    };
    let units = |page: &Page<DeviceView, UnitId>| -> Vec<String> {
        page.items.iter().map(|d| d.unit_id.to_string()).collect()
    };
    let first = page(&["--limit", "2"]);
    let numbered = |n| Device::numbered(n).unit_id;
    assert_eq!(units(&first), [numbered(1), numbered(2)]);
    assert_eq!(first.total, Some(3));
    let after = first.next_after.clone().unwrap().to_string();
    assert_eq!(after, numbered(2));
    let rest = page(&["--limit", "2", "--after", &after]);
    assert_eq!(units(&rest), [numbered(3)]);
    assert_eq!(rest.next_after, None);
    let text = devices_list(&server, &["--limit", "1"]);
    assert!(
        text.contains(&format!(
            "1 of 3 devices shown; the next page: --after {}",
            numbered(1)
        )),
        "{text}"
    );
    server.stop().await;
}
