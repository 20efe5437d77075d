//! Guess limits with the defaults an administrator gets: only guesses count, a real key always goes
//! through, one guessing address does not slow another, and gateways are seen through.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use onboard_protocol::routes;
use reqwest::StatusCode;
use ums_stub::rate_limit::Limits;
use ums_stub::store::Actor;

use crate::server::{Answer, Device, TestServer, read_answer};

/// Creates `count` one-time keys; their values.
async fn one_time_keys(server: &TestServer, count: usize) -> Vec<String> {
    let admin = server.shared.stub.keys();
    let ids = admin
        .create_one_time(count, "", Box::new(|_| {}), &Actor::cli())
        .await
        .unwrap();
    let mut values = Vec::with_capacity(count);
    for id in ids {
        values.push(admin.get(id, true).await.unwrap().key);
    }
    values
}

/// Enrolls `device` with `key` through `client`, by the server's IPv4 address, with extra headers.
async fn enroll_at(
    client: &reqwest::Client,
    server: &TestServer,
    device: &Device,
    key: &str,
    forwarded_for: Option<&str>,
) -> Answer {
    let mut request = client
        .post(server.ip_url(routes::EST_SIMPLEENROLL))
        .basic_auth(&device.unit_id, Some(key))
        .header("content-type", "application/pkcs10")
        .body(device.csr_base64.clone());
    if let Some(address) = forwarded_for {
        request = request.header("x-forwarded-for", address);
    }
    read_answer(request.send().await.unwrap()).await
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, last))
}

#[tokio::test]
async fn refusals_of_real_keys_never_count_as_guesses() {
    let defaults = Limits::default();
    let server = TestServer::start(defaults).await;
    let client = server.client_from(loopback(1));
    // Far more key_used refusals from one address and one unit ID than either budget: devices
    // sharing a stick meet them all the time.
    let keys = one_time_keys(&server, 60).await;
    for (n, key) in keys.iter().enumerate().take(50) {
        let answer = enroll_at(&client, &server, &Device::numbered(n), key, None).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let latecomer = Device::numbered(999);
    for key in keys.iter().take(50) {
        let answer = enroll_at(&client, &server, &latecomer, key, None).await;
        assert_eq!(answer.code(), "key_used");
    }
    assert!(50 > defaults.per_source && 50 > defaults.per_unit);
    // None of them counted: a guess from the same address and unit ID is still answered plainly.
    let answer = enroll_at(&client, &server, &latecomer, "12345678901234567", None).await;
    assert_eq!(answer.code(), "key_unknown");
    let answer = enroll_at(&client, &server, &latecomer, &keys[50], None).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.problem);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_random_keys_from_one_address_are_refused_while_another_enrolls() {
    const GUESSES: usize = 10_000;
    const AT_ONCE: usize = 16;
    let server = std::sync::Arc::new(TestServer::start(Limits::default()).await);
    let [key]: [String; 1] = one_time_keys(&server, 1).await.try_into().unwrap();
    // 16 guessers on 127.0.0.2, each sending its share of 10,000 random keys one after another.
    let guesser = server.client_from(loopback(2));
    let mut flood = tokio::task::JoinSet::new();
    for lane in 0..AT_ONCE {
        let (guesser, server) = (guesser.clone(), server.clone());
        flood.spawn(async move {
            let mut answers = Vec::new();
            for n in (lane..GUESSES).step_by(AT_ONCE) {
                // A unit ID of its own each time, so the address's budget is the one that holds.
                let device = Device::numbered(100_000 + n);
                let key = format!("{:017}", 10_000_000_000 + n as u64);
                let answer = enroll_at(&guesser, &server, &device, &key, None).await;
                answers.push((Instant::now(), answer.code().to_owned()));
            }
            answers
        });
    }
    // Meanwhile a device on 127.0.0.1 enrolls at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let device = Device::numbered(1);
    let answer = enroll_at(
        &server.client_from(loopback(1)),
        &server,
        &device,
        &key,
        None,
    )
    .await;
    let took = started.elapsed();
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.problem);
    assert!(took < Duration::from_secs(1), "took {took:?}");

    let mut answers = Vec::new();
    while let Some(lane) = flood.join_next().await {
        answers.extend(lane.unwrap());
    }
    answers.sort_by_key(|(at, _)| *at);
    let count = |code: &str| answers.iter().filter(|(_, c)| c == code).count();
    let budget = Limits::default().per_source as usize;
    // Each guess reserves its place in the budget before it is looked up: however many are in
    // flight together, exactly the budget is tested.
    let unknown = count("key_unknown");
    assert_eq!(unknown, budget);
    assert_eq!(count("rate_limited"), GUESSES - unknown);
    // 429 soon: every answer after the first few dozen is a 429.
    let first_limited = answers
        .iter()
        .position(|(_, code)| code == "rate_limited")
        .unwrap();
    assert!(first_limited <= budget + AT_ONCE, "{first_limited}");
    // The limited guesses wrote one line between them: the audit log holds the budget's
    // refusals, one line saying the address used up its guesses, and the enrollment.
    let enrolls: Vec<_> = server
        .audit()
        .await
        .into_iter()
        .filter(|entry| entry.event == "enroll")
        .collect();
    assert_eq!(enrolls.len(), unknown + 2);
    let limited: Vec<_> = enrolls
        .iter()
        .filter(|entry| entry.outcome == "rate_limited")
        .collect();
    assert_eq!(limited.len(), 1, "{limited:?}");
    assert_eq!(limited[0].source, "127.0.0.2");
}

