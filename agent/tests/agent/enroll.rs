//! Enrollment in-process against a real `ums-stub` on port 0: each key type, keys refused and
//! skipped, a server of another UMS ID, the communication token, a server that comes up late
//! (paused clock), a lost answer after a kill, a clock at 1970, renewal, and refusals that must
//! not loop.

use std::sync::Arc;
use std::time::Duration;

use onboard_agent::clock::FixedClock;
use onboard_agent::driver::{Driver, Step};
use onboard_agent::enroll::{Enroller, KeySource};
use onboard_agent::lifecycle::{Failure, Phase};
use onboard_agent::pin::Pin;
use onboard_agent::state::{self, AgentState};
use onboard_agent::tls::{ChainRefusal, PinnedVerifier};
use onboard_protocol::admin::EditKey;
use onboard_protocol::{Fingerprint, KeyKind, ProblemCode, est};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::rig::{Agent, Ums, plug_in, settings};

const UNIT: &str = "00E0C5540B8B";

/// Checks the files of an enrolled state directory against the server that enrolled it.
async fn assert_enrolled_files(state_dir: &std::path::Path, ums: &Ums, unit: &str) {
    let key = std::fs::metadata(state_dir.join(state::DEVICE_KEY_FILE)).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600
    );
    let cert_pem = std::fs::read(state_dir.join(state::DEVICE_CERT_FILE)).unwrap();
    let der = state::certificate_der(&cert_pem).unwrap();
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let cn: Vec<&str> = cert
        .subject()
        .iter_common_name()
        .map(|cn| cn.as_str().unwrap())
        .collect();
    assert_eq!(cn, [unit]);
    let ums_pem = std::fs::read(state_dir.join(state::UMS_ID_CERT_FILE)).unwrap();
    let ums_der = state::certificate_der(&ums_pem).unwrap();
    assert_eq!(Fingerprint::of_der(&ums_der), ums.fingerprint());
    let device = ums
        .devices()
        .await
        .into_iter()
        .find(|device| device.unit_id.as_str() == unit)
        .expect("the server lists the device");
    assert_eq!(
        device.certificate, der,
        "the stored certificate is the issued one"
    );
}

#[tokio::test]
async fn each_key_type_enrolls_and_the_device_reports_its_inventory() {
    for (kind, unit) in [
        (KeyKind::OneTime, "00E0C5540B01"),
        (KeyKind::DeviceBound, "00E0C5540B02"),
        (KeyKind::MassDeployment, "00E0C5540B03"),
    ] {
        let ums = Ums::start().await;
        let ids = ums.create(kind, 1, Some(unit)).await;
        let key_file = ums.export(&ids, vec![ums.server()]).await;
        let root = tempfile::tempdir().unwrap();
        let state_dir = tempfile::tempdir().unwrap();
        plug_in(root.path(), &key_file);

        let agent = Agent::start(settings(unit, root.path(), state_dir.path()));
        let state = agent.wait_enrolled().await;
        assert_eq!(state.key_type, Some(kind), "{kind}");
        assert_eq!(state.pin, Some(Pin::Fingerprint(ums.fingerprint())));
        assert_eq!(
            state.server.as_deref(),
            Some(ums.server().to_string().as_str())
        );
        assert!(state.certificate_not_after.is_some());
        let reported = agent
            .wait_for("with the inventory reported", |state| {
                state.inventory_reported_at.is_some()
            })
            .await;
        assert!(reported.phase.is_enrolled());
        agent.stop().await.unwrap();

        assert_enrolled_files(state_dir.path(), &ums, unit).await;
        let (count, status) = ums.usage(ids[0]).await;
        assert_eq!(count, 1, "{kind}");
        let expected = if kind == KeyKind::MassDeployment {
            "active"
        } else {
            "used"
        };
        assert_eq!(status, expected, "{kind}");
        let device = ums.devices().await.pop().unwrap();
        let inventory: onboard_protocol::Inventory =
            serde_json::from_str(device.inventory.as_deref().expect("inventory stored")).unwrap();
        assert!(!inventory.host_name.is_empty());
        assert!(inventory.memory_bytes > 0);
        ums.stop().await;
    }
}

