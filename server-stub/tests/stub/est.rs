//! EST over HTTPS against an in-process server: every key rule, every problem code, bad input,
//! lost answers, concurrency and renewal.

use std::collections::HashSet;

use onboard_protocol::admin::{CreateKeys, EditKey};
use onboard_protocol::{KeyKind, routes};
use reqwest::StatusCode;
use time::OffsetDateTime;
use ums_stub::rate_limit::Limits;
use ums_stub::store::{Actor, KeyFilter, PageRequest};

use crate::server::{Device, TestServer, enroll, generous, keys, keys_as, read_answer};

async fn usage(server: &TestServer, id: i64) -> (u64, String) {
    let view = server.shared.stub.keys().get(id, false).await.unwrap();
    (view.usage_count, view.status.as_str().to_owned())
}

async fn device_count(server: &TestServer) -> usize {
    server.devices().await.len()
}

#[tokio::test]
async fn cacerts_serves_the_ums_id() {
    let server = TestServer::start(generous()).await;
    let body = server
        .client(None)
        .get(server.url(routes::EST_CACERTS))
        .send()
        .await
        .unwrap();
    assert_eq!(body.status(), StatusCode::OK);
    assert!(
        body.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/pkcs7-mime")
    );
    let der = onboard_protocol::est::decode_base64(&body.bytes().await.unwrap()).unwrap();
    assert_eq!(
        onboard_protocol::est::parse_certs_only(&der).unwrap(),
        vec![server.ums_id_der.clone()]
    );
    server.stop().await;
}

#[tokio::test]
async fn one_time_key_enrolls_one_device_then_says_key_used() {
    let server = TestServer::start(generous()).await;
    let client = server.client(None);
    let [(id, key)] = keys(&server, KeyKind::OneTime, 1, None)
        .await
        .try_into()
        .unwrap();
    // HTTP Basic users cannot hold ':' (RFC 7617); any case of the 12 digits is taken.
    let first = Device::new("00e0c5540b8b");
    let answer = enroll(&client, &server, &first, &key).await;
    assert_eq!(answer.status, StatusCode::OK);
    let der = answer.certificate.unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(
        cert.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "00E0C5540B8B"
    );
    assert_eq!(
        cert.public_key().raw,
        first.key.subject_public_key_info().as_slice()
    );
    let (_, ca) = x509_parser::parse_x509_certificate(&server.ums_id_der).unwrap();
    cert.verify_signature(Some(ca.public_key())).unwrap();
    assert!(
        cert.extended_key_usage()
            .unwrap()
            .unwrap()
            .value
            .client_auth
    );
    assert_eq!(usage(&server, id).await, (1, "used".to_owned()));

    let second = enroll(&client, &server, &Device::new("00E0C5540B8C"), &key).await;
    assert_eq!(
        (second.status, second.code()),
        (StatusCode::FORBIDDEN, "key_used")
    );
    assert_eq!(usage(&server, id).await, (1, "used".to_owned()));
    assert_eq!(device_count(&server).await, 1);
    server.stop().await;
}

use rcgen::PublicKeyData;

#[tokio::test]
async fn device_bound_key_serves_only_its_unit() {
    let server = TestServer::start(generous()).await;
    let client = server.client(None);
    let [(id, key)] = keys(&server, KeyKind::DeviceBound, 1, Some("00E0C5540B8B"))
        .await
        .try_into()
        .unwrap();
    let other = enroll(&client, &server, &Device::new("00E0C5540B8C"), &key).await;
    assert_eq!(
        (other.status, other.code()),
        (StatusCode::FORBIDDEN, "key_bound_to_other_device")
    );
    assert_eq!(usage(&server, id).await, (0, "active".to_owned()));
    let own = enroll(&client, &server, &Device::new("00E0C5540B8B"), &key).await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(usage(&server, id).await, (1, "used".to_owned()));
    server.stop().await;
}

