//! The UMS ID status table: every server sharing the database, from their heartbeats; the UMS
//! ID page's view of the Main and Local UMS IDs; and the servers a key export names unless told
//! otherwise.

use onboard_protocol::admin::{ExportServer, ExportServers, LocalUmsId, ServerView, UmsIdView};

use crate::cluster::SyncStatus;

use crate::store::StoreError;
use crate::stub::Stub;

/// One row per server that ever beat, by name. A server that has not beaten yet (a command line
/// on a server machine, a server just started) shows itself.
pub async fn list(stub: &Stub) -> Result<Vec<ServerView>, StoreError> {
    let rows = stub.store.servers(crate::cluster::RUNNING_WITHIN).await?;
    let mut views: Vec<ServerView> = rows
        .into_iter()
        .map(|row| ServerView {
            host_name: row.beat.name,
            server_status: if row.running {
                "Running"
            } else {
                "Not running"
            }
            .to_owned(),
            ums_id_status: row.beat.status.label().to_owned(),
            ums_id_short: row.beat.fingerprint.short(),
            fingerprint: row.beat.fingerprint,
        })
        .collect();
    if views.is_empty() {
        let fingerprint = stub.ums_id.fingerprint();
        views.push(ServerView {
            host_name: stub.settings.public_server.host().to_owned(),
            server_status: "Not running".to_owned(),
            ums_id_status: stub.sync.label().to_owned(),
            ums_id_short: fingerprint.short(),
            fingerprint,
        });
    }
    Ok(views)
}

/// The UMS ID page: the Main UMS ID (on a server not in sync, the one the database holds, which
/// this server could not adopt), how this server stands towards it, and this server's Local UMS
/// ID when that is not the Main one.
pub async fn ums_id_view(stub: &Stub) -> Result<UmsIdView, StoreError> {
    let mut view = match stub.sync {
        SyncStatus::NotInSync => match stub.store.main_ums_id().await? {
            Some(main) => UmsIdView::new(
                main.fingerprint,
                certificate_created_at(&main.certificate_pem)
                    .unwrap_or_else(|| stub.ums_id.created_at()),
            ),
            None => stub.ums_id_view(),
        },
        SyncStatus::Main | SyncStatus::InSync => stub.ums_id_view(),
    };
    view.status = Some(stub.sync.label().to_owned());
    if stub.local_fingerprint != view.fingerprint {
        view.local = Some(LocalUmsId {
            fingerprint: stub.local_fingerprint,
            short: stub.local_fingerprint.short(),
        });
    }
    Ok(view)
}

/// When a certificate (PEM) became valid: when the UMS ID it holds was made.
fn certificate_created_at(pem: &str) -> Option<time::OffsetDateTime> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let certificate = block.parse_x509().ok()?;
    Some(certificate.validity().not_before.to_datetime())
}

/// Why a server does not hand out the Main UMS ID's certificate: it is not in sync, so what the
/// database holds as the Main UMS ID is not one it could open and check, and its own is not the
/// Main one. `None` when it may.
pub fn certificate_refusal(sync: SyncStatus) -> Option<&'static str> {
    match sync {
        SyncStatus::Main | SyncStatus::InSync => None,
        SyncStatus::NotInSync => Some(
            "this server is not in sync with the Main UMS ID (no or a wrong cluster secret): its \
             own UMS ID is not the Main one, and it cannot check the Main UMS ID the database \
             holds; export the certificate from a server in sync, or restart this one with the \
             cluster's secret",
        ),
    }
}

/// The servers a key export names unless told otherwise: this server by its configured public
/// name, else by the name its heartbeat records (this machine's host name and the port it
/// listens on, never a default port); then every other running server in sync.
pub async fn export_servers(
    stub: &Stub,
    own_name: Option<&str>,
) -> Result<ExportServers, StoreError> {
    let rows = stub.store.servers(crate::cluster::RUNNING_WITHIN).await?;
    let others: Vec<(String, bool, SyncStatus)> = rows
        .into_iter()
        .map(|row| (row.beat.name, row.running, row.beat.status))
        .collect();
    let configured = stub
        .settings
        .public_host_set
        .then_some(&stub.settings.public_server);
    Ok(ExportServers {
        servers: suggest(configured, own_name, &others, &stub.settings.public_server),
        public_host_set: stub.settings.public_host_set,
    })
}

/// [`export_servers`]' rule (pure): `configured` first, else `own` (a heartbeat's `HOST:PORT`,
/// unknown before the server listens);
/// then each running server in sync of `table` (name, running, status) once; `fallback` alone if
/// that leaves none.
pub fn suggest(
    configured: Option<&onboard_protocol::Server>,
    own: Option<&str>,
    table: &[(String, bool, SyncStatus)],
    fallback: &onboard_protocol::Server,
) -> Vec<ExportServer> {
    let parse = |name: &str| crate::keys::parse_server(name).ok();
    let mut candidates: Vec<onboard_protocol::Server> = Vec::new();
    match configured {
        Some(server) => candidates.push(server.clone()),
        None => candidates.extend(own.and_then(parse)),
    }
    for (name, running, status) in table {
        if *running && *status != SyncStatus::NotInSync && Some(name.as_str()) != own {
            candidates.extend(parse(name));
        }
    }
    if candidates.is_empty() {
        candidates.push(fallback.clone());
    }
    let mut out: Vec<ExportServer> = Vec::new();
    for server in &candidates {
        let server = ExportServer::from(server);
        if !out.contains(&server) {
            out.push(server);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use onboard_protocol::Server;

    /// The configured server, this server's heartbeat name, the status table, what is named.
    type Case<'a> = (
        Option<&'a Server>,
        Option<&'a str>,
        &'a [(String, bool, SyncStatus)],
        &'a [&'a str],
    );

    fn names(servers: &[ExportServer]) -> Vec<String> {
        servers
            .iter()
            .map(|server| format!("{}:{}", server.host, server.port))
            .collect()
    }

    #[test]
    fn an_export_names_the_configured_or_listening_server_then_the_running_ones_in_sync() {
        let public = Server::new("ums.example.com", 443).unwrap();
        let fallback = Server::new("vm", 8443).unwrap();
        let table = vec![
            ("vm:41234".to_owned(), true, SyncStatus::Main),
            ("b.example.com:8443".to_owned(), true, SyncStatus::InSync),
            ("c.example.com:8443".to_owned(), false, SyncStatus::InSync),
            ("d.example.com:8443".to_owned(), true, SyncStatus::NotInSync),
        ];
        let cases: &[Case] = &[
            // Configured: that name first; this server's own heartbeat name is not repeated.
            (
                Some(&public),
                Some("vm:41234"),
                &table,
                &["ums.example.com:443", "b.example.com:8443"],
            ),
            // Not configured: the port it listens on, never the default port.
            (
                None,
                Some("vm:41234"),
                &table,
                &["vm:41234", "b.example.com:8443"],
            ),
            (None, Some("localhost:5000"), &[], &["localhost:5000"]),
            // Nothing known (no listener yet): the fallback.
            (None, None, &[], &["vm:8443"]),
        ];
        for (configured, own, table, expected) in cases {
            assert_eq!(
                names(&suggest(*configured, *own, table, &fallback)),
                *expected,
                "{configured:?} {own:?}"
            );
        }
    }

    #[test]
    fn only_a_server_not_in_sync_refuses_the_certificate() {
        assert!(certificate_refusal(SyncStatus::Main).is_none());
        assert!(certificate_refusal(SyncStatus::InSync).is_none());
        assert!(
            certificate_refusal(SyncStatus::NotInSync)
                .unwrap()
                .contains("not in sync")
        );
    }
}