#[tokio::test]
async fn a_used_and_a_deactivated_key_are_skipped_and_remembered_for_a_good_one() {
    let ums = Ums::start().await;
    let one_time = ums.create(KeyKind::OneTime, 2, None).await;
    let mass = ums.create(KeyKind::MassDeployment, 1, None).await;
    let ids = [one_time.clone(), mass.clone()].concat();
    let key_file = ums.export(&ids, vec![ums.server()]).await;
    // One key goes to another device first; the other is deactivated after the export.
    let other_root = tempfile::tempdir().unwrap();
    let other_state = tempfile::tempdir().unwrap();
    let only_first = ums.export(&one_time[..1], vec![ums.server()]).await;
    plug_in(other_root.path(), &only_first);
    let other = Agent::start(settings(
        "00E0C5000001",
        other_root.path(),
        other_state.path(),
    ));
    other.wait_enrolled().await;
    other.stop().await.unwrap();
    ums.deactivate(one_time[1]).await;

    let root = tempfile::tempdir().unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    plug_in(root.path(), &key_file);
    let agent = Agent::start(settings(UNIT, root.path(), state_dir.path()));
    let state = agent.wait_enrolled().await;
    // Mass keys come last: both one-time keys were presented and refused before it.
    assert_eq!(state.key_type, Some(KeyKind::MassDeployment));
    let mut codes: Vec<ProblemCode> = state.refused_keys.iter().map(|r| r.code).collect();
    codes.sort_by_key(|code| code.as_str());
    assert_eq!(codes, [ProblemCode::KeyInactive, ProblemCode::KeyUsed]);
    assert_eq!(agent.observer.passes(), 1);
    agent.stop().await.unwrap();
    assert_eq!(
        ums.usage(one_time[0]).await.0,
        1,
        "used once, by the other device"
    );
    assert_eq!(ums.usage(one_time[1]).await, (0, "inactive".to_owned()));
    assert_eq!(ums.usage(mass[0]).await.0, 1);
    // The state file holds digests, never a key.
    let text = std::fs::read_to_string(state_dir.path().join(state::STATE_FILE)).unwrap();
    for id in ids {
        assert!(
            !text.contains(&ums.key_value(id).await),
            "a key reached the state file"
        );
    }
    ums.stop().await;
}

#[tokio::test]
async fn a_server_of_another_ums_id_is_refused_and_never_receives_the_key() {
    let ums = Ums::start().await;
    let imposter = Ums::start().await;
    // Several keys: the device presents them in one request, and not one of them before the
    // pinned handshake.
    let ids = ums.create(KeyKind::OneTime, 3, None).await;
    // The stick names the imposter's address first, then the real server.
    let key_file = ums.export(&ids, vec![imposter.server()]).await;
    let state_dir = tempfile::tempdir().unwrap();
    let enroller = Enroller {
        state_dir: state_dir.path().to_owned(),
        unit_id: UNIT.parse().unwrap(),
        configured_pin: None,
        clock: onboard_agent::clock::system(),
        timeouts: Default::default(),
        key_algorithm: Default::default(),
        unknown_key_retry: state::DEFAULT_UNKNOWN_KEY_RETRY,
        on_change: Arc::new(|_| {}),
    };
    let mut state = AgentState::default();
    let mut driver = Driver::new(enroller, Default::default());
    let source = KeySource::from_key_file("stick", &key_file);
    let step = driver
        .step(&mut state, std::slice::from_ref(&source), 0.5)
        .await
        .unwrap();
    let Step::BackOff {
        pin_refused,
        detail,
        ..
    } = step
    else {
        panic!("{step:?}");
    };
    assert!(pin_refused);
    assert!(detail.contains("not the pinned UMS ID"), "{detail}");
    assert!(detail.contains(&imposter.fingerprint().short()), "{detail}");
    // Nothing reached the imposter's enrollment endpoint: no attempt in its audit log at all.
    let seen: Vec<String> = imposter
        .audit()
        .await
        .into_iter()
        .map(|entry| entry.event)
        .collect();
    assert!(
        !seen.iter().any(|event| event.contains("enroll")),
        "{seen:?}"
    );
    for id in &ids {
        assert_eq!(ums.usage(*id).await.0, 0);
    }

    // Listed after the imposter, the real server is tried in order and enrolls.
    let both = ums
        .export(&ids, vec![imposter.server(), ums.server()])
        .await;
    let source = KeySource::from_key_file("stick", &both);
    driver.retry_due(&mut state).unwrap();
    let step = driver.step(&mut state, &[source], 0.5).await.unwrap();
    assert!(matches!(step, Step::Enrolled { source: 0, .. }), "{step:?}");
    let mut used = 0;
    for id in &ids {
        used += ums.usage(*id).await.0;
    }
    assert_eq!(used, 1, "one key of the three consumed");
    assert_eq!(
        state.server.as_deref(),
        Some(ums.server().to_string().as_str())
    );
    assert!(
        imposter
            .audit()
            .await
            .iter()
            .all(|entry| !entry.event.contains("enroll"))
    );
    imposter.stop().await;
    ums.stop().await;
}