#[tokio::test]
async fn a_real_key_goes_through_an_address_whose_guesses_are_used_up() {
    let server = TestServer::start(Limits::default()).await;
    let keys = one_time_keys(&server, 1).await;
    let client = server.client_from(loopback(3));
    // Someone behind the same address (a site's NAT) sends junk until it is limited.
    for n in 0.. {
        let stranger = Device::numbered(1_000 + n);
        let answer = enroll_at(&client, &server, &stranger, "99999999999999999", None).await;
        if answer.code() == "rate_limited" {
            break;
        }
        assert_eq!(answer.code(), "key_unknown");
    }
    // A device behind it with a real key enrolls; its guesses would be limited.
    let device = Device::numbered(51);
    let answer = enroll_at(&client, &server, &device, "88888888888888888", None).await;
    assert_eq!(answer.code(), "rate_limited");
    let answer = enroll_at(&client, &server, &device, &keys[0], None).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.problem);
    server.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_address_has_its_own_budget() {
    let server = TestServer::start_with(|settings| {
        settings.rate_limits = Limits {
            per_source: 3,
            per_unit: 1_000,
            window: Duration::from_secs(60),
        };
        settings.trusted_proxies = vec!["127.0.0.4/32".parse().unwrap()];
    })
    .await;
    let gateway = server.client_from(loopback(4));
    let device = Device::numbered(60);
    let guess = |client, forwarded| {
        let (server, device) = (&server, &device);
        async move {
            enroll_at(client, server, device, "77777777777777777", forwarded)
                .await
                .code()
                .to_owned()
        }
    };
    for _ in 0..3 {
        assert_eq!(guess(&gateway, Some("198.51.100.1")).await, "key_unknown");
    }
    assert_eq!(guess(&gateway, Some("198.51.100.1")).await, "rate_limited");
    // Another client behind the same gateway is not limited, nor the gateway's own address.
    assert_eq!(guess(&gateway, Some("198.51.100.2")).await, "key_unknown");
    assert_eq!(guess(&gateway, None).await, "key_unknown");
    // From an address that is not a trusted proxy, the header is ignored: it counts as itself.
    let other = server.client_from(loopback(5));
    for _ in 0..3 {
        assert_eq!(guess(&other, Some("198.51.100.3")).await, "key_unknown");
    }
    assert_eq!(guess(&other, Some("198.51.100.9")).await, "rate_limited");
    // The audit log names the client, not the gateway.
    let sources: std::collections::BTreeSet<String> = server
        .audit()
        .await
        .into_iter()
        .map(|entry| entry.source)
        .collect();
    assert!(
        sources.contains("198.51.100.1") && sources.contains("127.0.0.5"),
        "{sources:?}"
    );
    assert!(!sources.contains("198.51.100.3"), "{sources:?}");
    server.stop().await;
}

