//! `onboard-agent scan PATH`: contents with keys masked, this device's key order, exit codes.

use onboard_agent::key_choice::one_time_offset;
use onboard_protocol::{FirstAuthKey, Format, KeyEntry};
use serde_json::Value;

use crate::util::{
    FINGERPRINT, FakeBus, FakeSysfs, MY_UNIT, OTHER_UNIT, Sandbox, assert_no_secret, expect_code,
    key_file, unit, write_key_file,
};

fn scan_json(sandbox: &Sandbox, args: &[&str], code: i32) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let output = sandbox.run(&all);
    assert_no_secret(&String::from_utf8_lossy(&output.stderr));
    let stdout = expect_code(&output, code);
    assert_no_secret(&stdout);
    serde_json::from_str(&stdout).unwrap()
}

#[test]
fn bound_keys_first_then_one_time_from_the_offset_then_mass() {
    let sandbox = Sandbox::new();
    let file = sandbox.path().join("icg.xml");
    write_key_file(&file, Format::Xml);
    let path = file.to_str().unwrap();
    let json = scan_json(&sandbox, &["--unit-id", MY_UNIT, "scan", path], 0);

    assert_eq!(json["unit_id"], MY_UNIT);
    assert_eq!(json["unit_id_source"], "configured");
    let report = &json["key_files"][0];
    assert_eq!(report["format"], "xml");
    assert_eq!(report["fingerprint"], FINGERPRINT);
    assert_eq!(report["fingerprint_short"], "3f1a9c0e5b...5c6d7e8f90");
    assert_eq!(report["servers"][0], "127.0.0.1:1");

    // Keys in the file: 1 one-time, 2 bound elsewhere, 3 mass, 4 one-time, 5 bound to me,
    // 6 one-time. The one-time keys (1, 4, 6) start at this unit's offset.
    let one_time = [1, 4, 6];
    let offset = one_time_offset(&unit(MY_UNIT), 3);
    let mut expected = vec![5];
    expected.extend((0..3).map(|i| one_time[(offset + i) % 3]));
    expected.push(3);
    let order: Vec<u64> = report["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    assert_eq!(
        order,
        expected.iter().map(|&n| n as u64).collect::<Vec<_>>()
    );
    assert_eq!(json["usable_keys"], 5);

    let keys = report["keys"].as_array().unwrap();
    assert_eq!(keys[1]["type"], "device-bound");
    assert_eq!(keys[1]["unit_id"], OTHER_UNIT);
    assert!(keys[1]["position"].is_null(), "bound elsewhere: never used");
    assert_eq!(keys[4]["position"], 1);
    assert_eq!(keys[2]["type"], "mass");
    assert_eq!(keys[2]["position"], 5);
    assert_eq!(keys[0]["key"], "*************9621");
}

#[test]
fn another_unit_gets_a_different_start_among_many_one_time_keys() {
    // With 50 one-time keys, a handful of units do not all start at the same key.
    let keys: Vec<KeyEntry> = (0..50)
        .map(|n| KeyEntry::one_time(FirstAuthKey::new(format!("{:017}", 10_000 + n)).unwrap()))
        .collect();
    let sandbox = Sandbox::new();
    let file = sandbox.path().join("icg.txt");
    std::fs::write(&file, key_file(keys).write(Format::Text)).unwrap();
    let path = file.to_str().unwrap();
    let mut firsts = std::collections::HashSet::new();
    for n in 0..6 {
        let unit_id = format!("00E0C5540B{n:02X}");
        let json = scan_json(&sandbox, &["--unit-id", &unit_id, "scan", path], 0);
        let order = json["key_files"][0]["order"].as_array().unwrap().clone();
        assert_eq!(order.len(), 50);
        let expected_first = one_time_offset(&unit(&unit_id), 50) + 1;
        assert_eq!(order[0], expected_first as u64);
        firsts.insert(order[0].as_u64().unwrap());
    }
    assert!(firsts.len() >= 3, "{firsts:?}");
}

#[test]
fn plain_output_masks_keys_and_names_the_order() {
    let sandbox = Sandbox::new();
    let stick = sandbox.path().join("stick");
    write_key_file(&stick.join("icg.txt"), Format::Text);
    let output = sandbox.run(&["--unit-id", MY_UNIT, "scan", stick.to_str().unwrap()]);
    let stdout = expect_code(&output, 0);
    assert_no_secret(&stdout);
    for words in [
        "icg.txt: text key file, format 1, 6 keys",
        "servers: 127.0.0.1:1",
        FINGERPRINT,
        "never (bound to another unit)",
        "this device (00E0C5540B8B) would try: #5,",
        "unit ID: 00E0C5540B8B (configured)",
        "usable: 5 key(s)",
    ] {
        assert!(stdout.contains(words), "{words:?} not in\n{stdout}");
    }
}

#[test]
fn only_keys_for_other_units_is_nothing_usable() {
    let sandbox = Sandbox::new();
    let file = sandbox.path().join("icg.xml");
    let keys = vec![KeyEntry::device_bound(
        FirstAuthKey::new("77120954388310499").unwrap(),
        unit(OTHER_UNIT),
    )];
    std::fs::write(&file, key_file(keys).write(Format::Xml)).unwrap();
    let json = scan_json(
        &sandbox,
        &["--unit-id", MY_UNIT, "scan", file.to_str().unwrap()],
        1,
    );
    assert_eq!(json["usable_keys"], 0);
    assert_eq!(json["key_files"][0]["order"], serde_json::json!([]));
    assert!(
        json["reasons"][0]
            .as_str()
            .unwrap()
            .contains("bound to another unit ID")
    );
}