#[tokio::test]
async fn a_chain_of_another_ums_id_is_refused_by_the_verifier_itself() {
    let ums = Ums::start().await;
    let other = Fingerprint::of_der(b"some other UMS ID");
    let verifier = PinnedVerifier::new(Pin::Fingerprint(other), onboard_agent::clock::system());
    let der = ums.running.certificate_der().to_vec();
    let refusal = verifier.check_chain(&[&der]).unwrap_err();
    assert!(
        matches!(refusal, ChainRefusal::NotPinned { .. }),
        "{refusal:?}"
    );
    let verifier = PinnedVerifier::new(
        Pin::Fingerprint(ums.fingerprint()),
        onboard_agent::clock::system(),
    );
    assert_eq!(verifier.check_chain(&[&der]).unwrap(), der);
    ums.stop().await;
}

#[tokio::test]
async fn the_communication_token_pins_and_the_whole_fingerprint_is_learned() {
    let ums = Ums::start().await;
    let ids = ums.create(KeyKind::OneTime, 1, None).await;
    let root = tempfile::tempdir().unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    plug_in(root.path(), &ums.export(&ids, vec![ums.server()]).await);
    let mut settings = settings(UNIT, root.path(), state_dir.path());
    settings.pin = Some(Pin::token(&ums.fingerprint().communication_token()).unwrap());
    let agent = Agent::start(settings);
    let state = agent.wait_enrolled().await;
    assert_eq!(state.pin, Some(Pin::Fingerprint(ums.fingerprint())));
    agent.stop().await.unwrap();
    ums.stop().await;
}