/// `enroll_at` presenting `alternates` after `key` (onboard_protocol::alternates).
async fn enroll_several(
    client: &reqwest::Client,
    server: &TestServer,
    device: &Device,
    key: &str,
    alternates: &[&str],
) -> (Answer, Option<String>, Option<String>) {
    let keys: Vec<onboard_protocol::FirstAuthKey> = alternates
        .iter()
        .map(|key| onboard_protocol::FirstAuthKey::new(*key).unwrap())
        .collect();
    let response = client
        .post(server.ip_url(routes::EST_SIMPLEENROLL))
        .basic_auth(&device.unit_id, Some(key))
        .header("content-type", "application/pkcs10")
        .header(
            onboard_protocol::alternates::ALTERNATE_KEYS_HEADER,
            onboard_protocol::alternates::encode_alternates(&keys),
        )
        .body(device.csr_base64.clone())
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    let index = header(onboard_protocol::alternates::KEY_INDEX_HEADER);
    let refused = header(onboard_protocol::alternates::KEYS_REFUSED_HEADER);
    (read_answer(response).await, index, refused)
}

#[tokio::test]
async fn several_keys_in_one_request_enroll_with_one_and_each_unknown_one_is_a_guess() {
    let limits = Limits {
        per_source: 1_000,
        per_unit: 6,
        window: Duration::from_secs(600),
    };
    let server = TestServer::start(limits).await;
    let keys = one_time_keys(&server, 2).await;
    let client = server.client_from(loopback(5));
    // Another device takes the first key; this one presents it, an unknown one, then the second.
    let answer = enroll_at(&client, &server, &Device::numbered(60), &keys[0], None).await;
    assert_eq!(answer.status, StatusCode::OK);
    let device = Device::numbered(61);
    let (answer, index, refused) = enroll_several(
        &client,
        &server,
        &device,
        &keys[0],
        &["11111111111111111", &keys[1]],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.problem);
    assert_eq!(index.as_deref(), Some("2"));
    assert_eq!(refused.as_deref(), Some("0=key_used,1=key_unknown"));

    // Six unknown keys in one request are six guesses: this unit ID's budget is spent, and its
    // next guess is limited (one request with one guess would have left five).
    let guesser = Device::numbered(62);
    let junk = [
        "22222222222222222",
        "33333333333333333",
        "44444444444444444",
    ];
    let (answer, index, refused) = enroll_several(
        &client,
        &server,
        &guesser,
        "55555555555555555",
        &[
            junk[0],
            junk[1],
            junk[2],
            "66666666666666666",
            "77777777777777777",
        ],
    )
    .await;
    assert_eq!(answer.code(), "key_unknown");
    assert_eq!(index, None);
    assert_eq!(
        refused.as_deref(),
        Some("0=key_unknown,1=key_unknown,2=key_unknown,3=key_unknown,4=key_unknown,5=key_unknown")
    );
    let answer = enroll_at(&client, &server, &guesser, "88888888888888888", None).await;
    assert_eq!(answer.code(), "rate_limited");

    // A plain EST request (no alternates) sees no new header.
    let plain = client
        .post(server.ip_url(routes::EST_SIMPLEENROLL))
        .basic_auth(&Device::numbered(63).unit_id, Some("99999999999999999"))
        .header("content-type", "application/pkcs10")
        .body(Device::numbered(63).csr_base64.clone())
        .send()
        .await
        .unwrap();
    assert!(
        plain
            .headers()
            .get(onboard_protocol::alternates::KEYS_REFUSED_HEADER)
            .is_none()
    );
    // A malformed list is a malformed request, quoting nothing of it.
    let malformed = client
        .post(server.ip_url(routes::EST_SIMPLEENROLL))
        .basic_auth(&Device::numbered(64).unit_id, Some(keys[1].as_str()))
        .header("content-type", "application/pkcs10")
        .header(
            onboard_protocol::alternates::ALTERNATE_KEYS_HEADER,
            "c2VjcmV0,not base64!",
        )
        .body(Device::numbered(64).csr_base64.clone())
        .send()
        .await
        .unwrap();
    let answer = read_answer(malformed).await;
    assert_eq!(answer.code(), "bad_request");
    let detail = format!("{:?}", answer.problem);
    assert!(
        !detail.contains("secret") && !detail.contains("not base64"),
        "{detail}"
    );
    server.stop().await;
}