#[test]
fn without_a_unit_id_the_contents_are_listed_and_the_order_is_unknown() {
    let sandbox = Sandbox::new();
    let file = sandbox.path().join("icg.html");
    write_key_file(&file, Format::Html);
    let no_nics = FakeSysfs::new();
    let args = ["scan", file.to_str().unwrap(), "--sysfs-root"];
    let root = no_nics.root_arg();
    let json = scan_json(&sandbox, &[&args[..], &[root.as_str()]].concat(), 1);
    assert!(json["unit_id"].is_null());
    assert!(json["key_files"][0]["order"].is_null());
    assert_eq!(json["key_files"][0]["keys"].as_array().unwrap().len(), 6);
    let reason = json["reasons"][0].as_str().unwrap();
    assert!(
        reason.contains("unit ID is unknown") && reason.contains("--unit-id"),
        "{reason}"
    );

    let output = sandbox.run(&["scan", file.to_str().unwrap(), "--sysfs-root", &root]);
    let stdout = expect_code(&output, 1);
    assert!(stdout.contains("order: unknown (no unit ID)"), "{stdout}");
    assert!(stdout.contains("nothing usable"), "{stdout}");
}

#[test]
fn the_unit_id_comes_from_detection_and_is_not_persisted_by_scan_but_used_once_persisted() {
    let sandbox = Sandbox::new();
    let file = sandbox.path().join("icg.xml");
    write_key_file(&file, Format::Xml);
    let sysfs = FakeSysfs::new();
    sysfs.nic("eno1", "00:e0:c5:54:0b:8b", FakeBus::Pci(1), false);
    let root = sysfs.root_arg();
    let path = file.to_str().unwrap();

    let json = scan_json(&sandbox, &["scan", path, "--sysfs-root", &root], 0);
    assert_eq!(json["unit_id"], MY_UNIT);
    assert_eq!(json["unit_id_source"], "detected");
    assert_eq!(json["interface"], "eno1");
    assert!(!sandbox.state_dir().join("unit-id.json").exists());

    expect_code(&sandbox.run(&["unit-id", "--sysfs-root", &root]), 0);
    let json = scan_json(&sandbox, &["scan", path, "--sysfs-root", &root], 0);
    assert_eq!(json["unit_id_source"], "persisted");
}

#[test]
fn an_empty_folder_or_a_broken_file_is_nothing_usable_with_the_reasons() {
    let sandbox = Sandbox::new();
    let empty = sandbox.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let json = scan_json(
        &sandbox,
        &["--unit-id", MY_UNIT, "scan", empty.to_str().unwrap()],
        1,
    );
    assert_eq!(json["reasons"][0], "no key file found");

    let broken = sandbox.path().join("icg.xml");
    std::fs::write(
        &broken,
        "<first-authentication-keys version=\"1\">\n  <key type=\"one-time\"\n",
    )
    .unwrap();
    let output = sandbox.run(&["--unit-id", MY_UNIT, "scan", broken.to_str().unwrap()]);
    let stdout = expect_code(&output, 1);
    assert!(
        stdout.contains("skipped") && stdout.contains("icg.xml"),
        "{stdout}"
    );
    assert!(stdout.contains("line "), "{stdout}");
    let json = scan_json(
        &sandbox,
        &["--unit-id", MY_UNIT, "scan", broken.to_str().unwrap()],
        1,
    );
    assert!(json["problems"][0]["line"].as_u64().is_some(), "{json}");
}

#[test]
fn a_path_that_does_not_exist_fails_and_usage_errors_exit_2() {
    let sandbox = Sandbox::new();
    let missing = sandbox.path().join("nothing-here");
    let output = sandbox.run(&["--unit-id", MY_UNIT, "scan", missing.to_str().unwrap()]);
    expect_code(&output, 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("nothing-here") && stderr.contains("No such file"),
        "{stderr}"
    );

    expect_code(&sandbox.run(&["scan"]), 2);
    expect_code(&sandbox.run(&["scan", "a", "b"]), 2);
    expect_code(&sandbox.run(&["scan", "--no-such-flag", "a"]), 2);
}

#[test]
fn a_missing_explicit_config_file_is_an_error_naming_it() {
    let sandbox = Sandbox::new();
    let missing = sandbox.path().join("nope.toml");
    let output = std::process::Command::new(crate::util::BIN)
        .env("ONBOARD_AGENT_CONFIG", &missing)
        .args(["--unit-id", MY_UNIT, "unit-id"])
        .output()
        .unwrap();
    expect_code(&output, 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("nope.toml") && stderr.contains("does not exist"),
        "{stderr}"
    );

    std::fs::write(
        sandbox.config(),
        "unit_id = \"00E0C5540B8B\"\nmount_root = [\"/x\"]\n",
    )
    .unwrap();
    let output = sandbox.run(&["unit-id"]);
    expect_code(&output, 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("agent.toml") && stderr.contains("mount_root"),
        "{stderr}"
    );
}
