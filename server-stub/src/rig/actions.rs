//! One-shot actions a rig runs on a server in test-rig mode: expire every device certificate now,
//! replace the UMS ID (a rotation drill), make the store unavailable for a while.
//!
//! Skeleton: the signatures the control listener and [`crate::testing`] call; the fault-injection
//! work fills them in.

use std::time::Duration;

use onboard_protocol::Fingerprint;

use crate::http::Shared;

/// Makes every device certificate the server issued expired as of now, as the server sees it:
/// devices must renew (within the renewal grace) before they are served again. Returns how many
/// device records changed.
pub async fn expire_certificates(shared: &Shared) -> anyhow::Result<u64> {
    let _ = shared;
    anyhow::bail!("expiring every device certificate is not built yet")
}

/// Replaces the UMS ID the server presents with a fresh one: devices pinning the old one refuse
/// it, and must not burn a key on it. Returns the new fingerprint.
pub async fn replace_ums_id(shared: &Shared) -> anyhow::Result<Fingerprint> {
    let _ = shared;
    anyhow::bail!("replacing the UMS ID is not built yet")
}

/// Answers as a server whose database is unreachable for `how_long`: 503 `unavailable` with
/// `Retry-After`, and `/readyz` not ready.
pub fn store_unavailable(shared: &Shared, how_long: Duration) -> anyhow::Result<()> {
    let _ = (shared, how_long);
    anyhow::bail!("making the store unavailable is not built yet")
}