#[tokio::test]
async fn a_configured_pin_refuses_a_stick_of_another_ums_id_without_contacting_it() {
    let ums = Ums::start().await;
    let ids = ums.create(KeyKind::OneTime, 1, None).await;
    let root = tempfile::tempdir().unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    plug_in(root.path(), &ums.export(&ids, vec![ums.server()]).await);
    let mut settings = settings(UNIT, root.path(), state_dir.path());
    settings.pin = Some(Pin::Fingerprint(Fingerprint::of_der(b"the UMS ID I trust")));
    let agent = Agent::start(settings);
    let state = agent
        .wait_for("failed", |state| {
            matches!(state.phase, Phase::Failed { .. })
        })
        .await;
    assert!(
        matches!(
            &state.phase,
            Phase::Failed {
                reason: Failure::PinMismatch { .. }
            }
        ),
        "{state:?}"
    );
    assert_eq!(agent.observer.passes(), 0);
    agent.stop().await.unwrap();
    assert!(
        ums.audit()
            .await
            .iter()
            .all(|entry| !entry.event.contains("enroll"))
    );
    assert!(!state_dir.path().join(state::DEVICE_KEY_FILE).exists());
    ums.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_server_down_at_first_is_retried_with_growing_waits_until_it_is_up() {
    // A port nothing listens on yet.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = reserved.local_addr().unwrap().port();
    drop(reserved);
    // Keys made on a server elsewhere, whose data directory is then served on `port`.
    let data = tempfile::tempdir().unwrap();
    let maker = Ums::start_in(
        data,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        365,
    )
    .await;
    let ids = maker.create(KeyKind::OneTime, 1, None).await;
    let server = onboard_protocol::Server::new("127.0.0.1", port).unwrap();
    let key_file = maker.export(&ids, vec![server]).await;
    let root = tempfile::tempdir().unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    plug_in(root.path(), &key_file);
    let mut settings = settings(UNIT, root.path(), state_dir.path());
    settings.backoff.base = Duration::from_millis(200);
    settings.backoff.max = Duration::from_millis(3200);
    let agent = Agent::start(settings);
    // With the clock paused, every wait passes at once: six faults in a row.
    let state = agent
        .wait_for(
            "backing off six times",
            |state| matches!(state.phase, Phase::BackingOff { attempt, .. } if attempt >= 6),
        )
        .await;
    assert!(
        state.last_error.as_deref().unwrap().contains("127.0.0.1"),
        "{state:?}"
    );
    let waits = agent.observer.backoffs();
    for (index, wait) in waits.iter().take(6).enumerate() {
        let ceiling = Duration::from_millis(200 << index).min(Duration::from_millis(3200));
        assert!(
            *wait >= ceiling / 2 && *wait <= ceiling,
            "wait {index} was {wait:?}, ceiling {ceiling:?}: {waits:?}"
        );
    }
    assert_eq!(agent.observer.passes() as usize, waits.len());

    // The server comes up on the port; the next retry (real time now) enrolls.
    tokio::time::resume();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let data = maker.stop_keeping_data().await;
    let ums = Ums::start_in(data, listener, 365).await;
    let state = agent.wait_enrolled().await;
    assert_eq!(state.key_type, Some(KeyKind::OneTime));
    agent.stop().await.unwrap();
    assert_eq!(ums.usage(ids[0]).await, (1, "used".to_owned()));
    ums.stop().await;
}

#[tokio::test]
async fn an_answer_lost_to_a_kill_is_fetched_again_with_the_same_key_pair() {
    let ums = Ums::start().await;
    let ids = ums.create(KeyKind::OneTime, 1, None).await;
    let key = ums.key_value(ids[0]).await;
    // First start: the server is not reachable, so the agent stores its key pair and backs off;
    // then it is killed (its task dropped).
    let dead = onboard_protocol::Server::new("127.0.0.1", 1).unwrap();
    let root = tempfile::tempdir().unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    let mut key_file = ums.export(&ids, vec![dead]).await;
    plug_in(root.path(), &key_file);
    let agent = Agent::start(settings(UNIT, root.path(), state_dir.path()));
    agent
        .wait_for("backing off", |state| {
            matches!(state.phase, Phase::BackingOff { .. })
        })
        .await;
    agent.stop().await.unwrap();
    let key_pem = std::fs::read_to_string(state_dir.path().join(state::DEVICE_KEY_FILE)).unwrap();

    // The request that was in flight when it died reached the server, which consumed the key
    // and issued a certificate; the answer never arrived.
    let key_pair = rcgen::KeyPair::from_pem(&key_pem).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, UNIT);
    let csr = params.serialize_request(&key_pair).unwrap();
    let verifier = PinnedVerifier::new(
        Pin::Fingerprint(ums.fingerprint()),
        onboard_agent::clock::system(),
    );
    let client = onboard_agent::tls::client(verifier, None, &Default::default()).unwrap();
    let lost = client
        .post(format!(
            "https://127.0.0.1:{}{}",
            ums.running.port(),
            onboard_protocol::routes::EST_SIMPLEENROLL
        ))
        .basic_auth(UNIT, Some(&key))
        .body(est::encode_base64(csr.der()))
        .send()
        .await
        .unwrap();
    assert_eq!(lost.status(), 200);
    let lost =
        est::parse_certs_only(&est::decode_base64(&lost.bytes().await.unwrap()).unwrap()).unwrap();
    assert_eq!(ums.usage(ids[0]).await, (1, "used".to_owned()));

    // Restarted with the stick now naming the live server: the same key pair gets the same
    // certificate back, and nothing more is consumed.
    key_file.servers = vec![ums.server()];
    plug_in(root.path(), &key_file);
    let agent = Agent::start(settings(UNIT, root.path(), state_dir.path()));
    agent.wait_enrolled().await;
    agent.stop().await.unwrap();
    let stored = state::certificate_der(
        &std::fs::read(state_dir.path().join(state::DEVICE_CERT_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(stored, lost[0]);
    assert_eq!(ums.usage(ids[0]).await, (1, "used".to_owned()));
    assert_eq!(ums.devices().await.len(), 1);
    ums.stop().await;
}

#[tokio::test]
async fn a_clock_at_1970_enrolls_and_a_plausible_clock_still_checks_validity() {
    let ums = Ums::start().await;
    let ids = ums.create(KeyKind::MassDeployment, 1, None).await;
    let key_file = ums.export(&ids, vec![ums.server()]).await;
    let root = tempfile::tempdir().unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    plug_in(root.path(), &key_file);
    let agent = Agent::start_with_clock(
        settings(UNIT, root.path(), state_dir.path()),
        Arc::new(FixedClock(OffsetDateTime::UNIX_EPOCH)),
    );
    let state = agent.wait_enrolled().await;
    assert_eq!(state.enrolled_at.as_deref(), Some("1970-01-01T00:00:00Z"));
    agent.stop().await.unwrap();

    // A clock past the build date is believed: in 2300 every certificate has expired.
    let far = OffsetDateTime::from_unix_timestamp(10_413_792_000).unwrap();
    let verifier = PinnedVerifier::new(
        Pin::Fingerprint(ums.fingerprint()),
        Arc::new(FixedClock(far)),
    );
    let der = ums.running.certificate_der().to_vec();
    let refusal = verifier.check_chain(&[&der]).unwrap_err();
    assert!(
        matches!(
            refusal,
            ChainRefusal::Validity {
                what: "expired",
                ..
            }
        ),
        "{refusal:?}"
    );
    ums.stop().await;
}

#[tokio::test]
async fn an_enrolled_device_never_enrolls_again_and_renews_within_30_days() {
    // Certificates for 10 days: inside the renewal window from the start.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ums = Ums::start_on(listener, 10).await;
    let ids = ums.create(KeyKind::MassDeployment, 1, None).await;
    let root = tempfile::tempdir().unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    plug_in(root.path(), &ums.export(&ids, vec![ums.server()]).await);
    let agent = Agent::start(settings(UNIT, root.path(), state_dir.path()));
    agent.wait_enrolled().await;
    // Right after enrolling it checks expiry too: 10 days left, so it renews at once.
    let renewed = agent
        .wait_for("renewed", |state| state.renewed_at.is_some())
        .await;
    agent.stop().await.unwrap();
    async fn renewals(ums: &Ums) -> usize {
        ums.audit()
            .await
            .into_iter()
            .filter(|entry| entry.event == "reenroll")
            .count()
    }
    assert_eq!(renewals(&ums).await, 1);
    let serial_on_server = ums.devices().await.pop().unwrap().serial;
    assert_eq!(
        renewed.certificate_serial.as_deref(),
        Some(serial_on_server.as_str())
    );

    // Restarted with the stick still in: no enrollment pass, one key use in all; the
    // certificate is still inside the window, so it is renewed again at start-up.
    let agent = Agent::start(settings(UNIT, root.path(), state_dir.path()));
    agent
        .wait_for("renewed again", |state| {
            state.certificate_serial != renewed.certificate_serial
        })
        .await;
    assert_eq!(renewals(&ums).await, 2);
    assert_eq!(agent.observer.passes(), 0);
    agent.stop().await.unwrap();
    assert_eq!(ums.usage(ids[0]).await.0, 1);
    assert_eq!(ums.devices().await.len(), 1);
    ums.stop().await;
}

#[tokio::test]
async fn exhausted_keys_fail_once_and_do_not_loop_even_after_a_restart() {
    let ums = Ums::start().await;
    let ids = ums.create(KeyKind::OneTime, 1, None).await;
    let key_file = ums.export(&ids, vec![ums.server()]).await;
    // Another device takes the only key.
    let first_root = tempfile::tempdir().unwrap();
    let first_state = tempfile::tempdir().unwrap();
    plug_in(first_root.path(), &key_file);
    let first = Agent::start(settings(
        "00E0C5000001",
        first_root.path(),
        first_state.path(),
    ));
    first.wait_enrolled().await;
    first.stop().await.unwrap();

    let root = tempfile::tempdir().unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    let stick = plug_in(root.path(), &key_file);
    let agent = Agent::start(settings(UNIT, root.path(), state_dir.path()));
    let state = agent
        .wait_for("failed", |state| {
            matches!(state.phase, Phase::Failed { .. })
        })
        .await;
    assert_eq!(
        state.phase,
        Phase::Failed {
            reason: Failure::KeysExhausted { refused: 1 }
        }
    );
    // Events on the stick wake it, but the refused key is not presented again.
    let looks = agent.observer.rescans();
    std::fs::write(stick.join("notes.txt"), b"hello").unwrap();
    agent.wait_for_looks_past(looks).await;
    assert_eq!(agent.observer.passes(), 1);
    agent.stop().await.unwrap();

    let agent = Agent::start(settings(UNIT, root.path(), state_dir.path()));
    agent.wait_for_looks_past(0).await;
    assert_eq!(agent.observer.passes(), 0);
    agent.stop().await.unwrap();
    let refusals = ums
        .audit()
        .await
        .into_iter()
        .filter(|entry| entry.outcome == "key_used")
        .count();
    assert_eq!(refusals, 1, "the used key was presented once in all");
    ums.stop().await;
}

#[tokio::test]
async fn unit_id_conflict_stops_the_agent_with_the_reason() {
    let ums = Ums::start().await;
    let ids = ums.create(KeyKind::MassDeployment, 1, None).await;
    let key_file = ums.export(&ids, vec![ums.server()]).await;
    let root = tempfile::tempdir().unwrap();
    plug_in(root.path(), &key_file);
    // The same unit ID enrolls from another state directory (another key pair) first.
    let first_state = tempfile::tempdir().unwrap();
    let first = Agent::start(settings(UNIT, root.path(), first_state.path()));
    first.wait_enrolled().await;
    first.stop().await.unwrap();

    let state_dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(settings(UNIT, root.path(), state_dir.path()));
    let state = agent
        .wait_for("failed", |state| {
            matches!(state.phase, Phase::Failed { .. })
        })
        .await;
    assert_eq!(
        state.phase,
        Phase::Failed {
            reason: Failure::UnitIdConflict
        }
    );
    assert!(
        state
            .last_error
            .as_deref()
            .unwrap()
            .contains("devices delete"),
        "{state:?}"
    );
    let looks = agent.observer.rescans();
    std::fs::write(root.path().join("STICK/notes.txt"), b"wake up").unwrap();
    agent.wait_for_looks_past(looks).await;
    assert_eq!(
        agent.observer.passes(),
        1,
        "a conflict is not retried on every event"
    );
    agent.stop().await.unwrap();
    ums.stop().await;
}

#[tokio::test]
async fn a_device_whose_certificate_lapsed_shows_orphaned_then_enrolls_again_with_a_key() {
    // Certificates of 2 s, renewable for 1 s after expiry.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ums = Ums::start_with(tempfile::tempdir().unwrap(), listener, |settings| {
        settings.certificate_lifetime = time::Duration::seconds(2);
        settings.renewal_grace = time::Duration::seconds(1);
    })
    .await;
    let ids = ums.create(KeyKind::OneTime, 2, None).await;
    let root = tempfile::tempdir().unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    plug_in(root.path(), &ums.export(&ids, vec![ums.server()]).await);
    let agent = Agent::start(settings(UNIT, root.path(), state_dir.path()));
    let enrolled = agent.wait_enrolled().await;
    agent.stop().await.unwrap();
    let first_serial = enrolled.certificate_serial.clone().unwrap();
    let public_key = ums.devices().await.pop().unwrap().public_key;

    // Shelved past the certificate's lifetime and the grace period, then started again: the
    // renewal at start-up is refused in the handshake, and the device says so, then enrolls
    // again with the stick's other key, keeping its key pair.
    tokio::time::sleep(std::time::Duration::from_millis(4200)).await;
    let agent = Agent::start(settings(UNIT, root.path(), state_dir.path()));
    let orphaned = agent
        .wait_for("orphaned", |state| state.phase.name() == "orphaned")
        .await;
    assert!(
        orphaned
            .last_error
            .as_deref()
            .is_some_and(|error| error.contains("handshake")),
        "{orphaned:?}"
    );
    let again = agent
        .wait_for("enrolled again", |state| {
            state.phase.is_enrolled() && state.certificate_serial.as_deref() != Some(&first_serial)
        })
        .await;
    agent.stop().await.unwrap();
    let devices = ums.devices().await;
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].public_key, public_key, "the same key pair");
    assert_eq!(Some(devices[0].serial.clone()), again.certificate_serial);
    let uses: Vec<u64> = [ums.usage(ids[0]).await.0, ums.usage(ids[1]).await.0].to_vec();
    assert_eq!(uses, [1, 1], "one key for each enrollment");
    ums.stop().await;
}

