//! One-shot actions a rig runs on a server in test-rig mode: expire every device certificate now,
//! replace the UMS ID (a rotation drill), make the store unavailable for a while. Each refuses a
//! server not in test-rig mode.

use std::time::Duration;

use anyhow::Context;
use onboard_protocol::Fingerprint;
use onboard_protocol::connector::Command;

use super::{Rig, lock};
use crate::http::Shared;
use crate::store::PageRequest;
use crate::ums_id::UmsId;

/// The rig of `shared`, or why there is none.
fn rig(shared: &Shared) -> anyhow::Result<&Rig> {
    shared
        .rig
        .as_deref()
        .context("the server is not in test-rig mode")
}

/// Makes every device certificate the server issued expired as of now, as the server sees it:
/// the current and previous certificate of each enrolled device. The inventory and the
/// connector refuse them as expired; renewal takes them (within the renewal grace), so devices
/// renew before they are served again. Each device connected here is told to renew now.
/// Returns how many device records changed.
pub async fn expire_certificates(shared: &Shared) -> anyhow::Result<u64> {
    let rig = rig(shared)?;
    let devices = shared.stub.store.devices(&PageRequest::all()).await?;
    {
        let mut expired = lock(&rig.expired);
        for device in &devices {
            expired.insert(device.serial.clone());
            expired.extend(device.previous_serial.clone());
        }
    }
    let told = devices
        .iter()
        .filter(|device| {
            shared
                .connector
                .deliver(&device.unit_id, Command::RenewNow.as_str())
        })
        .count();
    tracing::warn!(
        devices = devices.len(),
        told,
        "test rig: every device certificate expired"
    );
    Ok(devices.len() as u64)
}

/// Replaces the UMS ID the server presents with a fresh one (held in memory only; the data
/// directory, the database and the certificates issued keep the real one): devices pinning the
/// old one refuse it in the handshake, and so burn no key. Returns the new fingerprint.
pub async fn replace_ums_id(shared: &Shared) -> anyhow::Result<Fingerprint> {
    let rig = rig(shared)?;
    let leaf = rig
        .leaf
        .get()
        .context("the server is not serving yet: no TLS certificate to replace")?
        .clone();
    let fresh = tokio::task::spawn_blocking(move || -> anyhow::Result<Fingerprint> {
        let fresh = UmsId::generate()?;
        leaf.present_under(&fresh)?;
        Ok(fresh.fingerprint())
    })
    .await??;
    tracing::warn!(fingerprint = %fresh, "test rig: the server presents a chain under a fresh UMS ID");
    Ok(fresh)
}

/// Answers as a server whose database is unreachable for `how_long` (from now): 503
/// `unavailable` with `Retry-After` (the time left) on every route the fault plan classes (all
/// the server serves: devices', admin API, Web App), and `/readyz` not ready.
pub fn store_unavailable(shared: &Shared, how_long: Duration) -> anyhow::Result<()> {
    let rig = rig(shared)?;
    *lock(&rig.unavailable_until) = Some(tokio::time::Instant::now() + how_long);
    tracing::warn!(?how_long, "test rig: the store answers as unreachable");
    Ok(())
}
