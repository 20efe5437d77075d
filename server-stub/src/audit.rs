//! The audit log as the command line prints it and the admin API will serve it: the typed views
//! of [`onboard_protocol::admin`], paged by line number.

use std::sync::Arc;

use onboard_protocol::admin::{AuditEntryView, Page};

use crate::store::{self, AuditEntry, AuditFilter, PageRequest, Store, StoreError};

/// Reads the audit log of one store.
#[derive(Debug, Clone)]
pub struct AuditLog {
    store: Arc<dyn Store>,
}

impl AuditLog {
    /// The log of `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// One page of the lines matching `filter`, oldest first.
    pub async fn list(
        &self,
        filter: &AuditFilter,
        page: &PageRequest<i64>,
    ) -> Result<Page<AuditEntryView, i64>, StoreError> {
        let rows = self.store.audit(filter, &page.probe()).await?;
        store::paged(rows, page.limit, |entry| entry.id, |entry| Ok(view(entry)))
    }

    /// How many lines match `filter`.
    pub async fn count(&self, filter: &AuditFilter) -> Result<u64, StoreError> {
        self.store.count_audit(filter).await
    }
}

/// The view of an audit line.
pub fn view(entry: AuditEntry) -> AuditEntryView {
    AuditEntryView {
        id: entry.id,
        at: entry.at,
        event: entry.event,
        actor: entry.actor,
        source: entry.source,
        unit_id: entry.unit_id,
        key_id: entry.key_id,
        outcome: entry.outcome,
        detail: entry.detail,
    }
}