#[tokio::test]
async fn junk_sent_under_this_unit_id_cannot_hold_a_device_whose_good_key_comes_later() {
    // The server with the guess limits an administrator gets.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ums = Ums::start_with(tempfile::tempdir().unwrap(), listener, |settings| {
        settings.rate_limits = ums_stub::rate_limit::Limits::default();
    })
    .await;
    // The stick: first a key bound to this unit that the server does not know (made elsewhere),
    // then a real one-time key.
    let elsewhere = Ums::start().await;
    let stale = elsewhere.create(KeyKind::DeviceBound, 1, Some(UNIT)).await;
    let stale_entry = elsewhere
        .export(&stale, vec![elsewhere.server()])
        .await
        .keys[0]
        .clone();
    elsewhere.stop().await;
    let real = ums.create(KeyKind::OneTime, 1, None).await;
    let mut key_file = ums.export(&real, vec![ums.server()]).await;
    key_file.keys.insert(0, stale_entry);

    // Someone sends junk under this unit ID until its guesses are used up.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            ums.running.certificate_der().to_vec(),
        ))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(onboard_agent::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .build()
        .unwrap();
    let junk_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&junk_key)
        .unwrap();
    let mut limited = false;
    for n in 0..20 {
        let response = client
            .post(format!(
                "https://127.0.0.1:{}{}",
                ums.running.port(),
                onboard_protocol::routes::EST_SIMPLEENROLL
            ))
            .basic_auth(UNIT, Some(format!("{:017}", 12_345 + n)))
            .body(est::encode_base64(csr.der()))
            .send()
            .await
            .unwrap();
        if response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
    }
    assert!(limited, "the unit's guesses are used up");

    // The device presents the unknown key first (429 now), moves on to the real one, and enrolls.
    let root = tempfile::tempdir().unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    plug_in(root.path(), &key_file);
    let agent = Agent::start(settings(UNIT, root.path(), state_dir.path()));
    agent.wait_enrolled().await;
    agent.stop().await.unwrap();
    assert_eq!(ums.usage(real[0]).await.0, 1);
    ums.stop().await;
}

