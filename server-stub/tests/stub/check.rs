//! The key check (`POST /device/v1/check-keys`) from outside, as a device or a guesser would use
//! it: every code enrollment answers, nothing consumed, one guess budget shared with enrollment,
//! the same refusal once it is spent, an audit line with key IDs only.

use onboard_protocol::alternates::{ALTERNATE_KEYS_HEADER, encode_alternates};
use onboard_protocol::{FirstAuthKey, KeyKind, routes};
use reqwest::StatusCode;
use serde_json::Value;
use ums_stub::rate_limit::Limits;
use ums_stub::store::Actor;

use crate::server::{Device, TestServer, enroll, generous, keys};

fn one(keys: Vec<(i64, String)>) -> (i64, String) {
    let [key] = keys.try_into().unwrap();
    key
}

/// (usage count, status) of key `id`.
async fn usage(server: &TestServer, id: i64) -> (u64, String) {
    let view = server.shared.stub.keys().get(id, false).await.unwrap();
    (view.usage_count, view.status.as_str().to_owned())
}

/// What a check answered.
pub(crate) struct Checked {
    pub(crate) status: StatusCode,
    pub(crate) body: Value,
    pub(crate) retry_after: Option<u64>,
}

impl Checked {
    /// Per key in the request's order: `accepted`, `enrolled` (accepted as a repeat) or the code.
    fn results(&self) -> Vec<String> {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        self.body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(place, key)| {
                assert_eq!(key["place"], place, "{}", self.body);
                if key["accepted"] == true {
                    if key["enrolled"] == true {
                        "enrolled".to_owned()
                    } else {
                        "accepted".to_owned()
                    }
                } else {
                    key["code"].as_str().unwrap().to_owned()
                }
            })
            .collect()
    }

    pub(crate) fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
}

