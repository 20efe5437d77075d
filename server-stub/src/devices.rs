//! Enrolled devices: the list, the delete and the commands to connected devices that the command
//! line runs and the admin API serves, as the typed views of [`onboard_protocol::admin`].
//!
//! A device is online while a server that is running (its heartbeat recent) holds its connector
//! session; a session recorded by a server that stopped beating is not believed.

use std::collections::HashSet;
use std::sync::Arc;

use onboard_protocol::admin::{DeviceView, Page};
use onboard_protocol::connector::Command;
use onboard_protocol::{Inventory, UnitId};

use crate::store::{self, Actor, DeviceFilter, DeviceRecord, PageRequest, Store, StoreError};

/// Why a command was not queued.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The store failed, or has no such device.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No server holds a session of the device.
    #[error("device {0} is not connected; the command is sent only to a connected device")]
    Offline(UnitId),
}

/// Device operations over one store.
#[derive(Debug, Clone)]
pub struct DeviceAdmin {
    store: Arc<dyn Store>,
    /// The server's notion of now: a connected device was last seen now.
    clock: crate::rig::clock::Clock,
}

impl DeviceAdmin {
    /// Operations on `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            clock: crate::rig::clock::Clock::system(),
        }
    }

    /// The same operations, reading now from `clock` (the server's, which a rig may move).
    pub fn with_clock(mut self, clock: crate::rig::clock::Clock) -> Self {
        self.clock = clock;
        self
    }

    /// One page of the enrolled devices `filter` matches, by unit ID.
    pub async fn list(
        &self,
        filter: &DeviceFilter,
        page: &PageRequest<UnitId>,
    ) -> Result<Page<DeviceView, UnitId>, StoreError> {
        let rows = self.store.devices_matching(filter, &page.probe()).await?;
        let running = self.running().await?;
        store::paged(
            rows,
            page.limit,
            |device| device.unit_id.clone(),
            |device| Ok(view(device, &running, self.clock.now())),
        )
    }

    /// One enrolled device.
    pub async fn get(&self, unit_id: &UnitId) -> Result<DeviceView, StoreError> {
        let running = self.running().await?;
        self.store
            .device(unit_id)
            .await?
            .map(|device| view(device, &running, self.clock.now()))
            .ok_or_else(|| StoreError::NotFound(crate::store::Missing::Device(unit_id.clone())))
    }

    /// The names of the servers running now.
    async fn running(&self) -> Result<HashSet<String>, StoreError> {
        Ok(self
            .store
            .servers(crate::cluster::RUNNING_WITHIN)
            .await?
            .into_iter()
            .filter(|server| server.running)
            .map(|server| server.beat.name)
            .collect())
    }

    /// Queues `command` for a connected device; the server holding its session, which delivers
    /// it within [`crate::connector::COMMAND_POLL`]. Audited.
    pub async fn send(
        &self,
        unit_id: &UnitId,
        command: Command,
        actor: &Actor,
    ) -> Result<String, CommandError> {
        // A session recorded by a server that stopped beating is gone (the server releases it
        // when it starts again): nothing is queued for it.
        let device =
            self.store.device(unit_id).await?.ok_or_else(|| {
                StoreError::NotFound(crate::store::Missing::Device(unit_id.clone()))
            })?;
        if let Some(server) = &device.online_server
            && !self.running().await?.contains(server)
        {
            return Err(CommandError::Offline(unit_id.clone()));
        }
        match self
            .store
            .queue_command(unit_id, command.as_str(), actor)
            .await?
        {
            Some(server) => Ok(server),
            None => Err(CommandError::Offline(unit_id.clone())),
        }
    }

    /// The devices `search` finds ([`matches`]) among those `filter` matches, by unit ID: one page after `page.after`, and
    /// how many it finds in all. Reads the whole list, a page of [`SEARCH_CHUNK`] at a time.
    pub async fn search(
        &self,
        search: &str,
        filter: &DeviceFilter,
        page: &PageRequest<UnitId>,
    ) -> Result<Page<DeviceView, UnitId>, StoreError> {
        let running = self.running().await?;
        let needle = search.trim().to_ascii_uppercase();
        let mut found = Vec::new();
        let mut total = 0u64;
        let mut chunk = PageRequest::first(SEARCH_CHUNK);
        loop {
            let rows = self.store.devices_matching(filter, &chunk).await?;
            let last = rows.last().map(|device| device.unit_id.clone());
            let full = rows.len() == SEARCH_CHUNK;
            for device in rows {
                let view = view(device, &running, self.clock.now());
                if !matches(&needle, &view) {
                    continue;
                }
                total += 1;
                let after_start = page
                    .after
                    .as_ref()
                    .is_none_or(|after| view.unit_id > *after);
                if after_start && found.len() <= page.limit {
                    found.push(view);
                }
            }
            match last {
                Some(last) if full => chunk.after = Some(last),
                _ => break,
            }
        }
        let mut listed = store::paged(found, page.limit, |view| view.unit_id.clone(), Ok)?;
        listed.total = Some(total);
        Ok(listed)
    }

    /// How many enrolled devices `filter` matches.
    pub async fn count(&self, filter: &DeviceFilter) -> Result<u64, StoreError> {
        self.store.count_devices_matching(filter).await
    }

    /// Forgets a device so its unit ID may enroll again with a new key pair.
    pub async fn delete(&self, unit_id: &UnitId, actor: &Actor) -> Result<(), StoreError> {
        self.store.delete_device(unit_id, actor).await
    }
}

