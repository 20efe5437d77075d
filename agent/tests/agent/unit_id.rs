//! `onboard-agent unit-id` over fake sysfs trees: the IGEL OS 12 rule, persistence, configuration.

use serde_json::Value;

use crate::util::{FakeBus, FakeSysfs, Sandbox, expect_code};

/// Runs `unit-id --json` and returns (unit_id, source, interface).
fn unit_id(sandbox: &Sandbox, sysfs: &FakeSysfs, extra: &[&str]) -> (String, String, Value) {
    let mut args = extra.to_vec();
    let root = sysfs.root_arg();
    args.extend(["unit-id", "--json", "--sysfs-root", &root]);
    let stdout = expect_code(&sandbox.run(&args), 0);
    let json: Value = serde_json::from_str(&stdout).unwrap();
    (
        json["unit_id"].as_str().unwrap().to_owned(),
        json["source"].as_str().unwrap().to_owned(),
        json["interface"].clone(),
    )
}

#[test]
fn pci_wired_beats_pci_wireless_and_a_usb_adapter_and_is_persisted() {
    let sysfs = FakeSysfs::new();
    sysfs.nic("wlp2s0", "a4:c3:f0:11:22:33", FakeBus::Pci(2), true);
    sysfs.nic(
        "enx00e04c680001",
        "00:e0:4c:68:00:01",
        FakeBus::Usb(1),
        false,
    );
    sysfs.nic("enp3s0", "00:e0:c5:54:0b:8b", FakeBus::Pci(3), false);
    sysfs.virtual_nic("lo", "00:00:00:00:00:00", "772");
    let sandbox = Sandbox::new();

    let (id, source, interface) = unit_id(&sandbox, &sysfs, &[]);
    assert_eq!((id.as_str(), source.as_str()), ("00E0C5540B8B", "detected"));
    assert_eq!(interface, "enp3s0");

    let file = std::fs::read_to_string(sandbox.state_dir().join("unit-id.json")).unwrap();
    let json: Value = serde_json::from_str(&file).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["unit_id"], "00E0C5540B8B");

    let (id, source, interface) = unit_id(&sandbox, &sysfs, &[]);
    assert_eq!(
        (id.as_str(), source.as_str()),
        ("00E0C5540B8B", "persisted")
    );
    assert_eq!(interface, "enp3s0");
}

#[test]
fn two_pci_wired_nics_go_by_lexical_order() {
    let sysfs = FakeSysfs::new();
    sysfs.nic("eno2", "00:e0:c5:00:00:02", FakeBus::Pci(0x1f), false);
    sysfs.nic("eno1", "00:e0:c5:00:00:01", FakeBus::Pci(0x1e), false);
    let (id, _, interface) = unit_id(&Sandbox::new(), &sysfs, &[]);
    assert_eq!(id, "00E0C5000001");
    assert_eq!(interface, "eno1");
}