#[tokio::test]
async fn mass_key_stays_active_and_counts_every_device() {
    let server = TestServer::start(generous()).await;
    let client = server.client(None);
    let [(id, key)] = keys(&server, KeyKind::MassDeployment, 1, None)
        .await
        .try_into()
        .unwrap();
    for n in 0..5 {
        assert_eq!(
            enroll(&client, &server, &Device::numbered(n), &key)
                .await
                .status,
            StatusCode::OK
        );
    }
    assert_eq!(usage(&server, id).await, (5, "active".to_owned()));
    assert!(
        server
            .shared
            .stub
            .keys()
            .get(id, false)
            .await
            .unwrap()
            .usage_date
            .is_some()
    );
    server.stop().await;
}

#[tokio::test]
async fn inactive_and_unknown_keys_are_refused() {
    let server = TestServer::start(generous()).await;
    let client = server.client(None);
    let [(id, key)] = keys(&server, KeyKind::OneTime, 1, None)
        .await
        .try_into()
        .unwrap();
    server
        .shared
        .stub
        .keys()
        .deactivate(&[id], &Actor::cli())
        .await
        .unwrap();
    let device = Device::numbered(1);
    let inactive = enroll(&client, &server, &device, &key).await;
    assert_eq!(
        (inactive.status, inactive.code()),
        (StatusCode::FORBIDDEN, "key_inactive")
    );
    let unknown = enroll(&client, &server, &device, "12345678901234567").await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (StatusCode::FORBIDDEN, "key_unknown")
    );
    let impossible = enroll(&client, &server, &device, "tab\there").await;
    assert_eq!(impossible.code(), "key_unknown");
    // Activated again, it works.
    server
        .shared
        .stub
        .keys()
        .activate(&[id], &Actor::cli())
        .await
        .unwrap();
    assert_eq!(
        enroll(&client, &server, &device, &key).await.status,
        StatusCode::OK
    );
    assert_eq!(device_count(&server).await, 1);
    server.stop().await;
}

#[tokio::test]
async fn a_lost_answer_is_answered_again_without_counting_twice() {
    let server = TestServer::start(generous()).await;
    let client = server.client(None);
    let [(one_time, key)] = keys(&server, KeyKind::OneTime, 1, None)
        .await
        .try_into()
        .unwrap();
    let [(mass, mass_key)] = keys(&server, KeyKind::MassDeployment, 1, None)
        .await
        .try_into()
        .unwrap();
    let device = Device::numbered(7);
    let first = enroll(&client, &server, &device, &key)
        .await
        .certificate
        .unwrap();
    let retry = enroll(&client, &server, &device, &key).await;
    assert_eq!(retry.status, StatusCode::OK);
    assert_eq!(retry.certificate.unwrap(), first, "the same certificate");
    assert_eq!(usage(&server, one_time).await, (1, "used".to_owned()));

    let other = Device::numbered(8);
    let first = enroll(&client, &server, &other, &mass_key)
        .await
        .certificate
        .unwrap();
    assert_eq!(
        enroll(&client, &server, &other, &mass_key)
            .await
            .certificate
            .unwrap(),
        first
    );
    assert_eq!(
        usage(&server, mass).await.0,
        1,
        "a mass key counts a retried device once"
    );
    assert_eq!(device_count(&server).await, 2);
    server.stop().await;
}