/// How many devices a search reads from the store at a time.
pub const SEARCH_CHUNK: usize = 1000;

/// Whether a device matches a search (`needle` in uppercase): its unit ID starts with it (`:`,
/// `-` and `.` ignored), or its host name holds it, in any case.
pub fn matches(needle: &str, device: &DeviceView) -> bool {
    if needle.is_empty() {
        return true;
    }
    let bare: String = needle
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect();
    if !bare.is_empty() && device.unit_id.as_str().starts_with(&bare) {
        return true;
    }
    device
        .inventory
        .as_ref()
        .is_some_and(|facts| facts.host_name.to_ascii_uppercase().contains(needle))
}

/// The view of a device record at `now`. A stored report that no longer reads (it was validated
/// when it arrived) shows as none rather than failing the whole list.
pub fn view(
    device: DeviceRecord,
    running: &HashSet<String>,
    now: time::OffsetDateTime,
) -> DeviceView {
    let connected_to = device
        .online_server
        .filter(|server| running.contains(server));
    // A session is closed after the connector's idle time without a word from the device: while
    // it is open, the device is being heard from, so it was last seen now.
    let last_seen = if connected_to.is_some() {
        now.replace_nanosecond(0)
            .unwrap_or(device.last_seen)
            .max(device.last_seen)
    } else {
        device.last_seen
    };
    DeviceView {
        online: connected_to.is_some(),
        connected_to,
        inventory: device
            .inventory
            .as_deref()
            .and_then(|text| serde_json::from_str::<Inventory>(text).ok()),
        unit_id: device.unit_id,
        serial: device.serial,
        not_after: device.not_after,
        key_type: device.key_kind,
        key_id: device.key_id,
        enrolled_at: device.enrolled_at,
        last_seen,
        folder: device.folder,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(unit_id: &str, host_name: Option<&str>) -> DeviceView {
        DeviceView {
            unit_id: unit_id.parse().unwrap(),
            serial: "01".to_owned(),
            not_after: time::OffsetDateTime::UNIX_EPOCH,
            key_type: onboard_protocol::KeyKind::OneTime,
            key_id: Some(1),
            enrolled_at: time::OffsetDateTime::UNIX_EPOCH,
            last_seen: time::OffsetDateTime::UNIX_EPOCH,
            inventory: host_name.map(|name| {
                serde_json::from_value(serde_json::json!({"host_name": name})).unwrap()
            }),
            online: false,
            connected_to: None,
            folder: None,
        }
    }

    #[test]
    fn a_search_finds_a_unit_id_by_its_start_or_a_host_name_by_any_part() {
        let named = device("00E0C5540B8B", Some("Lab-PC-17"));
        let unnamed = device("02E0C5000001", None);
        let table: &[(&str, &DeviceView, bool)] = &[
            ("", &unnamed, true),
            ("00E0C5", &named, true),
            ("00:E0:C5:54", &named, true),
            ("E0C5", &named, false),
            ("PC-17", &named, true),
            ("LAB", &named, true),
            ("PC-18", &named, false),
            ("PC", &unnamed, false),
        ];
        for (needle, device, found) in table {
            assert_eq!(
                matches(needle, device),
                *found,
                "{needle:?} in {}",
                device.unit_id
            );
        }
    }
}