/// Checks `keys` for `unit_id` (the first in HTTP Basic, the others as alternates), with the
/// certificate request `csr` as the body when given.
pub(crate) async fn check(
    client: &reqwest::Client,
    server: &TestServer,
    unit_id: &str,
    keys: &[&str],
    csr: Option<&str>,
) -> Checked {
    let (first, rest) = keys.split_first().unwrap();
    let mut request = client
        .post(server.url(routes::DEVICE_CHECK_KEYS))
        .basic_auth(unit_id, Some(first));
    if !rest.is_empty() {
        let alternates: Vec<FirstAuthKey> = rest
            .iter()
            .map(|key| FirstAuthKey::new(*key).unwrap())
            .collect();
        request = request.header(ALTERNATE_KEYS_HEADER, encode_alternates(&alternates));
    }
    if let Some(csr) = csr {
        request = request.body(csr.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().parse().unwrap());
    let text = response.text().await.unwrap();
    Checked {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        retry_after,
    }
}

const UNIT: &str = "00E0C5540B8B";
const OTHER_UNIT: &str = "00E0C5540B8C";
const UNKNOWN: &str = "00000000000000000";

#[tokio::test]
async fn each_key_gets_the_answer_its_enrollment_would_get() {
    let server = TestServer::start(generous()).await;
    let client = server.client(None);
    let (_, good) = one(keys(&server, KeyKind::OneTime, 1, None).await);
    let (_, used) = one(keys(&server, KeyKind::OneTime, 1, None).await);
    let (inactive_id, inactive) = one(keys(&server, KeyKind::OneTime, 1, None).await);
    let (_, bound_elsewhere) = one(keys(&server, KeyKind::DeviceBound, 1, Some(OTHER_UNIT)).await);
    let (_, bound_here) = one(keys(&server, KeyKind::DeviceBound, 1, Some(UNIT)).await);
    let (_, mass) = one(keys(&server, KeyKind::MassDeployment, 1, None).await);
    assert_eq!(
        enroll(&client, &server, &Device::numbered(1), &used)
            .await
            .status,
        StatusCode::OK
    );
    server
        .shared
        .stub
        .keys()
        .deactivate(&[inactive_id], &Actor::cli())
        .await
        .unwrap();
    let presented = [
        good.as_str(),
        &used,
        &inactive,
        &bound_elsewhere,
        UNKNOWN,
        &bound_here,
        &mass,
    ];
    let expected = [
        "accepted",
        "key_used",
        "key_inactive",
        "key_bound_to_other_device",
        "key_unknown",
        "accepted",
        "accepted",
    ];
    let answer = check(&client, &server, UNIT, &presented, None).await;
    assert_eq!(answer.results(), expected);
    assert_eq!(answer.body["unit_id"], UNIT);
    // Each alone, the same.
    for (key, expected) in presented.iter().zip(expected) {
        let alone = check(&client, &server, UNIT, &[key], None).await;
        assert_eq!(alone.results(), [expected], "{key}");
    }
    // Enrollment agrees, key by key (the refused ones first: they change nothing).
    let device = Device::new(UNIT);
    for (key, expected) in presented.iter().zip(expected) {
        if expected != "accepted" {
            assert_eq!(
                enroll(&client, &server, &device, key).await.code(),
                expected
            );
        }
    }
    assert_eq!(
        enroll(&client, &server, &device, &good).await.status,
        StatusCode::OK
    );

    // Now UNIT is enrolled with `device`'s key pair. For a new key pair every real key is a
    // conflict, as its enrollment would be; an unknown key still learns nothing of the device.
    let (_, fresh) = one(keys(&server, KeyKind::OneTime, 1, None).await);
    let answer = check(&client, &server, UNIT, &[&fresh, UNKNOWN, &mass], None).await;
    assert_eq!(
        answer.results(),
        ["unit_id_conflict", "key_unknown", "unit_id_conflict"]
    );
    assert_eq!(
        enroll(&client, &server, &Device::new(UNIT), &fresh)
            .await
            .code(),
        "unit_id_conflict"
    );
    // With a request of the enrolled key pair: its own key is a repeat, another good key too
    // (consuming nothing), as enrollment answers them.
    let answer = check(
        &client,
        &server,
        UNIT,
        &[&good, &fresh, &used, UNKNOWN],
        Some(&device.csr_base64),
    )
    .await;
    assert_eq!(
        answer.results(),
        ["enrolled", "enrolled", "key_used", "key_unknown"]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_check_consumes_nothing_and_is_audited_by_key_id() {
    let server = TestServer::start(generous()).await;
    let client = server.client(None);
    let (one_time_id, one_time) = one(keys(&server, KeyKind::OneTime, 1, None).await);
    let (mass_id, mass) = one(keys(&server, KeyKind::MassDeployment, 1, None).await);
    let (bound_id, bound) = one(keys(&server, KeyKind::DeviceBound, 1, Some(UNIT)).await);
    let before_audit = server.audit().await.len();
    for n in 0..5 {
        let answer = check(
            &client,
            &server,
            &format!("00E0C5{n:06X}"),
            &[&one_time, &mass],
            None,
        )
        .await;
        assert_eq!(answer.results(), ["accepted", "accepted"]);
        let answer = check(&client, &server, UNIT, &[&bound], None).await;
        assert_eq!(answer.results(), ["accepted"]);
    }
    assert_eq!(usage(&server, one_time_id).await, (0, "active".to_owned()));
    assert_eq!(usage(&server, mass_id).await, (0, "active".to_owned()));
    assert_eq!(usage(&server, bound_id).await, (0, "active".to_owned()));
    assert!(server.devices().await.is_empty(), "no device recorded");

    // One audit line a check, naming keys by ID, never a value.
    let audit = server.audit().await;
    let checks: Vec<_> = audit[before_audit..]
        .iter()
        .filter(|line| line.event == "check")
        .collect();
    assert_eq!(checks.len(), 10, "{audit:#?}");
    assert_eq!(audit.len() - before_audit, 10, "nothing else written");
    let line = &checks[0];
    assert_eq!(line.outcome, "accepted");
    assert!(
        line.detail.contains(&format!("key {one_time_id} accepted"))
            && line.detail.contains(&format!("key {mass_id} accepted")),
        "{}",
        line.detail
    );
    let bound_line = &checks[1];
    assert_eq!(bound_line.key_id, Some(bound_id));
    assert_eq!(bound_line.unit_id.as_deref(), Some(UNIT));
    for line in &audit {
        for value in [&one_time, &mass, &bound] {
            assert!(!line.detail.contains(value.as_str()), "{line:?}");
        }
    }

    // The keys checked still work, exactly once for the one-time key.
    assert_eq!(
        enroll(&client, &server, &Device::numbered(1), &one_time)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        enroll(&client, &server, &Device::numbered(2), &one_time)
            .await
            .code(),
        "key_used"
    );
    assert_eq!(
        enroll(&client, &server, &Device::new(UNIT), &bound)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(usage(&server, one_time_id).await, (1, "used".to_owned()));
    assert_eq!(
        check(
            &client,
            &server,
            &Device::numbered(3).unit_id,
            &[&one_time],
            None
        )
        .await
        .results(),
        ["key_used"]
    );
    server.stop().await;
}

#[tokio::test]
async fn unknown_keys_in_checks_spend_the_enrollment_budget_and_enrollments_spend_the_checks() {
    let limits = Limits {
        per_source: 1_000,
        per_unit: 3,
        window: std::time::Duration::from_secs(60),
    };
    // Checks first, then enrollment.
    let server = TestServer::start(limits).await;
    let client = server.client(None);
    let (_, mass) = one(keys(&server, KeyKind::MassDeployment, 1, None).await);
    let (one_time_id, one_time) = one(keys(&server, KeyKind::OneTime, 1, None).await);
    // Two unknown keys in one check are two guesses; one more makes three.
    let answer = check(
        &client,
        &server,
        UNIT,
        &[UNKNOWN, "00000000000000001"],
        None,
    )
    .await;
    assert_eq!(answer.results(), ["key_unknown", "key_unknown"]);
    let answer = check(&client, &server, UNIT, &["00000000000000002"], None).await;
    assert_eq!(answer.results(), ["key_unknown"]);
    // Spent: a check is refused as an enrollment is, 429 with Retry-After, whatever its keys.
    let limited_check = check(&client, &server, UNIT, &["00000000000000003"], None).await;
    assert_eq!(
        (limited_check.status, limited_check.code()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    let wait = limited_check.retry_after.unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let device = Device::new(UNIT);
    let limited_enroll = enroll(&client, &server, &device, "00000000000000004").await;
    assert_eq!(
        (limited_enroll.status, limited_enroll.code()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert_eq!(
        limited_enroll.problem.as_ref(),
        Some(&limited_check.body),
        "the same refusal on both routes"
    );
    let enroll_wait: u64 = limited_enroll.retry_after.unwrap().parse().unwrap();
    assert!(enroll_wait.abs_diff(wait) <= 1, "{enroll_wait} {wait}");
    // A mass key (its value may have been typed) is refused alike on both; a random one-time key
    // still goes through on both, and the check still consumes nothing.
    let mass_check = check(&client, &server, UNIT, &[&mass], None).await;
    assert_eq!(
        (mass_check.status, mass_check.code()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert_eq!(mass_check.body, limited_check.body);
    let answer = check(&client, &server, UNIT, &[&one_time, UNKNOWN], None).await;
    assert_eq!(answer.results(), ["accepted", "rate_limited"]);
    assert_eq!(usage(&server, one_time_id).await, (0, "active".to_owned()));
    assert_eq!(
        enroll(&client, &server, &device, &one_time).await.status,
        StatusCode::OK
    );
    // Another unit ID from the same address is not held up.
    let answer = check(&client, &server, OTHER_UNIT, &[&mass], None).await;
    assert_eq!(answer.results(), ["accepted"]);
    server.stop().await;

    // Enrollments first, then the check.
    let server = TestServer::start(limits).await;
    let client = server.client(None);
    let (_, mass) = one(keys(&server, KeyKind::MassDeployment, 1, None).await);
    let device = Device::new(UNIT);
    for n in 0..3 {
        let guess = format!("1000000000000000{n}");
        assert_eq!(
            enroll(&client, &server, &device, &guess).await.code(),
            "key_unknown"
        );
    }
    let limited_check = check(&client, &server, UNIT, &[&mass], None).await;
    assert_eq!(
        (limited_check.status, limited_check.code()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert!(limited_check.retry_after.is_some());
    server.stop().await;

    // Per source: a check of many unknown keys counts each.
    let server = TestServer::start(Limits {
        per_source: 8,
        per_unit: 1_000,
        window: std::time::Duration::from_secs(60),
    })
    .await;
    let client = server.client(None);
    let guesses: Vec<String> = (0..8).map(|n| format!("2000000000000000{n}")).collect();
    let guesses: Vec<&str> = guesses.iter().map(String::as_str).collect();
    assert_eq!(
        check(&client, &server, UNIT, &guesses, None)
            .await
            .results(),
        vec!["key_unknown"; 8]
    );
    let limited_enroll = enroll(&client, &server, &Device::new(OTHER_UNIT), UNKNOWN).await;
    assert_eq!(limited_enroll.code(), "rate_limited");
    server.stop().await;
}

#[tokio::test]
async fn malformed_checks_are_refused_as_enrollments_are() {
    let server = TestServer::start(generous()).await;
    let client = server.client(None);
    // No credentials.
    let response = client
        .post(server.url(routes::DEVICE_CHECK_KEYS))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "bad_request");
    // A body that is not a certificate request.
    let answer = check(&client, &server, UNIT, &[UNKNOWN], Some("not a CSR")).await;
    assert_eq!(
        (answer.status, answer.code()),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    // Too many alternates.
    let nine: Vec<String> = (0..9).map(|n| format!("3000000000000000{n}")).collect();
    let nine: Vec<&str> = nine.iter().map(String::as_str).collect();
    let answer = check(&client, &server, UNIT, &nine, None).await;
    assert_eq!(
        (answer.status, answer.code()),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    // Only POST.
    let response = client
        .get(server.url(routes::DEVICE_CHECK_KEYS))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    server.stop().await;
}
