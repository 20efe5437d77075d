//! What the `keys`, `devices`, `audit` and `ums-id show` commands act on: the data directory on
//! this machine, or a running server's admin API. Both answer with the same typed views, so each
//! command prints them one way.

use onboard_protocol::admin::{
    AuditEntryView, CreateKeys, CreatedKeys, DeviceView, EditKey, ExportKeys, ExportServer, KeyId,
    KeyIds, KeyView, Page, UmsIdView,
};
use onboard_protocol::{Format, KeyFile, UnitId};
use reqwest::Method;

use super::remote::{Remote, encode};
use crate::store::{Actor, AuditFilter, DeviceFilter, KeyFilter, PageRequest, Progress};
use crate::stub::Stub;

/// The server a command acts on.
#[derive(Debug)]
pub(super) enum Target {
    /// The data directory on this machine.
    Local(Box<Stub>),
    /// A running server.
    Remote(Remote),
}

/// `key=value` pairs as a query string (empty values left out).
fn query(pairs: &[(&str, Option<String>)]) -> String {
    let joined: Vec<String> = pairs
        .iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={}", encode(v))))
        .collect();
    if joined.is_empty() {
        String::new()
    } else {
        format!("?{}", joined.join("&"))
    }
}

/// A time as a query value, RFC 3339.
fn table_time(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Target {
    /// One page of keys with the total the filter matches; shown in the clear if `show`.
    pub(super) async fn keys(
        &self,
        filter: &KeyFilter,
        page: &PageRequest<KeyId>,
        show: bool,
    ) -> anyhow::Result<Page<KeyView>> {
        match self {
            Target::Local(stub) => {
                let keys = stub.keys();
                let mut listed = keys.list(filter, page, show).await?;
                listed.total = Some(keys.count(filter).await?);
                Ok(listed)
            }
            Target::Remote(remote) => {
                let path = format!(
                    "/api/v1/keys{}",
                    query(&[
                        ("type", filter.kind.map(|k| k.as_str().to_owned())),
                        ("status", filter.status.map(|s| s.as_str().to_owned())),
                        ("unit_id", filter.unit_id.as_ref().map(ToString::to_string)),
                        ("comment", filter.comment.clone()),
                        ("expires_before", filter.expires_before.map(table_time)),
                        ("expires_after", filter.expires_after.map(table_time)),
                        ("limit", Some(page.limit.to_string())),
                        ("after", page.after.map(|a| a.to_string())),
                        ("total", Some("true".to_owned())),
                    ])
                );
                let mut listed: Page<KeyView> = remote.get(&path).await?;
                if show && !listed.items.is_empty() {
                    let ids = KeyIds {
                        ids: listed.items.iter().map(|key| key.id).collect(),
                    };
                    let shown: Vec<KeyView> = remote
                        .call(Method::POST, "/api/v1/keys/reveal", &ids)
                        .await?;
                    listed.items = shown;
                }
                Ok(listed)
            }
        }
    }

    /// Creates keys; the new IDs. A local creation reports progress.
    pub(super) async fn create(
        &self,
        request: CreateKeys,
        progress: Progress,
    ) -> anyhow::Result<Vec<KeyId>> {
        match self {
            Target::Local(stub) => {
                let keys = stub.keys();
                let cli = Actor::cli();
                Ok(keys.create(&request, progress, &cli).await?)
            }
            Target::Remote(remote) => {
                let created: CreatedKeys =
                    remote.call(Method::POST, "/api/v1/keys", &request).await?;
                Ok(created.ids)
            }
        }
    }

    /// Edits a key; the key as edited, masked.
    pub(super) async fn edit(&self, id: KeyId, edit: &EditKey) -> anyhow::Result<KeyView> {
        match self {
            Target::Local(stub) => {
                let keys = stub.keys();
                keys.edit(id, edit, &Actor::cli()).await?;
                Ok(keys.get(id, false).await?)
            }
            Target::Remote(remote) => Ok(remote
                .call(Method::PATCH, &format!("/api/v1/keys/{id}"), edit)
                .await?),
        }
    }

    /// Activates, deactivates or deletes keys (`action`: activate, deactivate, delete).
    pub(super) async fn change(&self, action: &str, ids: &[KeyId]) -> anyhow::Result<()> {
        match self {
            Target::Local(stub) => {
                let keys = stub.keys();
                let cli = Actor::cli();
                match action {
                    "activate" => keys.activate(ids, &cli).await?,
                    "deactivate" => keys.deactivate(ids, &cli).await?,
                    _ => keys.delete(ids, &cli).await?,
                }
                Ok(())
            }
            Target::Remote(remote) => {
                let body = KeyIds { ids: ids.to_vec() };
                remote
                    .act(Method::POST, &format!("/api/v1/keys/{action}"), Some(&body))
                    .await
            }
        }
    }

    /// The key file of `ids` (or of every active key) for `servers` (or the server's public
    /// host).
    pub(super) async fn export(
        &self,
        ids: &[KeyId],
        servers: &[String],
        format: Format,
    ) -> anyhow::Result<KeyFile> {
        match self {
            Target::Local(stub) => {
                let servers = if servers.is_empty() {
                    vec![stub.settings.public_server.clone()]
                } else {
                    servers
                        .iter()
                        .map(|text| crate::keys::parse_server(text))
                        .collect::<Result<_, _>>()?
                };
                Ok(stub
                    .keys()
                    .export(ids, servers, stub.ums_id.fingerprint())
                    .await?)
            }
            Target::Remote(remote) => {
                let servers = servers
                    .iter()
                    .map(|text| crate::keys::parse_server(text).map(|s| ExportServer::from(&s)))
                    .collect::<Result<_, _>>()?;
                let request = ExportKeys {
                    ids: ids.to_vec(),
                    servers,
                    format,
                    filter: None,
                };
                let text = remote.text("/api/v1/keys/export", &request).await?;
                let limits = onboard_protocol::Limits::default();
                Ok(KeyFile::parse_as(text.as_bytes(), format, &limits)?)
            }
        }
    }

    /// One page of the enrolled devices `filter` matches, with their total.
    pub(super) async fn devices(
        &self,
        filter: &DeviceFilter,
        page: &PageRequest<UnitId>,
    ) -> anyhow::Result<Page<DeviceView, UnitId>> {
        match self {
            Target::Local(stub) => {
                let devices = stub.devices();
                let mut listed = devices.list(filter, page).await?;
                listed.total = Some(devices.count(filter).await?);
                Ok(listed)
            }
            Target::Remote(remote) => {
                let path = format!(
                    "/api/v1/devices{}",
                    query(&[
                        ("folder", filter.folder.as_ref().map(ToString::to_string)),
                        ("limit", Some(page.limit.to_string())),
                        ("after", page.after.as_ref().map(ToString::to_string)),
                        ("total", Some("true".to_owned())),
                    ])
                );
                remote.get(&path).await
            }
        }
    }

    /// Forgets an enrolled device.
    pub(super) async fn delete_device(&self, unit_id: &UnitId) -> anyhow::Result<()> {
        match self {
            Target::Local(stub) => Ok(stub.devices().delete(unit_id, &Actor::cli()).await?),
            Target::Remote(remote) => {
                remote
                    .act::<()>(
                        Method::DELETE,
                        &format!("/api/v1/devices/{}", encode(unit_id.as_str())),
                        None,
                    )
                    .await
            }
        }
    }

    /// Sends a command to a connected device; the server holding its session.
    pub(super) async fn send_command(
        &self,
        unit_id: &UnitId,
        command: onboard_protocol::connector::Command,
    ) -> anyhow::Result<String> {
        match self {
            Target::Local(stub) => Ok(stub.devices().send(unit_id, command, &Actor::cli()).await?),
            Target::Remote(remote) => {
                let queued: onboard_protocol::admin::CommandQueued = remote
                    .call(
                        Method::POST,
                        &format!("/api/v1/devices/{}/commands", encode(unit_id.as_str())),
                        &onboard_protocol::admin::SendCommand { command },
                    )
                    .await?;
                Ok(queued.server)
            }
        }
    }

    /// One page of the audit log with its total.
    pub(super) async fn audit(
        &self,
        filter: &AuditFilter,
        page: &PageRequest<i64>,
    ) -> anyhow::Result<Page<AuditEntryView, i64>> {
        match self {
            Target::Local(stub) => {
                let log = stub.audit_log();
                let mut listed = log.list(filter, page).await?;
                listed.total = Some(log.count(filter).await?);
                Ok(listed)
            }
            Target::Remote(remote) => {
                let since = filter
                    .since
                    .map(|at| at.format(&time::format_description::well_known::Rfc3339))
                    .transpose()?;
                let path = format!(
                    "/api/v1/audit{}",
                    query(&[
                        ("since", since),
                        ("unit_id", filter.unit_id.as_ref().map(ToString::to_string)),
                        ("outcome", filter.outcome.clone()),
                        ("actor", filter.actor.clone()),
                        ("limit", Some(page.limit.to_string())),
                        ("after", page.after.map(|a| a.to_string())),
                        ("total", Some("true".to_owned())),
                    ])
                );
                remote.get(&path).await
            }
        }
    }

    /// The UMS ID.
    pub(super) async fn ums_id(&self) -> anyhow::Result<UmsIdView> {
        match self {
            Target::Local(stub) => Ok(stub.ums_id_view()),
            Target::Remote(remote) => remote.get("/api/v1/ums-id").await,
        }
    }
}
