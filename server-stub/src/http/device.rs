//! What enrolled devices do over mutual TLS: the inventory report, and the device connector's
//! WebSocket ([`crate::connector`]). TLS has already checked that the client certificate was
//! issued by the UMS ID; these routes check it is a device's current (or previous) one.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use onboard_protocol::connector::MAX_FRAME_BYTES;
use onboard_protocol::inventory::MAX_INVENTORY_BYTES;
use onboard_protocol::problem::Problem;
use onboard_protocol::routes::{DEVICE_CONNECT, DEVICE_INVENTORY};
use onboard_protocol::{Inventory, ProblemCode, UnitId};

use super::{ApiError, Peer, Shared};
use crate::connector::NoSession;

/// The routes of enrolled devices.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route(DEVICE_INVENTORY, put(inventory))
        .route(DEVICE_CONNECT, get(connect))
}

/// The device certificate a client presented over mutual TLS (TLS has already checked it was
/// issued by the UMS ID, and that it is unexpired or within the renewal grace period).
#[derive(Debug, Clone)]
pub struct DeviceCertificate {
    /// The unit ID it names (subject CN).
    pub unit_id: UnitId,
    /// Its serial, hex.
    pub serial: String,
    /// Its expiry.
    pub not_after: time::OffsetDateTime,
}

/// The device certificate the client presented; `what` names the request in the refusal.
pub(super) fn device_identity(peer: &Peer, what: &str) -> Result<DeviceCertificate, ApiError> {
    let certificate = peer.client_certificate.as_deref().ok_or_else(|| {
        ApiError::code(
            ProblemCode::BadRequest,
            format!("{what} needs mutual TLS with the current device certificate"),
        )
    })?;
    device_certificate(certificate).ok_or_else(|| {
        ApiError::code(
            ProblemCode::BadRequest,
            "the client certificate names no unit ID",
        )
    })
}

/// The certificate is signed by the UMS ID but is not (or no longer) an enrolled device's.
pub(super) fn not_current() -> ApiError {
    ApiError::code(
        ProblemCode::CertificateNotCurrent,
        "this certificate is neither the current nor the previous one of an enrolled device: \
         enroll again with a first-authentication key",
    )
}

async fn inventory(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    body: Bytes,
) -> Response {
    match report_inventory(&shared, &peer, &body).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => {
            if let ApiError::Problem { problem, .. } = &error {
                tracing::debug!(source = %peer.addr.ip(), code = %problem.code, "inventory refused");
            }
            error.into_response()
        }
    }
}

/// Opens the device connector's session: a WebSocket for the device the current (or previous)
/// certificate names, within the sessions' own budget.
async fn connect(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match open_session(&shared, &peer, upgrade).await {
        Ok(response) => response,
        Err(error) => {
            if let ApiError::Problem { problem, .. } = &error {
                tracing::debug!(source = %peer.addr.ip(), code = %problem.code, "device session refused");
            }
            error.into_response()
        }
    }
}

