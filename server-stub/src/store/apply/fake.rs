//! An in-memory transaction for the tests of `apply.rs`: rows, the audit log, queued commands,
//! and a log of every row operation in the order it happened.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use onboard_protocol::admin::{KeyId, KeyStatus};
use onboard_protocol::{KeyKind, UnitId};
use time::OffsetDateTime;

use crate::ca::IssuedCertificate;
use crate::claim;
use crate::store::error::StoreError;
use crate::store::rows::{AuditEntry, DeviceRecord};
use crate::store::tx::{KeyChange, KeyForChange, KeyForClaim, KeyInsert, Seen, Tx};
use crate::vault::LookupDigest;

/// A key of the fake database.
#[derive(Debug, Clone)]
pub(super) struct Key {
    pub(super) row: KeyForClaim,
    pub(super) lookup: LookupDigest,
    pub(super) status: KeyStatus,
    pub(super) comment: String,
}

/// An in-memory transaction: rows, the audit log, queued commands, and a log of every row
/// operation and signature in the order they happened.
#[derive(Default)]
pub(super) struct Fake {
    pub(super) keys: Vec<Key>,
    pub(super) devices: Vec<DeviceRecord>,
    pub(super) audit: Vec<AuditEntry>,
    pub(super) commands: Vec<(String, UnitId, String)>,
    pub(super) log: Arc<Mutex<Vec<String>>>,
    /// Keys whose consume guard refuses whatever the rule decided (a bug above it, or a race).
    pub(super) guard_refuses: HashSet<KeyId>,
}

impl Fake {
    fn note(&self, what: impl Into<String>) {
        self.log.lock().unwrap().push(what.into());
    }

    pub(super) fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub(super) fn key(
        &mut self,
        lookup: u8,
        kind: KeyKind,
        bound_to: Option<&UnitId>,
        used: bool,
    ) -> KeyId {
        let id = self.keys.len() as KeyId + 1;
        self.keys.push(Key {
            row: KeyForClaim {
                id,
                kind,
                bound_to: bound_to.cloned(),
                active: true,
                usage_count: u64::from(used),
                limits: claim::Limits::default(),
                folder: None,
            },
            lookup: [lookup; 32],
            status: claim::stored_status(kind, true, u64::from(used)),
            comment: String::new(),
        });
        id
    }

    pub(super) fn audit_lines(&self) -> Vec<(String, String, String)> {
        self.audit
            .iter()
            .map(|entry| {
                (
                    entry.event.clone(),
                    entry.outcome.clone(),
                    entry.detail.clone(),
                )
            })
            .collect()
    }
}

impl Tx for Fake {
    fn corrupt(&self, reason: String) -> StoreError {
        StoreError::Corrupt {
            database: "fake".to_owned(),
            reason,
        }
    }

    async fn key_for_claim(
        &mut self,
        lookup: &LookupDigest,
    ) -> Result<Option<KeyForClaim>, StoreError> {
        self.note("key");
        Ok(self
            .keys
            .iter()
            .find(|key| &key.lookup == lookup)
            .map(|key| key.row.clone()))
    }

    async fn device_for_update(
        &mut self,
        unit_id: &UnitId,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        self.note("device");
        Ok(self.devices.iter().find(|d| &d.unit_id == unit_id).cloned())
    }

    async fn consume_key(
        &mut self,
        id: KeyId,
        status: KeyStatus,
        _at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.note(format!("consume {id}"));
        if self.guard_refuses.contains(&id) {
            return Ok(false);
        }
        let key = self.keys.iter_mut().find(|key| key.row.id == id).unwrap();
        key.row.usage_count += 1;
        key.status = status;
        Ok(true)
    }

    async fn put_device(&mut self, device: &DeviceRecord) -> Result<(), StoreError> {
        self.note("put device");
        self.devices.retain(|d| d.unit_id != device.unit_id);
        self.devices.push(device.clone());
        Ok(())
    }

