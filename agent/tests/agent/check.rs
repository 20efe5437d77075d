//! `onboard-agent check STICK_OR_FILE` against in-process `ums-stub` servers: a good key, a used
//! key, a server with another UMS ID (wrong pin), one that is down, keys never shown in clear,
//! nothing consumed, and the exit codes.

use std::process::{Command, Output, Stdio};

use onboard_protocol::{Format, KeyKind};
use serde_json::Value;

use crate::rig::{Ums, plug_in};
use crate::util::{Sandbox, expect_code};

const UNIT: &str = "00E0C5540B8B";
const OTHER_UNIT: &str = "00E0C5540B8C";

/// Runs the binary off the runtime (the servers it talks to run on it).
async fn run(command: Command) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut command = command;
        command.stdin(Stdio::null()).output().unwrap()
    })
    .await
    .unwrap()
}

fn command(sandbox: &Sandbox, unit: &str, args: &[&str]) -> Command {
    let mut command = sandbox.command(&["--unit-id", unit]);
    command.args(args);
    command
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stick_is_checked_per_server_and_key_without_using_a_key() {
    let ums = Ums::start().await;
    let impostor = Ums::start().await;
    let ids = ums.create(KeyKind::OneTime, 2, None).await;
    let (good, used) = (ids[0], ids[1]);
    let down = onboard_protocol::Server::new("127.0.0.1", closed_port()).unwrap();
    let servers = vec![ums.server(), impostor.server(), down.clone()];

    // The stick is made; then another device, with a stick of its own, uses the second key.
    let sandbox = Sandbox::new();
    let stick = plug_in(
        &sandbox.path().join("media"),
        &ums.export(&ids, servers.clone()).await,
    );
    let elsewhere = Sandbox::new();
    let its_stick = plug_in(
        &elsewhere.path().join("media"),
        &ums.export(&[used], vec![ums.server()]).await,
    );
    let output = run(command(
        &elsewhere,
        OTHER_UNIT,
        &["enroll", its_stick.to_str().unwrap()],
    ))
    .await;
    expect_code(&output, 0);
    assert_eq!(ums.usage(used).await, (1, "used".to_owned()));

    let output = run(command(
        &sandbox,
        UNIT,
        &["check", stick.to_str().unwrap(), "--json"],
    ))
    .await;
    let stdout = expect_code(&output, 0);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["unit_id"], UNIT);
    assert_eq!(report["keys_accepted"], 1);
    let file = &report["key_files"][0];
    assert_eq!(file["fingerprint"], ums.fingerprint().to_string());
    let servers_seen = file["servers"].as_array().unwrap();
    assert_eq!(servers_seen.len(), 3, "{stdout}");
    // The right server: the good key accepted, the used one key_used; by number, masked.
    assert_eq!(servers_seen[0]["server"], ums.server().to_string());
    assert_eq!(servers_seen[0]["status"], "checked");
    let results = servers_seen[0]["keys"].as_array().unwrap();
    assert_eq!(
        (&results[0]["number"], &results[0]["accepted"]),
        (&Value::from(1), &Value::from(true)),
        "{stdout}"
    );
    assert_eq!(
        (&results[1]["number"], &results[1]["code"]),
        (&Value::from(2), &Value::from("key_used")),
        "{stdout}"
    );
    // A server whose chain is not the file's UMS ID gets no key; one that is down is said so.
    assert_eq!(servers_seen[1]["status"], "pin_refused", "{stdout}");
    assert!(servers_seen[1]["keys"].as_array().unwrap().is_empty());
    assert_eq!(servers_seen[2]["status"], "unreachable", "{stdout}");

    // Nothing was used up, nothing written on this device, and the good key still enrolls.
    assert_eq!(ums.usage(good).await, (0, "active".to_owned()));
    assert_eq!(ums.devices().await.len(), 1);
    assert!(
        !sandbox.state_dir().join("state.json").exists(),
        "check writes no state"
    );
    let impostor_audit = impostor.audit().await;
    assert!(
        impostor_audit.iter().all(|line| line.event != "check"),
        "the impostor was asked nothing: {impostor_audit:?}"
    );

    // The table, as a person reads it: keys masked, never in clear.
    let output = run(command(&sandbox, UNIT, &["check", stick.to_str().unwrap()])).await;
    let table = expect_code(&output, 0);
    let everything = format!("{table}{}", String::from_utf8_lossy(&output.stderr));
    for id in &ids {
        let value = ums.key_value(*id).await;
        assert!(
            !everything.contains(&value),
            "key {id} in clear:\n{everything}"
        );
        let masked = format!("*************{}", &value[value.len() - 4..]);
        assert!(table.contains(&masked), "{table}");
    }
    for words in [
        "accepted",
        "key_used",
        "PIN REFUSED",
        "UNREACHABLE",
        "1 of 2 keys would be accepted",
    ] {
        assert!(table.contains(words), "{words:?} not in\n{table}");
    }

    let output = run(command(
        &sandbox,
        UNIT,
        &["enroll", stick.to_str().unwrap()],
    ))
    .await;
    expect_code(&output, 0);
    assert_eq!(ums.usage(good).await, (1, "used".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_that_would_work_and_no_valid_key_file_have_their_own_exit_codes() {
    let ums = Ums::start().await;
    let impostor = Ums::start().await;
    let ids = ums.create(KeyKind::OneTime, 1, None).await;
    let bound = ums.create(KeyKind::DeviceBound, 1, Some(OTHER_UNIT)).await;
    let sandbox = Sandbox::new();

    // A key bound to another unit: checked, refused, exit 3; for that unit (--unit-id), exit 0.
    let file = sandbox.path().join("bound.xml");
    std::fs::write(
        &file,
        ums.export(&bound, vec![ums.server()])
            .await
            .write(Format::Xml),
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let output = run(command(&sandbox, UNIT, &["check", path])).await;
    let table = expect_code(&output, 3);
    assert!(table.contains("key_bound_to_other_device"), "{table}");
    let output = run(command(&sandbox, OTHER_UNIT, &["check", path])).await;
    expect_code(&output, 0);

    // Good keys, but only the wrong server and a dead one: exit 3.
    let file = sandbox.path().join("wrong.txt");
    let servers = vec![
        impostor.server(),
        onboard_protocol::Server::new("127.0.0.1", closed_port()).unwrap(),
    ];
    std::fs::write(&file, ums.export(&ids, servers).await.write(Format::Text)).unwrap();
    let output = run(command(&sandbox, UNIT, &["check", file.to_str().unwrap()])).await;
    let table = expect_code(&output, 3);
    assert!(table.contains("PIN REFUSED"), "{table}");
    assert_eq!(ums.usage(ids[0]).await, (0, "active".to_owned()));

    // Not a key file: exit 4, naming the problem.
    let file = sandbox.path().join("icg.xml");
    std::fs::write(&file, "<nothing/>").unwrap();
    let output = run(command(&sandbox, UNIT, &["check", file.to_str().unwrap()])).await;
    expect_code(&output, 4);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("icg.xml"), "{stderr}");
    // A folder without one: exit 4 too.
    let empty = sandbox.path().join("empty-stick");
    std::fs::create_dir(&empty).unwrap();
    let output = run(command(&sandbox, UNIT, &["check", empty.to_str().unwrap()])).await;
    expect_code(&output, 4);
    // A path that is not there: exit 1.
    let output = run(command(
        &sandbox,
        UNIT,
        &["check", sandbox.path().join("gone").to_str().unwrap()],
    ))
    .await;
    expect_code(&output, 1);
}
