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
}

impl DeviceAdmin {
    /// Operations on `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
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
            |device| Ok(view(device, &running)),
        )
    }

    /// One enrolled device.
    pub async fn get(&self, unit_id: &UnitId) -> Result<DeviceView, StoreError> {
        let running = self.running().await?;
        self.store
            .device(unit_id)
            .await?
            .map(|device| view(device, &running))
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

    /// How many enrolled devices `filter` matches.
    pub async fn count(&self, filter: &DeviceFilter) -> Result<u64, StoreError> {
        self.store.count_devices_matching(filter).await
    }

    /// Forgets a device so its unit ID may enroll again with a new key pair.
    pub async fn delete(&self, unit_id: &UnitId, actor: &Actor) -> Result<(), StoreError> {
        self.store.delete_device(unit_id, actor).await
    }
}

/// The view of a device record. A stored report that no longer reads (it was validated when it
/// arrived) shows as none rather than failing the whole list.
pub fn view(device: DeviceRecord, running: &HashSet<String>) -> DeviceView {
    let connected_to = device
        .online_server
        .filter(|server| running.contains(server));
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
        last_seen: device.last_seen,
        folder: device.folder,
    }
}
