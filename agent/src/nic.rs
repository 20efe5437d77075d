//! The device's network interfaces as sysfs shows them, and the IGEL OS 12 rule that picks the one
//! whose MAC is the unit ID.
//!
//! For each entry of `/sys/class/net`: `address` (the MAC), `type` (1 is Ethernet, which wireless
//! LAN reports too), the `device` link (only physical NICs have one; virtual interfaces such as
//! loopback, bridges, veth, tun/tap, bonds and docker's live under `/sys/devices/virtual` without
//! it), the device's `subsystem` link (`pci`, `sdio`, `usb`, ...) and, for wireless, a `wireless`
//! folder or a `phy80211` link.
//!
//! The rule ([`choose`]): physical NICs with a unicast, non-zero MAC only; bus PCI > SDIO > USB >
//! other; wired over wireless; then the first name in lexical (byte) order. A device on a bus of
//! its own (`virtio` in a VM, say) takes the bus of the nearest ancestor that is on PCI, SDIO or
//! USB; a USB NIC is never taken for PCI, because its own `usb` subsystem is met first.

use std::cmp::Ordering;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use onboard_protocol::UnitId;

/// The bus a NIC sits on, best first.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bus {
    /// Built in, on PCI (or PCIe).
    Pci,
    /// SDIO (built-in wireless on small boards).
    Sdio,
    /// A USB adapter.
    Usb,
    /// Anything else (`platform` on ARM boards, ...), with the subsystem's name.
    Other(String),
}

impl Bus {
    /// The bus named by a sysfs subsystem, if it is one the rule ranks.
    fn ranked(subsystem: &str) -> Option<Bus> {
        match subsystem {
            "pci" => Some(Bus::Pci),
            "sdio" => Some(Bus::Sdio),
            "usb" => Some(Bus::Usb),
            _ => None,
        }
    }

    /// The subsystem name as sysfs spells it.
    pub fn as_str(&self) -> &str {
        match self {
            Bus::Pci => "pci",
            Bus::Sdio => "sdio",
            Bus::Usb => "usb",
            Bus::Other(name) => name,
        }
    }
}

/// A physical network interface with a usable MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// The interface name (`eno1`, `wlp2s0`, `enx00e04c680001`).
    pub name: String,
    /// The MAC as a unit ID.
    pub mac: UnitId,
    /// The bus its device sits on.
    pub bus: Bus,
    /// Whether it is wireless LAN.
    pub wireless: bool,
}

/// Why an interface was passed over; shown when none is usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The interface name.
    pub name: String,
    /// Why it does not count.
    pub reason: &'static str,
}

/// What sysfs shows: the usable NICs and the interfaces passed over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interfaces {
    /// Physical NICs with a usable MAC, in directory order.
    pub nics: Vec<Nic>,
    /// Interfaces that do not count, with the reason.
    pub skipped: Vec<Skipped>,
}

/// `sysfs_root/class/net` could not be listed.
#[derive(Debug, thiserror::Error)]
#[error("cannot list the network interfaces in {}", path.display())]
pub struct SysfsError {
    /// The folder.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// Reads every interface under `sysfs_root/class/net`. A folder that is missing holds no
/// interfaces; an interface that cannot be read is skipped with the reason.
pub fn read_interfaces(sysfs_root: &Path) -> Result<Interfaces, SysfsError> {
    let class = sysfs_root.join("class/net");
    let entries = match fs::read_dir(&class) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Interfaces::default()),
        Err(source) => {
            return Err(SysfsError {
                path: class,
                source,
            });
        }
    };
    let mut found = Interfaces::default();
    for entry in entries {
        let entry = entry.map_err(|source| SysfsError {
            path: class.clone(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        match read_interface(sysfs_root, &entry.path(), &name) {
            Ok(nic) => found.nics.push(nic),
            Err(reason) => found.skipped.push(Skipped { name, reason }),
        }
    }
    found.skipped.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// One interface, or why it does not count.
fn read_interface(sysfs_root: &Path, path: &Path, name: &str) -> Result<Nic, &'static str> {
    // Physical NICs have a `device` link; virtual ones do not, and live under devices/virtual.
    let device = path.join("device");
    if fs::symlink_metadata(&device).is_err() {
        return Err("virtual (no device link)");
    }
    if let Ok(real) = fs::canonicalize(path) {
        let virtual_dir = fs::canonicalize(sysfs_root.join("devices/virtual"));
        if virtual_dir.is_ok_and(|virtual_dir| real.starts_with(virtual_dir)) {
            return Err("virtual (under devices/virtual)");
        }
    }
    let kind = read_trimmed(&path.join("type")).ok_or("no readable type")?;
    if kind != "1" {
        return Err("not Ethernet (type is not 1)");
    }
    let address = read_trimmed(&path.join("address")).ok_or("no readable address")?;
    let octets = parse_mac(&address).ok_or("the address is not a MAC")?;
    if octets == [0; 6] {
        return Err("the MAC is all zeros");
    }
    if octets[0] & 1 == 1 {
        return Err("the MAC is a multicast address");
    }
    let mac: UnitId = address.parse().map_err(|_| "the address is not a MAC")?;
    let wireless =
        path.join("wireless").is_dir() || fs::symlink_metadata(path.join("phy80211")).is_ok();
    Ok(Nic {
        name: name.to_owned(),
        mac,
        bus: bus_of(sysfs_root, &device),
        wireless,
    })
}

/// The bus of `device`: its own subsystem when ranked, else the nearest ranked ancestor's, else
/// its own subsystem's name (or "unknown").
fn bus_of(sysfs_root: &Path, device: &Path) -> Bus {
    let own = subsystem(device);
    if let Some(bus) = own.as_deref().and_then(Bus::ranked) {
        return bus;
    }
    let devices = fs::canonicalize(sysfs_root.join("devices")).ok();
    if let (Ok(real), Some(devices)) = (fs::canonicalize(device), devices) {
        let mut dir = real.parent();
        while let Some(parent) = dir.filter(|dir| dir.starts_with(&devices) && *dir != devices) {
            if let Some(bus) = subsystem(parent).as_deref().and_then(Bus::ranked) {
                return bus;
            }
            dir = parent.parent();
        }
    }
    Bus::Other(own.unwrap_or_else(|| "unknown".to_owned()))
}

/// The name of the subsystem `device/subsystem` links to.
fn subsystem(device: &Path) -> Option<String> {
    let target = fs::read_link(device.join("subsystem")).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_owned())
}

/// Six octets from sysfs's `aa:bb:cc:dd:ee:ff`.
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut octets = [0u8; 6];
    let mut parts = text.split(':');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *octet = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(octets)
}