#[tokio::test]
async fn a_key_refused_as_unknown_is_tried_again_by_itself_once_its_refusal_lapses() {
    let ums = Ums::start().await;
    // A typed mass key: the value an administrator can type again below.
    let value = "Rollout wave 3, hall B";
    let (id, _) = ums
        .running
        .shared()
        .stub
        .keys()
        .create_mass(Some(value), "", &ums_stub::store::Actor::cli())
        .await
        .unwrap();
    let ids = [id];
    let key_file = ums.export(&ids, vec![ums.server()]).await;
    // The server briefly "forgets" the key (pointed at the wrong database, say).
    ums.running
        .shared()
        .stub
        .keys()
        .delete(&ids, &ums_stub::store::Actor::cli())
        .await
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    plug_in(root.path(), &key_file);
    let mut settings = settings(UNIT, root.path(), state_dir.path());
    settings.unknown_key_retry = Duration::from_secs(2);
    let agent = Agent::start(settings);
    agent
        .wait_for("out of keys", |state| {
            matches!(
                &state.phase,
                Phase::Failed {
                    reason: Failure::KeysExhausted { .. }
                }
            )
        })
        .await;
    // Put right: the same value is a key again. Nobody touches the stick; the device tries the
    // key again by itself once its refusal lapses, and enrolls.
    ums.running
        .shared()
        .stub
        .keys()
        .create_mass(Some(value), "restored", &ums_stub::store::Actor::cli())
        .await
        .unwrap();
    agent.wait_enrolled().await;
    agent.stop().await.unwrap();
    assert_eq!(ums.devices().await.len(), 1);
    ums.stop().await;
}

