//! The device's facts for the inventory report, read from the files Linux keeps them in: host name
//! and kernel from `/proc/sys/kernel`, OS name and version from `/etc/os-release`, the CPU model
//! from `/proc/cpuinfo`, memory from `/proc/meminfo`, and the physical NICs from sysfs (the same
//! reading the unit ID comes from, [`crate::nic::read_interfaces`]).
//!
//! What the system says is not trusted to fit: [`Inventory::fitted`] cuts it to the protocol's
//! bounds before it is sent. Sending is [`crate::enroll::Enroller::report_inventory`].

use std::path::Path;

use onboard_protocol::{Inventory, Nic};

/// Gathers the facts of this device. Blocking (reads /proc, /etc and /sys): call it off the
/// runtime.
pub fn gather() -> Inventory {
    gather_from(Path::new("/"))
}

/// Gathers the facts from the file system under `root` (`/` on a device). A file that is missing
/// or unreadable leaves its fact out.
pub fn gather_from(root: &Path) -> Inventory {
    let read = |path: &str| std::fs::read_to_string(root.join(path)).ok();
    let first_line = |path: &str| {
        read(path)
            .and_then(|text| text.lines().next().map(|line| line.trim().to_owned()))
            .filter(|line| !line.is_empty())
    };
    let os_release = read("etc/os-release").or_else(|| read("usr/lib/os-release"));
    let field = |name: &str| {
        os_release
            .as_deref()
            .and_then(|text| os_release_field(text, name))
    };
    let mut nics: Vec<Nic> = crate::nic::read_interfaces(&root.join("sys"))
        .map(|found| found.nics)
        .unwrap_or_default()
        .into_iter()
        .map(|nic| Nic {
            name: nic.name,
            mac: mac_text(nic.mac.as_str()),
        })
        .collect();
    nics.sort_by(|a, b| a.name.cmp(&b.name));
    Inventory {
        host_name: first_line("proc/sys/kernel/hostname").unwrap_or_else(|| "unknown".to_owned()),
        os_name: field("NAME"),
        os_version: field("VERSION_ID"),
        kernel: first_line("proc/sys/kernel/osrelease"),
        cpu_model: read("proc/cpuinfo").and_then(|text| cpu_model(&text)),
        memory_bytes: read("proc/meminfo")
            .and_then(|text| memory_bytes(&text))
            .unwrap_or(0),
        nics,
    }
    .fitted()
}

/// The value of `name` in an os-release file, read as the shell would: the last assignment wins;
/// `NAME="Debian GNU/Linux"` gives the text between the quotes with its backslash escapes undone,
/// `NAME='a\b'` the text between single quotes as it stands.
fn os_release_field(text: &str, name: &str) -> Option<String> {
    let value = text.lines().rev().find_map(|line| {
        let (key, value) = line.trim().split_once('=')?;
        (key == name).then_some(value.trim())
    })?;
    let value = match value.as_bytes() {
        [b'\'', .., b'\''] if value.len() >= 2 => value[1..value.len() - 1].to_owned(),
        [b'"', .., b'"'] if value.len() >= 2 => {
            let mut out = String::with_capacity(value.len());
            let mut chars = value[1..value.len() - 1].chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next()),
                    c => out.push(c),
                }
            }
            out
        }
        _ => value.to_owned(),
    };
    Some(value).filter(|text| !text.trim().is_empty())
}

/// The CPU model from `/proc/cpuinfo`: `model name` (x86), else `Hardware` or `Processor` (older
/// ARM kernels), else the implementer and part codes most AArch64 kernels give instead
/// (`ARM implementer 0x41 part 0xd08`).
fn cpu_model(text: &str) -> Option<String> {
    let field = |wanted: &str| {
        text.lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == wanted).then(|| value.trim().to_owned())
            })
            .filter(|value| !value.is_empty())
    };
    ["model name", "Hardware", "Processor"]
        .into_iter()
        .find_map(field)
        .or_else(|| {
            let implementer = field("CPU implementer")?;
            let part = field("CPU part").unwrap_or_else(|| "unknown".to_owned());
            Some(format!("ARM implementer {implementer} part {part}"))
        })
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
fn memory_bytes(text: &str) -> Option<u64> {
    let rest = text
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?;
    let mut words = rest.split_whitespace();
    let amount: u64 = words.next()?.parse().ok()?;
    let unit = match words.next() {
        Some("kB") => 1024,
        None => 1,
        Some(_) => return None,
    };
    amount.checked_mul(unit)
}