/// The NIC whose MAC is the unit ID: bus PCI > SDIO > USB > other, wired over wireless, then the
/// first name in lexical order.
pub fn choose(nics: &[Nic]) -> Option<&Nic> {
    nics.iter().min_by(|a, b| rank(a, b))
}

fn rank(a: &Nic, b: &Nic) -> Ordering {
    // Every `Other` bus ranks alike: the rule does not order them among themselves.
    let bus_rank = |nic: &Nic| match nic.bus {
        Bus::Pci => 0,
        Bus::Sdio => 1,
        Bus::Usb => 2,
        Bus::Other(_) => 3,
    };
    bus_rank(a)
        .cmp(&bus_rank(b))
        .then(a.wireless.cmp(&b.wireless))
        .then_with(|| a.name.as_bytes().cmp(b.name.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(name: &str, bus: Bus, wireless: bool) -> Nic {
        Nic {
            name: name.to_owned(),
            mac: "00E0C5540B8B".parse().unwrap(),
            bus,
            wireless,
        }
    }

    #[test]
    fn the_rule_ranks_bus_then_wired_then_name() {
        let other = || Bus::Other("platform".to_owned());
        let table: &[(&[Nic], Option<&str>)] = &[
            (&[], None),
            (
                &[
                    nic("wlp2s0", Bus::Pci, true),
                    nic("enx1", Bus::Usb, false),
                    nic("enp3s0", Bus::Pci, false),
                ],
                Some("enp3s0"),
            ),
            // Bus beats wired: a PCI wireless card beats a USB wired adapter.
            (
                &[nic("enx1", Bus::Usb, false), nic("wlp2s0", Bus::Pci, true)],
                Some("wlp2s0"),
            ),
            (
                &[nic("usb0", Bus::Usb, false), nic("mmc0", Bus::Sdio, true)],
                Some("mmc0"),
            ),
            (
                &[nic("end0", other(), false), nic("usb0", Bus::Usb, true)],
                Some("usb0"),
            ),
            // Same bus and kind: lexical order, by bytes.
            (
                &[nic("eth1", Bus::Pci, false), nic("eth0", Bus::Pci, false)],
                Some("eth0"),
            ),
            (
                &[nic("enp3s0", Bus::Pci, false), nic("eno1", Bus::Pci, false)],
                Some("eno1"),
            ),
            (
                &[nic("eth10", Bus::Pci, false), nic("eth9", Bus::Pci, false)],
                Some("eth10"),
            ),
        ];
        for (nics, expected) in table {
            assert_eq!(
                choose(nics).map(|nic| nic.name.as_str()),
                *expected,
                "{nics:?}"
            );
        }
    }

    #[test]
    fn macs_are_read_as_sysfs_writes_them() {
        assert_eq!(
            parse_mac("00:e0:c5:54:0b:8b"),
            Some([0x00, 0xe0, 0xc5, 0x54, 0x0b, 0x8b])
        );
        for bad in [
            "",
            "00:e0:c5:54:0b",
            "00:e0:c5:54:0b:8b:00",
            "0:e0:c5:54:0b:8b",
            "zz:e0:c5:54:0b:8b",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