#[tokio::test]
async fn another_key_pair_for_an_enrolled_unit_is_a_conflict_until_deleted() {
    let server = TestServer::start(generous()).await;
    let client = server.client(None);
    let [(_, mass)] = keys(&server, KeyKind::MassDeployment, 1, None)
        .await
        .try_into()
        .unwrap();
    let original = Device::new("00E0C5540B8B");
    assert_eq!(
        enroll(&client, &server, &original, &mass).await.status,
        StatusCode::OK
    );
    let clone = Device::new("00E0C5540B8B");
    let refused = enroll(&client, &server, &clone, &mass).await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::CONFLICT, "unit_id_conflict")
    );
    assert!(
        refused.problem.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("devices delete")
    );
    server
        .shared
        .stub
        .store
        .delete_device(&"00E0C5540B8B".parse().unwrap(), &Actor::cli())
        .await
        .unwrap();
    assert_eq!(
        enroll(&client, &server, &clone, &mass).await.status,
        StatusCode::OK
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_input_gets_4xx_and_changes_nothing() {
    let server = TestServer::start(generous()).await;
    let client = server.client(None);
    let [(id, key)] = keys(&server, KeyKind::OneTime, 1, None)
        .await
        .try_into()
        .unwrap();
    let device = Device::numbered(1);
    let url = server.url(routes::EST_SIMPLEENROLL);
    let post = |body: Vec<u8>| {
        client
            .post(&url)
            .basic_auth(&device.unit_id, Some(&key))
            .body(body)
    };

    // Oversized body.
    let response = post(vec![b'A'; 200_000]).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Not base64.
    let answer = read_answer(post(b"%%% not base64 %%%".to_vec()).send().await.unwrap()).await;
    assert_eq!(
        (answer.status, answer.code()),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    // A CSR whose signature does not verify.
    let mut der = onboard_protocol::est::decode_base64(device.csr_base64.as_bytes()).unwrap();
    let last = der.len() - 1;
    der[last] ^= 1;
    let answer = read_answer(
        post(onboard_protocol::est::encode_base64(&der).into_bytes())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.code(), "bad_request");
    assert!(
        answer.problem.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("signature")
    );
    // Malformed Basic headers.
    for header in ["Basic !!!", "Bearer abc", "Basic MDBFMEM1NTQwQjhC"] {
        let response = client
            .post(&url)
            .header("authorization", header)
            .body(device.csr_base64.clone())
            .send()
            .await
            .unwrap();
        let answer = read_answer(response).await;
        assert_eq!(
            (answer.status, answer.code()),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "{header}"
        );
    }
    // No authorization, and a user that is no unit ID.
    let answer = read_answer(
        client
            .post(&url)
            .body(device.csr_base64.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.code(), "bad_request");
    let answer = read_answer(
        client
            .post(&url)
            .basic_auth("admin", Some(&key))
            .body(device.csr_base64.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.code(), "bad_request");
    assert!(
        !format!("{:?}", answer.problem).contains(&key),
        "the key is never echoed"
    );

    assert_eq!(usage(&server, id).await, (0, "active".to_owned()));
    assert_eq!(device_count(&server).await, 0);
    // And the key still works.
    assert_eq!(
        enroll(&client, &server, &device, &key).await.status,
        StatusCode::OK
    );
    server.stop().await;
}

#[tokio::test]
async fn guesses_are_rate_limited_without_slowing_others() {
    let limits = Limits {
        per_source: 1_000,
        per_unit: 3,
        window: std::time::Duration::from_secs(60),
    };
    let server = TestServer::start(limits).await;
    let client = server.client(None);
    let [(_, mass)] = keys(&server, KeyKind::MassDeployment, 1, None)
        .await
        .try_into()
        .unwrap();
    let [(_, one_time)] = keys(&server, KeyKind::OneTime, 1, None)
        .await
        .try_into()
        .unwrap();
    let guesser = Device::numbered(1);
    for _ in 0..3 {
        assert_eq!(
            enroll(&client, &server, &guesser, "00000000000000000")
                .await
                .code(),
            "key_unknown"
        );
    }
    let limited = enroll(&client, &server, &guesser, "00000000000000001").await;
    assert_eq!(
        (limited.status, limited.code()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    let wait: u64 = limited.retry_after.unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // The unit ID's guesses are used up. A mass-deployment key (its value may have been typed)
    // is now refused exactly as an unknown key is: a dictionary learns nothing from it.
    let mass_refused = enroll(&client, &server, &guesser, &mass).await;
    assert_eq!(
        (mass_refused.status, mass_refused.code()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert_eq!(mass_refused.problem, limited.problem);
    // A random one-time key for it still goes through: its MAC alone cannot lock a device out.
    assert_eq!(
        enroll(&client, &server, &guesser, &one_time).await.status,
        StatusCode::OK
    );
    // Another unit ID from the same address is not slowed.
    assert_eq!(
        enroll(&client, &server, &Device::numbered(2), &mass)
            .await
            .status,
        StatusCode::OK
    );

    let by_source = TestServer::start(Limits {
        per_source: 2,
        per_unit: 1_000,
        window: std::time::Duration::from_secs(60),
    })
    .await;
    let client = by_source.client(None);
    for n in 0..2 {
        enroll(
            &client,
            &by_source,
            &Device::numbered(n),
            "00000000000000000",
        )
        .await;
    }
    assert_eq!(
        enroll(&client, &by_source, &Device::numbered(9), "1")
            .await
            .code(),
        "rate_limited"
    );
    server.stop().await;
    by_source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_devices_racing_for_one_one_time_key_get_one_certificate() {
    let server = std::sync::Arc::new(TestServer::start(generous()).await);
    let [(id, key)] = keys(&server, KeyKind::OneTime, 1, None)
        .await
        .try_into()
        .unwrap();
    let devices: Vec<Device> = (0..200).map(Device::numbered).collect();
    let mut tasks = Vec::new();
    for device in devices {
        let server = server.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            // A client each: a new TLS connection per device, as on a real fleet.
            let client = server.client(None);
            enroll(&client, &server, &device, &key).await
        }));
    }
    let mut issued = 0;
    let mut codes = HashSet::new();
    for task in tasks {
        let answer = task.await.unwrap();
        if answer.status == StatusCode::OK {
            issued += 1;
        } else {
            codes.insert(answer.code().to_owned());
        }
    }
    assert_eq!(issued, 1, "exactly one certificate");
    assert_eq!(codes, HashSet::from(["key_used".to_owned()]));
    assert_eq!(usage(&server, id).await, (1, "used".to_owned()));
    assert_eq!(device_count(&server).await, 1);
}

#[tokio::test]
async fn renewal_needs_the_current_certificate_over_mutual_tls() {
    let server = TestServer::start(generous()).await;
    let [(_, mass)] = keys(&server, KeyKind::MassDeployment, 1, None)
        .await
        .try_into()
        .unwrap();
    let device = Device::numbered(3);
    let first = enroll(&server.client(None), &server, &device, &mass)
        .await
        .certificate
        .unwrap();

    let renew = |client: reqwest::Client, csr: String| {
        let url = server.url(routes::EST_SIMPLEREENROLL);
        async move { read_answer(client.post(url).body(csr).send().await.unwrap()).await }
    };
    let without = renew(server.client(None), device.csr_base64.clone()).await;
    assert_eq!(
        (without.status, without.code()),
        (StatusCode::BAD_REQUEST, "bad_request")
    );

    let next = Device::new(&device.unit_id);
    let renewed = renew(
        server.client(Some((&first, &device.key))),
        next.csr_base64.clone(),
    )
    .await;
    assert_eq!(renewed.status, StatusCode::OK);
    let second = renewed.certificate.unwrap();
    assert_ne!(second, first);
    let (_, cert) = x509_parser::parse_x509_certificate(&second).unwrap();
    assert_eq!(
        cert.public_key().raw,
        next.key.subject_public_key_info().as_slice()
    );
    let record = server.devices().await.pop().unwrap();
    assert_eq!(record.certificate, second);

    // Until the new certificate is seen, the one before it still renews: asked again with the
    // key it already certified (the answer was lost), it answers the same certificate.
    let again = renew(
        server.client(Some((&first, &device.key))),
        next.csr_base64.clone(),
    )
    .await;
    assert_eq!(again.certificate.unwrap(), second);
    // Once the new certificate is used (here for the next renewal), the one before it is done.
    let after = Device::new(&device.unit_id);
    let third = renew(
        server.client(Some((&second, &next.key))),
        after.csr_base64.clone(),
    )
    .await
    .certificate
    .unwrap();
    assert_ne!(third, second);
    let stale = renew(
        server.client(Some((&first, &device.key))),
        next.csr_base64.clone(),
    )
    .await;
    assert_eq!(
        (stale.status, stale.code()),
        (StatusCode::FORBIDDEN, "certificate_not_current")
    );
    server.stop().await;
}

#[tokio::test]
async fn every_attempt_is_audited_without_the_key() {
    let server = TestServer::start(generous()).await;
    let client = server.client(None);
    let [(id, key)] = keys(&server, KeyKind::OneTime, 1, None)
        .await
        .try_into()
        .unwrap();
    enroll(&client, &server, &Device::numbered(1), &key).await;
    enroll(&client, &server, &Device::numbered(2), &key).await;
    enroll(&client, &server, &Device::numbered(3), "99999999999999999").await;
    client
        .post(server.url(routes::EST_SIMPLEENROLL))
        .basic_auth("00E0C5000004", Some(&key))
        .body("###")
        .send()
        .await
        .unwrap();
    let log = server.audit().await;
    let enrolls: Vec<(Option<String>, Option<i64>, &str)> = log
        .iter()
        .filter(|e| e.event == "enroll")
        .map(|e| (e.unit_id.clone(), e.key_id, e.outcome.as_str()))
        .collect();
    assert_eq!(
        enrolls,
        [
            (Some("00E0C5000001".into()), Some(id), "ok"),
            (Some("00E0C5000002".into()), Some(id), "key_used"),
            (Some("00E0C5000003".into()), None, "key_unknown"),
            (Some("00E0C5000004".into()), None, "bad_request"),
        ]
    );
    assert!(log.iter().all(
        |e| (e.source == "127.0.0.1" && e.actor == e.unit_id.clone().unwrap())
            || (e.source == "local" && e.actor == "cli")
    ));
    let text = format!("{log:?}");
    assert!(!text.contains(&key), "the audit log never holds a key");
    server.stop().await;
}

#[tokio::test]
async fn an_enrolled_device_presenting_another_key_still_needs_a_good_one() {
    let server = TestServer::start(generous()).await;
    let client = server.client(None);
    let [(_, first_key)] = keys(&server, KeyKind::OneTime, 1, None)
        .await
        .try_into()
        .unwrap();
    let [(inactive, inactive_key)] = keys(&server, KeyKind::OneTime, 1, None)
        .await
        .try_into()
        .unwrap();
    let [(mass, mass_key)] = keys(&server, KeyKind::MassDeployment, 1, None)
        .await
        .try_into()
        .unwrap();
    server
        .shared
        .stub
        .keys()
        .deactivate(&[inactive], &Actor::cli())
        .await
        .unwrap();
    let device = Device::numbered(5);
    let certificate = enroll(&client, &server, &device, &first_key)
        .await
        .certificate
        .unwrap();
    // Its own key after it was deactivated: the answer it lost, nothing counted.
    server
        .shared
        .stub
        .keys()
        .deactivate(&[keys_of(&server).await[0]], &Actor::cli())
        .await
        .unwrap();
    assert_eq!(
        enroll(&client, &server, &device, &first_key)
            .await
            .certificate
            .unwrap(),
        certificate
    );
    // Another key must pass the checks: a deactivated one is refused...
    let refused = enroll(&client, &server, &device, &inactive_key).await;
    assert_eq!(refused.code(), "key_inactive");
    assert_eq!(
        enroll(&client, &server, &device, "11111111111111111")
            .await
            .code(),
        "key_unknown"
    );
    // ...a good one gets the stored certificate and is not counted.
    assert_eq!(
        enroll(&client, &server, &device, &mass_key)
            .await
            .certificate
            .unwrap(),
        certificate
    );
    assert_eq!(usage(&server, mass).await.0, 0);
    server.stop().await;
}

async fn keys_of(server: &TestServer) -> Vec<i64> {
    server
        .shared
        .stub
        .keys()
        .list(&KeyFilter::default(), &PageRequest::all(), false)
        .await
        .unwrap()
        .items
        .iter()
        .map(|k| k.id)
        .collect()
}

#[tokio::test]
async fn the_server_renews_its_tls_certificate_while_running() {
    // A leaf of 3 s, replaced when 2 s are left, checked every 100 ms.
    let server = TestServer::start_with(|settings| {
        settings.tls_leaf = ums_stub::tls::LeafPolicy {
            lifetime: time::Duration::seconds(3),
            renew_before: time::Duration::seconds(2),
            check_every: std::time::Duration::from_millis(100),
        };
    })
    .await;
    let first = server.running().tls_leaf().certificate_der();
    let first_expiry = server.running().tls_leaf().not_after();
    let cacerts = || async {
        // A new client each time: a new handshake, judged on the real clock.
        server
            .client(None)
            .get(server.url(routes::EST_CACERTS))
            .send()
            .await
            .map(|response| response.status())
    };
    assert_eq!(cacerts().await.unwrap(), StatusCode::OK);
    // Past the first leaf's expiry the server still completes handshakes: it serves another.
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    assert!(time::OffsetDateTime::now_utc() > first_expiry);
    assert_eq!(cacerts().await.unwrap(), StatusCode::OK);
    assert_ne!(server.running().tls_leaf().certificate_der(), first);
    assert!(server.running().tls_leaf().not_after() > time::OffsetDateTime::now_utc());
    server.stop().await;
}

#[tokio::test]
async fn serve_deletes_audit_lines_past_their_retention() {
    let day = 86_400;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let server = TestServer::start_with(|settings| {
        // A log written by earlier runs: lines 200 and 10 days old (the default keeps 180 days).
        std::fs::create_dir_all(&settings.data_dir).unwrap();
        drop(ums_stub::store::SqliteStore::open(&settings.database_file()).unwrap());
        let connection = rusqlite::Connection::open(settings.database_file()).unwrap();
        for (age, detail) in [(200, "old"), (10, "recent")] {
            connection
                .execute(
                    "INSERT INTO audit (at, event, actor, source, outcome, detail)
                     VALUES (?1, 'keys.create', 'cli', 'local', 'ok', ?2)",
                    rusqlite::params![now - age * day, detail],
                )
                .unwrap();
        }
    })
    .await;
    let mut details = Vec::new();
    for _ in 0..100 {
        details = server
            .audit()
            .await
            .into_iter()
            .map(|entry| entry.detail)
            .collect();
        if details == ["recent"] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        details,
        ["recent"],
        "the old line is gone, the recent one kept"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_expired_certificate_renews_within_the_grace_period_and_past_it_a_key_is_needed() {
    // Certificates of 2 s; the default grace (a year).
    let server = TestServer::start_with(|settings| {
        settings.rate_limits = generous();
        settings.certificate_lifetime = time::Duration::seconds(2);
    })
    .await;
    let [(_, mass)] = keys(&server, KeyKind::MassDeployment, 1, None)
        .await
        .try_into()
        .unwrap();
    let device = Device::numbered(20);
    let first = enroll(&server.client(None), &server, &device, &mass)
        .await
        .certificate
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    // Expired: TLS still takes it, for renewal only.
    let report = server
        .client(Some((&first, &device.key)))
        .put(server.url(routes::DEVICE_INVENTORY))
        .header("content-type", routes::CONTENT_TYPE_JSON)
        .body("{}")
        .send()
        .await
        .unwrap();
    let report = read_answer(report).await;
    assert_eq!(report.code(), "bad_request");
    assert!(
        report.problem.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("expired"),
    );
    let renewed = server
        .client(Some((&first, &device.key)))
        .post(server.url(routes::EST_SIMPLEREENROLL))
        .body(device.csr_base64.clone())
        .send()
        .await
        .unwrap();
    let renewed = read_answer(renewed).await;
    assert_eq!(renewed.status, StatusCode::OK, "{:?}", renewed.problem);
    assert_ne!(renewed.certificate.unwrap(), first);
    server.stop().await;

    // A grace of 1 s: a certificate 2 s past expiry has lapsed.
    let server = TestServer::start_with(|settings| {
        settings.rate_limits = generous();
        settings.certificate_lifetime = time::Duration::seconds(2);
        settings.renewal_grace = time::Duration::seconds(1);
    })
    .await;
    let [(one_time, key)] = keys(&server, KeyKind::OneTime, 1, None)
        .await
        .try_into()
        .unwrap();
    let [(_, fresh)] = keys(&server, KeyKind::OneTime, 1, None)
        .await
        .try_into()
        .unwrap();
    let device = Device::numbered(21);
    let first = enroll(&server.client(None), &server, &device, &key)
        .await
        .certificate
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(4100)).await;
    // The handshake refuses the lapsed certificate: nothing renews with it.
    let refused = server
        .client(Some((&first, &device.key)))
        .post(server.url(routes::EST_SIMPLEREENROLL))
        .body(device.csr_base64.clone())
        .send()
        .await;
    assert!(refused.is_err(), "the handshake took a lapsed certificate");
    // The key it enrolled with is used up; a fresh key enrolls it again, same key pair, and the
    // lapsed record is replaced.
    let used = enroll(&server.client(None), &server, &device, &key).await;
    assert_eq!(used.code(), "key_used");
    let again = enroll(&server.client(None), &server, &device, &fresh).await;
    assert_eq!(again.status, StatusCode::OK, "{:?}", again.problem);
    assert_ne!(again.certificate.unwrap(), first);
    let devices = server.devices().await;
    assert_eq!(devices.len(), 1);
    assert_eq!(usage(&server, one_time).await.0, 1);
    server.stop().await;
}

/// One one-time key with this lifetime and folder.
fn one_time(
    expires_at: Option<OffsetDateTime>,
    not_before: Option<OffsetDateTime>,
    folder: Option<&str>,
) -> CreateKeys {
    CreateKeys::OneTime {
        quantity: 1,
        comment: String::new(),
        expires_at,
        not_before,
        folder: folder.map(|path| path.parse().unwrap()),
    }
}

#[tokio::test]
async fn expired_not_yet_valid_and_exhausted_keys_are_refused_with_their_codes() {
    let server = TestServer::start(generous()).await;
    let client = server.client(None);
    let now = OffsetDateTime::now_utc();
    let hour = time::Duration::HOUR;
    let [(expired, expired_key)] = keys_as(&server, one_time(Some(now - hour), None, None))
        .await
        .try_into()
        .unwrap();
    let [(early, early_key)] = keys_as(&server, one_time(None, Some(now + hour), None))
        .await
        .try_into()
        .unwrap();
    let [(limited, limited_key)] = keys_as(
        &server,
        CreateKeys::Mass {
            password: None,
            comment: String::new(),
            expires_at: Some(now + hour),
            not_before: Some(now - hour),
            folder: None,
            usage_limit: Some(2),
        },
    )
    .await
    .try_into()
    .unwrap();
    assert_eq!(usage(&server, expired).await, (0, "expired".to_owned()));
    assert_eq!(usage(&server, early).await, (0, "not_yet_valid".to_owned()));
    assert_eq!(usage(&server, limited).await, (0, "active".to_owned()));

    for (key, code) in [
        (&expired_key, "key_expired"),
        (&early_key, "key_not_yet_valid"),
    ] {
        let refused = enroll(&client, &server, &Device::new("00E0C5540B8B"), key).await;
        assert_eq!(
            (refused.status, refused.code()),
            (StatusCode::FORBIDDEN, code)
        );
    }
    for n in 0..2 {
        let enrolled = enroll(&client, &server, &Device::numbered(n), &limited_key).await;
        assert_eq!(enrolled.status, StatusCode::OK);
    }
    let refused = enroll(&client, &server, &Device::numbered(2), &limited_key).await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::FORBIDDEN, "key_exhausted")
    );
    assert_eq!(usage(&server, limited).await, (2, "exhausted".to_owned()));
    assert_eq!(usage(&server, expired).await, (0, "expired".to_owned()));
    assert_eq!(device_count(&server).await, 2);
    let outcomes: HashSet<String> = server
        .audit()
        .await
        .into_iter()
        .filter(|entry| entry.event == "enroll")
        .map(|entry| entry.outcome)
        .collect();
    for code in ["key_expired", "key_not_yet_valid", "key_exhausted", "ok"] {
        assert!(outcomes.contains(code), "{code} in {outcomes:?}");
    }

    // An edit lifts each bound: the keys enroll again.
    let admin = server.shared.stub.keys();
    let lifetime = EditKey {
        expires_at: Some(None),
        not_before: Some(None),
        ..EditKey::default()
    };
    let limit = EditKey {
        usage_limit: Some(Some(3)),
        ..EditKey::default()
    };
    for (id, edit) in [(expired, &lifetime), (early, &lifetime), (limited, &limit)] {
        admin.edit(id, edit, &Actor::cli()).await.unwrap();
    }
    // A usage limit is for mass-deployment keys only.
    let refused = admin
        .edit(expired, &limit, &Actor::cli())
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .starts_with("usage_limit: only mass-deployment keys"),
        "{refused}"
    );
    for (n, key) in [(10, &expired_key), (11, &early_key), (12, &limited_key)] {
        let enrolled = enroll(&client, &server, &Device::numbered(n), key).await;
        assert_eq!(enrolled.status, StatusCode::OK, "{}", enrolled.code());
    }
    assert_eq!(usage(&server, limited).await, (3, "exhausted".to_owned()));
    server.stop().await;
}

#[tokio::test]
async fn a_device_lands_in_its_key_s_folder_and_stays_there() {
    let server = TestServer::start(generous()).await;
    let client = server.client(None);
    let [(id, key)] = keys_as(
        &server,
        CreateKeys::Mass {
            password: None,
            comment: String::new(),
            expires_at: None,
            not_before: None,
            folder: Some("/Sites/Berlin".parse().unwrap()),
            usage_limit: None,
        },
    )
    .await
    .try_into()
    .unwrap();
    let [(_, plain)] = keys_as(&server, one_time(None, None, None))
        .await
        .try_into()
        .unwrap();
    assert_eq!(
        enroll(&client, &server, &Device::numbered(1), &key)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        enroll(&client, &server, &Device::numbered(2), &plain)
            .await
            .status,
        StatusCode::OK
    );
    let admin = server.shared.stub.keys();
    admin
        .edit(
            id,
            &EditKey {
                folder: Some(Some("/Sites/Hamburg".parse().unwrap())),
                ..EditKey::default()
            },
            &Actor::cli(),
        )
        .await
        .unwrap();
    assert_eq!(
        enroll(&client, &server, &Device::numbered(3), &key)
            .await
            .status,
        StatusCode::OK
    );
    admin.delete(&[id], &Actor::cli()).await.unwrap();
    let folders: Vec<(String, Option<String>)> = server
        .devices()
        .await
        .into_iter()
        .map(|device| {
            (
                device.unit_id.to_string(),
                device.folder.map(|folder| folder.to_string()),
            )
        })
        .collect();
    let numbered = |n| Device::numbered(n).unit_id.to_string();
    assert_eq!(
        folders,
        [
            (numbered(1), Some("/Sites/Berlin".to_owned())),
            (numbered(2), None),
            (numbered(3), Some("/Sites/Hamburg".to_owned())),
        ]
    );
    let devices = server.shared.stub.devices();
    let under = |folder: &str| {
        let devices = devices.clone();
        let filter = ums_stub::store::DeviceFilter {
            folder: Some(folder.parse().unwrap()),
        };
        async move {
            devices
                .list(&filter, &PageRequest::all())
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|device| device.unit_id.to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(under("/Sites").await, [numbered(1), numbered(3)]);
    assert_eq!(under("/Sites/Berlin").await, [numbered(1)]);
    assert!(under("/Site").await.is_empty());
    assert!(under("/Sites/Berlin/Floor 2").await.is_empty());
    server.stop().await;
}