async fn open_session(
    shared: &Arc<Shared>,
    peer: &Peer,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let DeviceCertificate {
        unit_id,
        serial,
        not_after,
    } = device_identity(peer, "the device connector")?;
    if not_after < shared.stub.clock.now() {
        return Err(ApiError::code(
            ProblemCode::BadRequest,
            "the device certificate has expired: renew it (simplereenroll) first",
        ));
    }
    let upgrade = upgrade.map_err(|_| {
        ApiError::code(
            ProblemCode::BadRequest,
            "the device connector is a WebSocket: GET with Upgrade: websocket",
        )
    })?;
    let sessions = shared.connector.clone();
    let slot = match sessions.admit(peer.addr.ip()) {
        Ok(slot) => slot,
        Err(refused) => {
            let detail = match refused {
                NoSession::SourceShareSpent => {
                    "this address holds as many device sessions as one source may; retry later"
                }
                NoSession::BudgetSpent | NoSession::Stopping => {
                    "this server holds as many device sessions as it may; retry later"
                }
            };
            return Err(ApiError::Problem {
                problem: Problem::new(ProblemCode::Unavailable).with_detail(detail),
                retry_after: Some(std::time::Duration::from_secs(60)),
            });
        }
    };
    let store = shared.stub.store.clone();
    // The device's live session, if any, is replaced only once this certificate is found current.
    let id = sessions.next_session();
    if !store
        .touch_device(&unit_id, &serial, None, Some(sessions.session_ref(id)))
        .await?
    {
        return Err(not_current());
    }
    let session = sessions.register(&unit_id, id);
    // The session ends with its certificate's validity (a renewed device connects again).
    let left = (not_after - shared.stub.clock.now()).max(time::Duration::ZERO);
    let expires = tokio::time::Instant::now()
        + std::time::Duration::try_from(left)
            .unwrap_or_default()
            .min(std::time::Duration::from_secs(100 * 365 * 86_400));
    // The upgrade failed (or never happened): the session the store records is undone.
    let (upgraded, failed) = tokio::sync::oneshot::channel::<()>();
    {
        let (sessions, store, unit_id, id) =
            (sessions.clone(), store.clone(), unit_id.clone(), session.id);
        tokio::spawn(async move {
            if failed.await.is_err()
                && let Err(error) = store
                    .device_offline(&unit_id, sessions.session_ref(id))
                    .await
            {
                tracing::debug!(%unit_id, "cannot record the device offline: {error}");
            }
        });
    }
    Ok(upgrade
        // An idle session holds little: small buffers, small frames.
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| {
            let _ = upgraded.send(());
            sessions.serve(socket, session, expires, slot, store)
        }))
}

/// Stores an enrolled device's report and when it was sent. What is stored is the validated
/// report serialised again, so only known, bounded fields reach the database.
async fn report_inventory(shared: &Arc<Shared>, peer: &Peer, body: &[u8]) -> Result<(), ApiError> {
    let DeviceCertificate {
        unit_id,
        serial,
        not_after,
    } = device_identity(peer, "the inventory report")?;
    // An expired certificate is let through TLS only to renew (within the grace period).
    if not_after < shared.stub.clock.now() {
        return Err(ApiError::code(
            ProblemCode::BadRequest,
            "the device certificate has expired: renew it (simplereenroll) first",
        ));
    }
    if body.len() > MAX_INVENTORY_BYTES {
        return Err(ApiError::code(
            ProblemCode::BadRequest,
            format!("the inventory report is larger than {MAX_INVENTORY_BYTES} bytes"),
        ));
    }
    let report: Inventory = serde_json::from_slice(body).map_err(json_refusal)?;
    report
        .validate()
        .map_err(|error| ApiError::code(ProblemCode::BadRequest, error.to_string()))?;
    let json = serde_json::to_string(&report).map_err(|error| ApiError::Internal(error.into()))?;
    let known = shared
        .stub
        .store
        .touch_device(&unit_id, &serial, Some(&json), None)
        .await?;
    if !known {
        return Err(not_current());
    }
    tracing::debug!(%unit_id, host_name = %report.host_name, "inventory reported");
    Ok(())
}

/// Where and how a JSON body failed to parse. serde_json's own message is not passed on: for a
/// value of the wrong type it quotes the value.
fn json_refusal(error: serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let what = match error.classify() {
        Category::Syntax | Category::Io => "is not JSON",
        Category::Eof => "ends too early",
        Category::Data => "lacks a member or has one of the wrong type",
    };
    ApiError::code(
        ProblemCode::BadRequest,
        format!(
            "the body must be a JSON inventory report; it {what} (line {}, column {})",
            error.line(),
            error.column()
        ),
    )
}

/// The unit ID (subject CN) and hex serial of a device certificate.
pub fn certificate_identity(der: &[u8]) -> Option<(UnitId, String)> {
    device_certificate(der).map(|certificate| (certificate.unit_id, certificate.serial))
}

/// The unit ID, serial and expiry of a device certificate.
pub fn device_certificate(der: &[u8]) -> Option<DeviceCertificate> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let unit_id = certificate
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .parse()
        .ok()?;
    Some(DeviceCertificate {
        unit_id,
        serial: crate::ca::serial_hex(certificate.raw_serial()),
        not_after: certificate.validity().not_after.to_datetime(),
    })
}