#[tokio::test]
async fn an_expired_and_a_not_yet_valid_key_are_skipped_for_the_next_one() {
    let ums = Ums::start().await;
    let one_time = ums.create(KeyKind::OneTime, 2, None).await;
    let mass = ums.create(KeyKind::MassDeployment, 1, None).await;
    let ids = [one_time.clone(), mass.clone()].concat();
    let key_file = ums.export(&ids, vec![ums.server()]).await;
    // After the export, one key expires and the other is made to start tomorrow.
    let keys = ums.running.shared().stub.keys();
    let now = OffsetDateTime::now_utc();
    for (id, edit) in [
        (
            one_time[0],
            EditKey {
                expires_at: Some(Some(now - time::Duration::MINUTE)),
                ..EditKey::default()
            },
        ),
        (
            one_time[1],
            EditKey {
                not_before: Some(Some(now + time::Duration::DAY)),
                ..EditKey::default()
            },
        ),
    ] {
        keys.edit(id, &edit, &ums_stub::store::Actor::cli())
            .await
            .unwrap();
    }

    let root = tempfile::tempdir().unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    plug_in(root.path(), &key_file);
    let agent = Agent::start(settings(UNIT, root.path(), state_dir.path()));
    let state = agent.wait_enrolled().await;
    // Mass keys come last: both one-time keys were presented and refused before it.
    assert_eq!(state.key_type, Some(KeyKind::MassDeployment));
    let mut codes: Vec<ProblemCode> = state.refused_keys.iter().map(|r| r.code).collect();
    codes.sort_by_key(|code| code.as_str());
    assert_eq!(
        codes,
        [ProblemCode::KeyExpired, ProblemCode::KeyNotYetValid]
    );
    assert_eq!(agent.observer.passes(), 1);
    agent.stop().await.unwrap();
    assert_eq!(ums.usage(one_time[0]).await, (0, "expired".to_owned()));
    assert_eq!(
        ums.usage(one_time[1]).await,
        (0, "not_yet_valid".to_owned())
    );
    assert_eq!(ums.usage(mass[0]).await.0, 1);
    ums.stop().await;
}
