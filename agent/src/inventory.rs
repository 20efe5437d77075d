//! The device's facts for the inventory report, gathered with sysinfo: host name, OS name and
//! version, kernel, CPU model, memory, and the NICs with a hardware address.
//!
//! What the system says is not trusted to fit: [`Inventory::fitted`] cuts it to the protocol's
//! bounds before it is sent. Sending is [`crate::enroll::Enroller::report_inventory`].

use onboard_protocol::{Inventory, Nic};
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, Networks, RefreshKind, System};

/// Gathers the facts of this device. Blocking (reads /proc and /sys): call it off the runtime.
pub fn gather() -> Inventory {
    let system = System::new_with_specifics(
        RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing())
            .with_memory(MemoryRefreshKind::nothing().with_ram()),
    );
    let mut nics: Vec<Nic> = Networks::new_with_refreshed_list()
        .iter()
        .filter(|(_, data)| !data.mac_address().is_unspecified())
        .map(|(name, data)| Nic {
            name: name.clone(),
            mac: data.mac_address().to_string().to_ascii_lowercase(),
        })
        .collect();
    nics.sort_by(|a, b| a.name.cmp(&b.name));
    let host_name = System::host_name()
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    Inventory {
        host_name,
        os_name: System::name(),
        os_version: System::os_version(),
        kernel: System::kernel_version(),
        cpu_model: system
            .cpus()
            .first()
            .map(|cpu| cpu.brand().trim().to_owned()),
        memory_bytes: system.total_memory(),
        nics,
    }
    .fitted()
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
}
