//! `ums-stub devices`: list enrolled devices (what each reported about itself) and delete one.

use std::io::Write;

use anyhow::Context;
use clap::Subcommand;
use onboard_protocol::UnitId;
use onboard_protocol::admin::DeviceView;
use onboard_protocol::connector::Command;

use super::table::{self, DEFAULT_LIMIT, print_table};
use super::target::Target;
use crate::store::{DeviceFilter, PageRequest};

#[derive(Debug, Subcommand)]
pub(super) enum DevicesCommand {
    /// List enrolled devices by unit ID: whether each is connected (and to which server), what
    /// each last reported about itself (host name, OS and
    /// version, kernel, CPU, memory, NICs; "-" before its first report), when it was last seen,
    /// when it enrolled, key type used, certificate serial and expiry.
    List {
        /// Only devices that landed in this folder or one under it (/Sites holds
        /// /Sites/Berlin).
        #[arg(long, value_name = "PATH", value_parser = super::keys::folder)]
        folder: Option<onboard_protocol::Folder>,
        /// Print at most N devices.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_LIMIT, value_parser = table::page_limit)]
        limit: usize,
        /// Start after this unit ID (the footer of the previous page names it).
        #[arg(long, value_name = "UNIT_ID")]
        after: Option<String>,
        /// Print JSON: {items: [{unit_id, serial, not_after, key_type, key_id, enrolled_at,
        /// last_seen, inventory, online, connected_to, folder}], next_after, total}, inventory null or {host_name, os_name,
        /// os_version, kernel, cpu_model, memory_bytes, nics: [{name, mac}]}.
        #[arg(long)]
        json: bool,
    },
    /// Forget a device so its unit ID can enroll again (after a reset, or for a replaced device).
    /// A connected device is disconnected and not let back in.
    Delete {
        /// The device's unit ID.
        unit_id: String,
    },
    /// Send a command to a connected device, through whichever server holds its connector
    /// session (delivered within a second or so). Exits 1 when the device is not connected.
    Send {
        /// The device's unit ID.
        unit_id: String,
        /// renew-now (renew its certificate now) or inventory-now (report its inventory now).
        #[arg(value_parser = parse_command)]
        command: Command,
    },
}

fn parse_command(text: &str) -> Result<Command, String> {
    text.parse()
}

/// Runs a `devices` command.
pub(super) async fn run(
    command: DevicesCommand,
    target: Target,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        DevicesCommand::List {
            folder,
            limit,
            after,
            json,
        } => {
            let after = after
                .as_deref()
                .map(str::parse::<UnitId>)
                .transpose()
                .context("--after")?;
            let page = target
                .devices(&DeviceFilter { folder }, &PageRequest { limit, after })
                .await?;
            let total = page.total.unwrap_or_default();
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&page)?)?;
                return Ok(());
            }
            let mut rows = vec![
                [
                    "Unit ID",
                    "Online",
                    "Host name",
                    "OS",
                    "Kernel",
                    "CPU",
                    "Memory",
                    "Last seen",
                    "Enrolled at",
                    "Key type",
                    "Folder",
                    "Certificate serial",
                    "Expires",
                    "NICs",
                ]
                .map(str::to_owned),
            ];
            for device in &page.items {
                let [host, os, kernel, cpu, memory, nics] = inventory_cells(device);
                rows.push([
                    device.unit_id.to_string(),
                    device
                        .connected_to
                        .clone()
                        .map_or_else(|| "no".to_owned(), |server| format!("yes ({server})")),
                    host,
                    os,
                    kernel,
                    cpu,
                    memory,
                    table::time(device.last_seen),
                    table::time(device.enrolled_at),
                    device.key_type.as_str().to_owned(),
                    device
                        .folder
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    device.serial.clone(),
                    table::time(device.not_after),
                    nics,
                ]);
            }
            print_table(out, &rows)?;
            table::footer(
                out,
                page.items.len(),
                total,
                ("device", "devices"),
                page.next_after.map(|unit| unit.to_string()),
            )?;
        }
        DevicesCommand::Send { unit_id, command } => {
            let unit_id: UnitId = unit_id.parse()?;
            let server = target.send_command(&unit_id, command).await?;
            writeln!(out, "Sent {command} to device {unit_id} through {server}.")?;
        }
        DevicesCommand::Delete { unit_id } => {
            let unit_id: UnitId = unit_id.parse()?;
            target.delete_device(&unit_id).await?;
            writeln!(
                out,
                "Deleted device {unit_id}; it may enroll again with a new key."
            )?;
        }
    }
    Ok(())
}

/// Host name, OS and version, kernel, CPU, memory and NICs a device last reported, as table
/// cells; `-` where it reported nothing (or has not reported yet).
fn inventory_cells(device: &DeviceView) -> [String; 6] {
    let none = || "-".to_owned();
    let Some(report) = device.inventory.clone() else {
        return std::array::from_fn(|_| none());
    };
    let os = [report.os_name.as_deref(), report.os_version.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let nics = report
        .nics
        .iter()
        .map(|nic| format!("{} {}", nic.name, nic.mac))
        .collect::<Vec<_>>()
        .join(", ");
    let or_none = |text: String| if text.is_empty() { none() } else { text };
    [
        report.host_name,
        or_none(os),
        report.kernel.unwrap_or_else(none),
        report.cpu_model.unwrap_or_else(none),
        memory(report.memory_bytes),
        or_none(nics),
    ]
}

/// Bytes for people: `7.6 GiB`, `512 MiB`; `-` for 0 (unknown).
fn memory(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    match bytes {
        0 => "-".to_owned(),
        b if b >= GIB => format!("{:.1} GiB", b as f64 / GIB as f64),
        b => format!("{} MiB", b.div_ceil(MIB)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_reads_well() {
        assert_eq!(memory(0), "-");
        assert_eq!(memory(512 << 20), "512 MiB");
        assert_eq!(memory(8 << 30), "8.0 GiB");
        assert_eq!(memory(8_162_000_000), "7.6 GiB");
    }
}