/// A typed mass-deployment key (long enough for the floor, but a phrase a dictionary could hold).
const TYPED_MASS_KEY: &str = "correct-Horse-battery-Staple-42";

#[tokio::test]
async fn a_dictionary_from_one_address_never_reaches_a_typed_mass_key() {
    const WORDS: usize = 300;
    const REAL_AT: usize = 250;
    let server = TestServer::start(Limits::default()).await;
    server
        .shared
        .stub
        .keys()
        .create_mass(Some(TYPED_MASS_KEY), "typed", &Actor::cli())
        .await
        .unwrap();
    // One address, one keep-alive connection, one request after another; one unit ID per word so
    // the address's budget is the one that holds. The 251st word is the key.
    let client = server.client_from(loopback(6));
    let mut answers = Vec::with_capacity(WORDS);
    for n in 0..WORDS {
        let word = if n == REAL_AT {
            TYPED_MASS_KEY.to_owned()
        } else {
            format!("dictionary-word-{n:03}-Summer")
        };
        let device = Device::numbered(20_000 + n);
        answers.push(enroll_at(&client, &server, &device, &word, None).await);
    }
    let budget = Limits::default().per_source as usize;
    for (n, answer) in answers.iter().enumerate() {
        let expected = if n < budget {
            "key_unknown"
        } else {
            "rate_limited"
        };
        assert_eq!(answer.code(), expected, "word {n}: {:?}", answer.problem);
    }
    // The answer to the real key is the answer to the words beside it: nothing tells them apart,
    // the problem body nor the headers (their names and values, the date and the seconds to wait
    // aside).
    let real = &answers[REAL_AT];
    for neighbour in [&answers[REAL_AT - 1], &answers[REAL_AT + 1]] {
        assert_eq!(
            (real.status, &real.problem, &real.headers),
            (neighbour.status, &neighbour.problem, &neighbour.headers)
        );
    }
    // No certificate went out and nothing was enrolled; the audit log holds the budget's
    // refusals and one line for the address, and no `ok`.
    assert!(server.devices().await.is_empty());
    let audit = server.audit().await;
    let outcomes: Vec<&str> = audit
        .iter()
        .filter(|entry| entry.event == "enroll")
        .map(|entry| entry.outcome.as_str())
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "key_unknown").count(),
        budget
    );
    assert_eq!(outcomes.iter().filter(|o| **o == "rate_limited").count(), 1);
    assert_eq!(outcomes.len(), budget + 1, "{outcomes:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_concurrent_requests_of_eight_keys_test_no_more_keys_than_the_budget() {
    const REQUESTS: usize = 40;
    const KEYS: usize = 8;
    let server = std::sync::Arc::new(TestServer::start(Limits::default()).await);
    let client = server.client_from(loopback(7));
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(REQUESTS));
    let mut requests = tokio::task::JoinSet::new();
    for n in 0..REQUESTS {
        let (client, server, start) = (client.clone(), server.clone(), start.clone());
        requests.spawn(async move {
            let keys: Vec<String> = (0..KEYS)
                .map(|k| format!("{:017}", 30_000_000_000 + (n * KEYS + k) as u64))
                .collect();
            let alternates: Vec<&str> = keys[1..].iter().map(String::as_str).collect();
            // A unit ID of its own each, so the address's budget is the one that holds.
            let device = Device::numbered(40_000 + n);
            start.wait().await;
            let (answer, _, refused) =
                enroll_several(&client, &server, &device, &keys[0], &alternates).await;
            (answer, refused)
        });
    }
    let mut tested = 0;
    let mut untried = 0;
    while let Some(done) = requests.join_next().await {
        let (answer, refused) = done.unwrap();
        assert_ne!(answer.status, StatusCode::OK);
        let refused = refused.expect("every answer lists its keys");
        assert_eq!(refused.split(',').count(), KEYS, "{refused}");
        for entry in refused.split(',') {
            match entry.split_once('=').unwrap().1 {
                "key_unknown" => tested += 1,
                "rate_limited" => untried += 1,
                other => panic!("{other}"),
            }
        }
    }
    let budget = Limits::default().per_source as usize;
    assert_eq!(tested, budget, "keys tested");
    assert_eq!(untried, REQUESTS * KEYS - budget);
}
