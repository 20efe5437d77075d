//! Enrolled devices: the list and the delete the command line runs and the admin API will serve,
//! as the typed views of [`onboard_protocol::admin`].

use std::sync::Arc;

use onboard_protocol::admin::{DeviceView, Page};
use onboard_protocol::{Inventory, UnitId};

use crate::store::{self, Actor, DeviceRecord, PageRequest, Store, StoreError};

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

    /// One page of the enrolled devices, by unit ID.
    pub async fn list(
        &self,
        page: &PageRequest<UnitId>,
    ) -> Result<Page<DeviceView, UnitId>, StoreError> {
        let rows = self.store.devices(&page.probe()).await?;
        store::paged(
            rows,
            page.limit,
            |device| device.unit_id.clone(),
            |device| Ok(view(device)),
        )
    }

    /// One enrolled device.
    pub async fn get(&self, unit_id: &UnitId) -> Result<DeviceView, StoreError> {
        self.store
            .device(unit_id)
            .await?
            .map(view)
            .ok_or_else(|| StoreError::NotFound(crate::store::Missing::Device(unit_id.clone())))
    }

    /// How many devices are enrolled.
    pub async fn count(&self) -> Result<u64, StoreError> {
        self.store.count_devices().await
    }

    /// Forgets a device so its unit ID may enroll again with a new key pair.
    pub async fn delete(&self, unit_id: &UnitId, actor: &Actor) -> Result<(), StoreError> {
        self.store.delete_device(unit_id, actor).await
    }
}

/// The view of a device record. A stored report that no longer reads (it was validated when it
/// arrived) shows as none rather than failing the whole list.
pub fn view(device: DeviceRecord) -> DeviceView {
    DeviceView {
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
    }
}
