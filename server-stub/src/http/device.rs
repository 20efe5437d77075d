//! What enrolled devices send over mutual TLS: the inventory report. TLS has already checked that
//! the client certificate was issued by the UMS ID; these routes check it is a device's current one.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use onboard_protocol::inventory::MAX_INVENTORY_BYTES;
use onboard_protocol::routes::DEVICE_INVENTORY;
use onboard_protocol::{Inventory, ProblemCode, UnitId};

use super::{ApiError, Peer, Shared};

/// The routes of enrolled devices.
pub fn router() -> Router<Arc<Shared>> {
    Router::new().route(DEVICE_INVENTORY, put(inventory))
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

/// Stores an enrolled device's report and when it was sent. What is stored is the validated
/// report serialised again, so only known, bounded fields reach the database.
async fn report_inventory(shared: &Arc<Shared>, peer: &Peer, body: &[u8]) -> Result<(), ApiError> {
    let DeviceCertificate {
        unit_id,
        serial,
        not_after,
    } = device_identity(peer, "the inventory report")?;
    // An expired certificate is let through TLS only to renew (within the grace period).
    if not_after < time::OffsetDateTime::now_utc() {
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
        .touch_device(&unit_id, &serial, Some(&json))
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
