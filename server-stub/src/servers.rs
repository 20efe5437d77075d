//! The UMS ID status table: every server sharing the database, from their heartbeats.

use onboard_protocol::admin::ServerView;

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