/// A MAC held as a unit ID (`00E0C5A1B2C3`) as the inventory shows it: `00:e0:c5:a1:b2:c3`.
fn mac_text(unit_id: &str) -> String {
    let lower = unit_id.to_ascii_lowercase();
    let pairs: Vec<&str> = (0..lower.len())
        .step_by(2)
        .filter_map(|at| lower.get(at..at + 2))
        .collect();
    pairs.join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machines_facts_pass_the_servers_checks() {
        let inventory = gather();
        inventory.validate().unwrap();
        assert!(!inventory.host_name.is_empty());
        assert!(inventory.memory_bytes > 0, "{inventory:?}");
        assert!(inventory.kernel.is_some(), "{inventory:?}");
    }

    #[test]
    fn os_release_values_are_unquoted_and_unescaped() {
        let text = "PRETTY_NAME=\"IGEL OS 12\"\nNAME=\"IGEL \\\"OS\\\"\"\nVERSION_ID='12.4'\nID=igel\nEMPTY=\"\"\nSINGLE='a\\b'\nID=igel-os\n";
        let table = [
            ("NAME", Some("IGEL \"OS\"")),
            ("VERSION_ID", Some("12.4")),
            ("ID", Some("igel-os")),
            ("SINGLE", Some("a\\b")),
            ("EMPTY", None),
            ("MISSING", None),
        ];
        for (name, value) in table {
            assert_eq!(os_release_field(text, name).as_deref(), value, "{name}");
        }
    }

    #[test]
    fn the_cpu_model_comes_from_the_first_line_that_names_it() {
        let table = [
            (
                "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nmodel name\t: other\n",
                Some("AMD EPYC 7B13"),
            ),
            (
                "Processor\t: ARMv7 rev 4\nHardware\t: BCM2835\n",
                Some("BCM2835"),
            ),
            (
                "processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\nModel\t\t: Pi 4\n",
                Some("ARM implementer 0x41 part 0xd08"),
            ),
            ("Processor\t: ARMv7 rev 4\n", Some("ARMv7 rev 4")),
            ("model name\t:   \n", None),
            ("", None),
        ];
        for (text, model) in table {
            assert_eq!(cpu_model(text).as_deref(), model, "{text:?}");
        }
    }

    #[test]
    fn memory_is_mem_total_in_bytes() {
        let table = [
            (
                "MemTotal:        8048576 kB\nMemFree: 1 kB\n",
                Some(8_048_576 * 1024),
            ),
            ("MemFree: 1 kB\nMemTotal: 4 kB\n", Some(4096)),
            ("MemTotal: 12\n", Some(12)),
            ("MemTotal: 12 MB\n", None),
            ("MemTotal: lots kB\n", None),
            ("MemTotal: 18446744073709551615 kB\n", None),
            ("", None),
        ];
        for (text, bytes) in table {
            assert_eq!(memory_bytes(text), bytes, "{text:?}");
        }
    }

    #[test]
    fn a_device_tree_gives_every_fact_and_missing_files_leave_theirs_out() {
        let root = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| {
            let path = root.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        let bare = gather_from(root.path());
        assert_eq!(bare.host_name, "unknown");
        assert_eq!(bare.os_name, None);
        assert_eq!(bare.kernel, None);
        assert_eq!(bare.memory_bytes, 0);
        assert!(bare.nics.is_empty());

        write("proc/sys/kernel/hostname", "tc-0042\n");
        write("proc/sys/kernel/osrelease", "6.6.0-igel\n");
        write("etc/os-release", "NAME=\"IGEL OS\"\nVERSION_ID=12.4\n");
        write("proc/cpuinfo", "model name\t: Intel Celeron J4105\n");
        write("proc/meminfo", "MemTotal: 4 kB\n");
        // A physical NIC (a device link) and a virtual one (none).
        write("sys/devices/pci0000:00/0000:00:1f.6/vendor", "0x8086\n");
        write("sys/class/net/eno1/address", "00:E0:C5:A1:B2:C3\n");
        write("sys/class/net/eno1/type", "1\n");
        std::os::unix::fs::symlink(
            root.path().join("sys/devices/pci0000:00/0000:00:1f.6"),
            root.path().join("sys/class/net/eno1/device"),
        )
        .unwrap();
        write("sys/class/net/docker0/address", "02:42:ac:11:00:01\n");
        write("sys/class/net/docker0/type", "1\n");
        let facts = gather_from(root.path());
        assert_eq!(
            facts.nics,
            [Nic {
                name: "eno1".to_owned(),
                mac: "00:e0:c5:a1:b2:c3".to_owned(),
            }]
        );
        assert_eq!(facts.host_name, "tc-0042");
        assert_eq!(facts.kernel.as_deref(), Some("6.6.0-igel"));
        assert_eq!(facts.os_name.as_deref(), Some("IGEL OS"));
        assert_eq!(facts.os_version.as_deref(), Some("12.4"));
        assert_eq!(facts.cpu_model.as_deref(), Some("Intel Celeron J4105"));
        assert_eq!(facts.memory_bytes, 4096);
    }

    #[test]
    fn a_mac_is_shown_in_lower_case_pairs() {
        assert_eq!(mac_text("00E0C5A1B2C3"), "00:e0:c5:a1:b2:c3");
    }
}