    async fn replace_certificate(
        &mut self,
        unit_id: &UnitId,
        public_key: &[u8],
        issued: &IssuedCertificate,
        previous_serial: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.note("replace certificate");
        let device = self
            .devices
            .iter_mut()
            .find(|d| &d.unit_id == unit_id)
            .unwrap();
        device.public_key = public_key.to_vec();
        device.certificate.clone_from(&issued.der);
        device.serial.clone_from(&issued.serial);
        device.not_after = issued.not_after;
        device.previous_serial = Some(previous_serial.to_owned());
        device.last_seen = at;
        Ok(())
    }

    async fn seen(&mut self, unit_id: &UnitId, seen: Seen<'_>) -> Result<(), StoreError> {
        self.note(format!("seen, forget previous {}", seen.forget_previous));
        let device = self
            .devices
            .iter_mut()
            .find(|d| &d.unit_id == unit_id)
            .unwrap();
        device.last_seen = seen.at;
        if seen.forget_previous {
            device.previous_serial = None;
        }
        Ok(())
    }

    async fn insert_keys(
        &mut self,
        keys: &[KeyInsert],
        _created_at: OffsetDateTime,
    ) -> Result<Vec<Option<KeyId>>, StoreError> {
        self.note(format!("insert {}", keys.len()));
        Ok(keys
            .iter()
            .map(|insert| {
                if self.keys.iter().any(|key| key.lookup == insert.key.lookup) {
                    return None;
                }
                let id = self.keys.len() as KeyId + 1;
                self.keys.push(Key {
                    row: KeyForClaim {
                        id,
                        kind: insert.key.kind,
                        bound_to: insert.key.unit_id.clone(),
                        active: true,
                        usage_count: 0,
                        limits: insert.key.limits,
                        folder: insert.key.folder.clone(),
                    },
                    lookup: insert.key.lookup,
                    status: insert.status,
                    comment: insert.key.comment.clone(),
                });
                Some(id)
            })
            .collect())
    }

    async fn audit(&mut self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.note("audit");
        self.audit.push(entry.clone());
        Ok(())
    }

    async fn delete_device(
        &mut self,
        unit_id: &UnitId,
    ) -> Result<Option<Option<String>>, StoreError> {
        self.note("delete device");
        let found = self.devices.iter().position(|d| &d.unit_id == unit_id);
        Ok(found.map(|index| self.devices.remove(index).online_server))
    }

    async fn queue_command(
        &mut self,
        server: &str,
        unit_id: &UnitId,
        command: &str,
        _at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.note(format!("queue {command} on {server}"));
        self.commands
            .push((server.to_owned(), unit_id.clone(), command.to_owned()));
        Ok(())
    }

    async fn keys_for_change(&mut self, ids: &[KeyId]) -> Result<Vec<KeyForChange>, StoreError> {
        self.note("keys for change");
        Ok(self
            .keys
            .iter()
            .filter(|key| ids.contains(&key.row.id))
            .map(|key| KeyForChange {
                id: key.row.id,
                kind: key.row.kind,
                usage_count: key.row.usage_count,
                limits: key.row.limits,
                folder: key.row.folder.clone(),
            })
            .collect())
    }

    async fn change_key(&mut self, id: KeyId, change: KeyChange<'_>) -> Result<(), StoreError> {
        self.note(format!("change {id}"));
        let index = self.keys.iter().position(|key| key.row.id == id).unwrap();
        match change {
            KeyChange::Comment(comment) => comment.clone_into(&mut self.keys[index].comment),
            KeyChange::Active { active, status } => {
                self.keys[index].row.active = active;
                self.keys[index].status = status;
            }
            KeyChange::Terms { limits, folder } => {
                self.keys[index].row.limits = limits;
                self.keys[index].row.folder = folder.cloned();
            }
            KeyChange::Delete => drop(self.keys.remove(index)),
        }
        Ok(())
    }
}
