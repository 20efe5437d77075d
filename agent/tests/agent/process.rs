//! The `onboard-agent` binary against an in-process `ums-stub`: `enroll`, `status`, `reset` and
//! `run` as a device image would call them; every line it logs at trace level holds no key; kills
//! at random points never burn a second key nor leave a half-written file; SIGTERM while backing
//! off.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use onboard_protocol::{Format, KeyKind};

use crate::rig::{Ums, plug_in};
use crate::util::{Running, Sandbox, expect_code};
use ums_stub::testing::Signal;

const UNIT: &str = "00E0C5540B8B";

/// Runs the binary off the runtime (the server it talks to runs on it).
async fn run(command: Command) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut command = command;
        command.stdin(Stdio::null()).output().unwrap()
    })
    .await
    .unwrap()
}

fn command(sandbox: &Sandbox, args: &[&str]) -> Command {
    let mut command = sandbox.command(&["--unit-id", UNIT]);
    command.args(args);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_status_and_reset_log_no_key_even_at_trace_level() {
    let ums = Ums::start().await;
    let ids = ums.create(KeyKind::OneTime, 3, None).await;
    let key_file = ums.export(&ids, vec![ums.server()]).await;
    let sandbox = Sandbox::new();
    let stick = plug_in(&sandbox.path().join("media"), &key_file);

    // Not enrolled yet: status says so, with exit code 3.
    let output = run(command(&sandbox, &["status", "--json"])).await;
    let before: serde_json::Value = serde_json::from_str(&expect_code(&output, 3)).unwrap();
    assert_eq!(before["phase"], "waiting_for_key");

    let mut enroll = command(&sandbox, &["enroll", stick.to_str().unwrap()]);
    enroll.env("RUST_LOG", "trace");
    let output = run(enroll).await;
    let stdout = expect_code(&output, 0);
    let everything = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(&format!("enrolled as {UNIT}")), "{stdout}");
    assert!(everything.contains("presenting key"), "{everything}");
    assert!(
        everything.lines().count() > 20,
        "trace logging was on: {everything}"
    );
    for id in &ids {
        let key = ums.key_value(*id).await;
        assert!(
            !everything.contains(&key),
            "the key {id} reached the output"
        );
    }
    let private_key = std::fs::read_to_string(sandbox.state_dir().join("device-key.pem")).unwrap();
    let body: String = private_key
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    assert!(
        !everything.contains(&body[..40]),
        "the private key reached the output"
    );

    let output = run(command(&sandbox, &["status", "--json"])).await;
    let status: serde_json::Value = serde_json::from_str(&expect_code(&output, 0)).unwrap();
    assert_eq!(status["phase"], "enrolled");
    assert_eq!(status["unit_id"], UNIT);
    assert_eq!(status["server"], ums.server().to_string());
    assert_eq!(
        status["ums_id_fingerprint"],
        ums.fingerprint().to_string(),
        "{status}"
    );
    assert!(
        status["certificate_not_after"]
            .as_str()
            .unwrap()
            .starts_with("20")
    );
    assert!(status["last_error"].is_null());
    let output = run(command(&sandbox, &["status"])).await;
    let text = expect_code(&output, 0);
    assert!(text.contains("Phase:           enrolled"), "{text}");
    assert!(text.contains(&ums.fingerprint().short()), "{text}");

    // Enrolled: enroll again is a no-op; reset needs --yes, then forgets all but the unit ID.
    let output = run(command(&sandbox, &["enroll", stick.to_str().unwrap()])).await;
    assert!(expect_code(&output, 0).contains("already enrolled"));
    assert_eq!(ums.devices().await.len(), 1);
    let output = run(command(&sandbox, &["reset"])).await;
    expect_code(&output, 1);
    assert!(String::from_utf8_lossy(&output.stderr).contains("--yes"));
    let output = run(command(&sandbox, &["reset", "--yes"])).await;
    let said = expect_code(&output, 0);
    assert!(said.contains("device-key.pem"), "{said}");
    // It says what the administrator must do before the device can enroll again.
    assert!(
        said.contains(&format!("ums-stub devices delete {UNIT}")),
        "{said}"
    );
    let output = run(command(&sandbox, &["status", "--json"])).await;
    let after: serde_json::Value = serde_json::from_str(&expect_code(&output, 3)).unwrap();
    assert_eq!(after["phase"], "waiting_for_key");
    assert_eq!(after["unit_id"], UNIT);

    // `enroll FILE` reads through the same hardened reader as sticks: no device file, no link.
    let link = sandbox.path().join("link.xml");
    std::os::unix::fs::symlink(stick.join("icg.xml"), &link).unwrap();
    for (path, says) in [
        (std::path::Path::new("/dev/zero"), "not a regular file"),
        (link.as_path(), "symbolic link"),
    ] {
        let output = run(command(&sandbox, &["enroll", path.to_str().unwrap()])).await;
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert_eq!(output.status.code(), Some(1), "{path:?}: {stderr}");
        assert!(
            stderr.contains(says) && stderr.contains(path.to_str().unwrap()),
            "{stderr}"
        );
    }
    ums.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_exit_codes_name_what_went_wrong() {
    let ums = Ums::start().await;
    let imposter = Ums::start().await;
    let ids = ums.create(KeyKind::OneTime, 1, None).await;
    let key = ums.key_value(ids[0]).await;
    let fingerprint = ums.fingerprint().to_string();
    let token = ums.fingerprint().communication_token();
    let port = ums.running.port().to_string();
    let imposter_port = imposter.running.port().to_string();

    // rmagent-register style, pinned to the real UMS ID but pointed at the imposter: 4, and
    // the imposter never heard of the key.
    let sandbox = Sandbox::new();
    let output = run(command(
        &sandbox,
        &[
            "enroll",
            "-s",
            "127.0.0.1",
            "-p",
            &imposter_port,
            "-a",
            &key,
            "--fingerprint",
            &fingerprint,
            "--tries",
            "1",
        ],
    ))
    .await;
    expect_code(&output, 4);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("not the pinned UMS ID"), "{said}");
    assert!(!said.contains(&key));
    assert!(
        imposter
            .audit()
            .await
            .iter()
            .all(|entry| !entry.event.contains("enroll"))
    );

    // Nothing listening: 6 after the tries.
    let output = run(command(
        &sandbox,
        &[
            "enroll",
            "-s",
            "127.0.0.1",
            "-p",
            "1",
            "-a",
            &key,
            "--token",
            &token,
            "--tries",
            "2",
        ],
    ))
    .await;
    expect_code(&output, 6);

    // An unknown key: 3. Then the real key with the token form of the pin: 0.
    let output = run(command(
        &sandbox,
        &[
            "enroll",
            "-s",
            "127.0.0.1",
            "-p",
            &port,
            "-a",
            "99999999999999999",
            "--token",
            &token,
        ],
    ))
    .await;
    expect_code(&output, 3);
    let mut with_stdin = command(
        &sandbox,
        &[
            "enroll",
            "-s",
            "127.0.0.1",
            "-p",
            &port,
            "--key-stdin",
            "--token",
            &token,
        ],
    );
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = with_stdin
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{key}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    expect_code(&output, 0);
    assert_eq!(ums.usage(ids[0]).await, (1, "used".to_owned()));

    // Another state directory, same unit ID, another key pair: 5.
    let mass = ums.create(KeyKind::MassDeployment, 1, None).await;
    let second = Sandbox::new();
    let mass_key = ums.key_value(mass[0]).await;
    let output = run(command(
        &second,
        &[
            "enroll",
            "-s",
            "127.0.0.1",
            "-p",
            &port,
            "-a",
            &mass_key,
            "--fingerprint",
            &fingerprint,
        ],
    ))
    .await;
    expect_code(&output, 5);
    assert!(String::from_utf8_lossy(&output.stderr).contains("devices delete"));

    // No key file under the mount roots: 3, and a usage error for -s without a pin: 2.
    let output = run(command(
        &second,
        &["enroll", "--mount-root", second.path().to_str().unwrap()],
    ))
    .await;
    expect_code(&output, 3);
    let output = run(command(&second, &["enroll", "-s", "127.0.0.1", "-a", "1"])).await;
    expect_code(&output, 2);
    imposter.stop().await;
    ums.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_at_random_points_never_burn_a_second_key_nor_leave_half_files() {
    let ums = Ums::start().await;
    let ids = ums.create(KeyKind::OneTime, 3, None).await;
    let key_file = ums.export(&ids, vec![ums.server()]).await;
    let sandbox = Sandbox::new();
    let stick = plug_in(&sandbox.path().join("media"), &key_file);
    let path = stick.join("icg.xml");

    let mut finished = false;
    for round in 0..12u64 {
        let mut child = command(&sandbox, &["enroll", path.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Spread the kills over the whole run: start-up, key generation, handshake, answer.
        tokio::time::sleep(Duration::from_millis(round * 7 % 60)).await;
        let _ = child.kill();
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        finished |= status.success();
        // Whatever the moment, the state directory holds whole files only.
        for entry in std::fs::read_dir(sandbox.state_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "state.json" {
                let text = std::fs::read(entry.path()).unwrap();
                serde_json::from_slice::<serde_json::Value>(&text).unwrap_or_else(|error| {
                    panic!("round {round}: state.json is not whole: {error}")
                });
            }
            if name.ends_with(".pem") {
                let text = std::fs::read_to_string(entry.path()).unwrap();
                assert!(
                    text.trim_end().ends_with("-----"),
                    "round {round}: {name} is cut"
                );
            }
        }
    }
    // Then it runs to the end.
    let output = run(command(&sandbox, &["enroll", path.to_str().unwrap()])).await;
    expect_code(&output, 0);
    let mut used = 0;
    for id in &ids {
        used += ums.usage(*id).await.0;
    }
    assert_eq!(
        used, 1,
        "exactly one key was consumed in all (finished early: {finished})"
    );
    assert_eq!(ums.devices().await.len(), 1);
    let output = run(command(&sandbox, &["status", "--json"])).await;
    let status: serde_json::Value = serde_json::from_str(&expect_code(&output, 0)).unwrap();
    let serial = ums.devices().await.pop().unwrap().serial;
    let stored = status["certificate_serial"].as_str().unwrap().to_owned();
    assert_eq!(
        stored.trim_start_matches('0'),
        serial.to_lowercase().trim_start_matches('0')
    );
    let leftovers: Vec<String> = std::fs::read_dir(sandbox.state_dir())
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    ums.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_enrolls_from_a_stick_and_sigterm_stops_it_in_any_phase() {
    let ums = Ums::start().await;
    let ids = ums.create(KeyKind::DeviceBound, 1, Some(UNIT)).await;
    let sandbox = Sandbox::new();
    let media = sandbox.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    let mut daemon = command(&sandbox, &["run", "--mount-root", media.to_str().unwrap()]);
    daemon.env("RUST_LOG", "info");

    // Waiting for a key: SIGTERM stops it with 0.
    let mut agent = Running::start(command(
        &sandbox,
        &["run", "--mount-root", media.to_str().unwrap()],
    ));
    agent.wait_for(&["watching for sticks"]);
    let (status, _) = tokio::task::spawn_blocking(move || agent.stop(Signal::SIGTERM))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));

    // Backing off (the stick names a port nothing listens on): SIGTERM still stops it at once.
    let mut dead = ums
        .export(
            &ids,
            vec![onboard_protocol::Server::new("127.0.0.1", 1).unwrap()],
        )
        .await;
    plug_in(&media, &dead);
    let mut agent = Running::start(command(
        &sandbox,
        &["run", "--mount-root", media.to_str().unwrap()],
    ));
    let agent = tokio::task::spawn_blocking(move || {
        agent.wait_for(&["backing off"]);
        agent
    })
    .await
    .unwrap();
    let (status, log) = tokio::task::spawn_blocking(move || agent.stop(Signal::SIGTERM))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "{log}");

    // The stick is fixed while it runs: it enrolls with the key bound to it.
    let mut agent = Running::start(daemon);
    agent = tokio::task::spawn_blocking(move || {
        agent.wait_for(&["watching for sticks"]);
        agent
    })
    .await
    .unwrap();
    dead.servers = vec![ums.server()];
    std::fs::write(media.join("STICK/icg.xml"), dead.write(Format::Xml)).unwrap();
    let agent = tokio::task::spawn_blocking(move || {
        agent.wait_for(&["inventory reported"]);
        agent
    })
    .await
    .unwrap();
    let output = run(command(&sandbox, &["status", "--json"])).await;
    let status: serde_json::Value = serde_json::from_str(&expect_code(&output, 0)).unwrap();
    assert_eq!(status["phase"], "enrolled");
    assert_eq!(status["key_type"], "device-bound");
    // While the service holds the state directory, enroll and reset refuse to touch it.
    for args in [&["enroll"][..], &["reset", "--yes"][..]] {
        let output = run(command(&sandbox, args)).await;
        expect_code(&output, 1);
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(said.contains("another onboard-agent holds"), "{said}");
    }
    assert!(sandbox.state_dir().join("device-key.pem").exists());
    let (code, log) = tokio::task::spawn_blocking(move || agent.stop(Signal::SIGTERM))
        .await
        .unwrap();
    assert_eq!(code.code(), Some(0), "{log}");
    assert!(!log.contains(&ums.key_value(ids[0]).await));
    let device = ums.devices().await.pop().unwrap();
    assert!(device.inventory.is_some());
    ums.stop().await;
}

/// Two key files; the first one's only key was refused before (taken by another device). `run`
/// and `enroll` share one driver, so both go on to the second key file and enroll with it, where
/// `enroll` used to give up on the first; and `run` goes on to the second within one step when the
/// first one's key is refused during the pass, where it used to stop until a file changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_first_key_file_spent_run_and_enroll_both_enroll_with_the_second() {
    use crate::rig::{Agent, settings};

    let ums = Ums::start().await;
    let taken = ums.create(KeyKind::OneTime, 1, None).await;
    let mass = ums.create(KeyKind::MassDeployment, 1, None).await;
    let spent = ums.export(&taken, vec![ums.server()]).await;
    let good = ums.export(&mass, vec![ums.server()]).await;
    let other_root = tempfile::tempdir().unwrap();
    let other_state = tempfile::tempdir().unwrap();
    plug_in(other_root.path(), &spent);
    let other = Agent::start(settings(
        "00E0C5000001",
        other_root.path(),
        other_state.path(),
    ));
    other.wait_enrolled().await;
    other.stop().await.unwrap();

    // Stick A (the spent key file) first; the device learns that its key is refused.
    let stick = |root: &std::path::Path, name: &str, file: &onboard_protocol::KeyFile| {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("icg.xml"), file.write(Format::Xml)).unwrap();
    };

    // Through `enroll`.
    let sandbox = Sandbox::new();
    let media = sandbox.path().join("media");
    stick(&media, "A", &spent);
    let enroll = || {
        let mut enroll = command(
            &sandbox,
            &["enroll", "--mount-root", media.to_str().unwrap()],
        );
        enroll.env("RUST_LOG", "info");
        enroll
    };
    let output = run(enroll()).await;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("no key left to present"), "{stderr}");
    stick(&media, "B", &good);
    let output = run(enroll()).await;
    let stdout = expect_code(&output, 0);
    assert!(stdout.contains(&format!("enrolled as {UNIT}")), "{stdout}");

    // Through `run`: the same two sticks, the same refusal remembered from a first start.
    let root = tempfile::tempdir().unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    stick(root.path(), "A", &spent);
    let unit = "00E0C5000002";
    let agent = Agent::start(settings(unit, root.path(), state_dir.path()));
    agent
        .wait_for("failed", |state| {
            matches!(state.phase, onboard_agent::lifecycle::Phase::Failed { .. })
        })
        .await;
    agent.stop().await.unwrap();
    stick(root.path(), "B", &good);
    let agent = Agent::start(settings(unit, root.path(), state_dir.path()));
    let state = agent.wait_enrolled().await;
    assert_eq!(state.key_type, Some(KeyKind::MassDeployment));
    agent.stop().await.unwrap();

    // A third device with both sticks in from the start, nothing refused before: the first
    // stick's key is refused during the pass and the driver goes on to the second at once.
    let root = tempfile::tempdir().unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    stick(root.path(), "A", &spent);
    stick(root.path(), "B", &good);
    let agent = Agent::start(settings("00E0C5000003", root.path(), state_dir.path()));
    let state = agent.wait_enrolled().await;
    assert_eq!(state.key_type, Some(KeyKind::MassDeployment));
    assert_eq!(agent.observer.passes(), 2, "one pass per key file");
    agent.stop().await.unwrap();

    // All three enrolled with the mass key; the taken key was presented once by each, no more.
    assert_eq!(ums.usage(mass[0]).await.0, 3);
    let refusals = ums
        .audit()
        .await
        .into_iter()
        .filter(|entry| entry.outcome == "key_used")
        .count();
    assert_eq!(refusals, 3);
    ums.stop().await;
}