#[test]
fn only_virtual_interfaces_is_an_error_that_says_how_to_configure_one() {
    let sysfs = FakeSysfs::new();
    sysfs.virtual_nic("lo", "00:00:00:00:00:00", "772");
    sysfs.virtual_nic("docker0", "02:42:ac:11:00:01", "1");
    sysfs.virtual_nic("br0", "52:54:00:12:34:56", "1");
    sysfs.virtual_nic("veth1a2b3c", "7e:11:22:33:44:55", "1");
    sysfs.virtual_nic("bond0", "00:e0:c5:54:0b:8b", "1");
    sysfs.virtual_nic("tun0", "00:00:00:00:00:00", "65534");
    let sandbox = Sandbox::new();
    let root = sysfs.root_arg();
    let output = sandbox.run(&["unit-id", "--sysfs-root", &root]);
    expect_code(&output, 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    for word in [
        "no physical network interface",
        "--unit-id",
        "unit_id",
        "docker0",
        "virtual",
    ] {
        assert!(stderr.contains(word), "{word:?} not in {stderr}");
    }
    assert!(!sandbox.state_dir().join("unit-id.json").exists());
}

#[test]
fn no_class_net_at_all_is_the_same_error() {
    let empty = tempfile::tempdir().unwrap();
    let output = Sandbox::new().run(&["unit-id", "--sysfs-root", empty.path().to_str().unwrap()]);
    expect_code(&output, 1);
    assert!(String::from_utf8_lossy(&output.stderr).contains("there are none"));
}

#[test]
fn a_usb_adapter_plugged_in_after_the_first_run_changes_nothing() {
    let sysfs = FakeSysfs::new();
    sysfs.nic("end0", "00:e0:c5:aa:bb:01", FakeBus::Platform, false);
    let sandbox = Sandbox::new();
    let (first, source, _) = unit_id(&sandbox, &sysfs, &[]);
    assert_eq!(
        (first.as_str(), source.as_str()),
        ("00E0C5AABB01", "detected")
    );

    // The adapter would win a fresh detection (USB ranks above a platform device)...
    sysfs.nic(
        "enx00e04c680001",
        "00:e0:4c:68:00:01",
        FakeBus::Usb(2),
        false,
    );
    let (fresh, _, interface) = unit_id(&Sandbox::new(), &sysfs, &[]);
    assert_eq!(fresh, "00E04C680001");
    assert_eq!(interface, "enx00e04c680001");

    // ...but this device already has its unit ID.
    let (again, source, interface) = unit_id(&sandbox, &sysfs, &[]);
    assert_eq!(
        (again.as_str(), source.as_str()),
        ("00E0C5AABB01", "persisted")
    );
    assert_eq!(interface, "end0");
}

#[test]
fn zero_and_multicast_macs_do_not_count() {
    let sysfs = FakeSysfs::new();
    sysfs.nic("eno1", "00:00:00:00:00:00", FakeBus::Pci(1), false);
    sysfs.nic("eno2", "01:00:5e:00:00:01", FakeBus::Pci(2), false);
    sysfs.nic("wlan0", "b8:27:eb:00:00:01", FakeBus::Sdio, true);
    sysfs.nic("usb0", "00:e0:4c:00:00:09", FakeBus::Usb(1), false);
    let (id, _, interface) = unit_id(&Sandbox::new(), &sysfs, &[]);
    // SDIO beats USB, even wireless over wired.
    assert_eq!(
        (id.as_str(), interface.as_str()),
        ("B827EB000001", Some("wlan0"))
    );
}

#[test]
fn a_virtio_nic_counts_as_pci_through_its_parent() {
    let sysfs = FakeSysfs::new();
    sysfs.nic("enx1", "00:e0:4c:00:00:09", FakeBus::Usb(1), false);
    sysfs.nic("eth0", "52:54:00:12:34:56", FakeBus::Virtio(3), false);
    let (_, _, interface) = unit_id(&Sandbox::new(), &sysfs, &[]);
    assert_eq!(interface, "eth0");
}

#[test]
fn a_configured_unit_id_wins_and_is_not_persisted() {
    let sysfs = FakeSysfs::new();
    sysfs.nic("eno1", "00:e0:c5:00:00:01", FakeBus::Pci(1), false);
    let sandbox = Sandbox::new();
    let (id, source, interface) = unit_id(&sandbox, &sysfs, &["--unit-id", "udp1234567890abcde"]);
    assert_eq!(
        (id.as_str(), source.as_str()),
        ("UDP1234567890ABCDE", "configured")
    );
    assert!(interface.is_null());
    assert!(!sandbox.state_dir().join("unit-id.json").exists());

    std::fs::write(sandbox.config(), "unit_id = \"00-E0-C5-54-0B-8B\"\n").unwrap();
    let (id, source, _) = unit_id(&sandbox, &sysfs, &[]);
    assert_eq!(
        (id.as_str(), source.as_str()),
        ("00E0C5540B8B", "configured")
    );
    // The command line wins over the file.
    let (id, _, _) = unit_id(&sandbox, &sysfs, &["--unit-id", "00:11:22:33:44:55"]);
    assert_eq!(id, "001122334455");
}

#[test]
fn a_bad_unit_id_on_the_command_line_is_a_usage_error() {
    let output = Sandbox::new().run(&["--unit-id", "not-a-mac", "unit-id"]);
    expect_code(&output, 2);
    assert!(String::from_utf8_lossy(&output.stderr).contains("12 hex digits"));
}

#[test]
fn plain_output_names_the_source_and_interface() {
    let sysfs = FakeSysfs::new();
    sysfs.nic("eno1", "00:e0:c5:00:00:01", FakeBus::Pci(1), false);
    let root = sysfs.root_arg();
    let stdout = expect_code(&Sandbox::new().run(&["unit-id", "--sysfs-root", &root]), 0);
    assert_eq!(stdout, "00E0C5000001 (detected, interface eno1)\n");
}
