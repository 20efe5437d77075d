//! The HTTPS routes: EST enrollment and renewal, the inventory report of enrolled devices, and the
//! one place errors become HTTP answers.
//!
//! Refusals are `application/problem+json` (RFC 9457) with the stable `code` of
//! [`ProblemCode`]; internal failures become a bare 500 and a log line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine;
use onboard_protocol::est;
use onboard_protocol::inventory::MAX_INVENTORY_BYTES;
use onboard_protocol::routes::{
    DEVICE_INVENTORY, EST_CACERTS, EST_SIMPLEENROLL, EST_SIMPLEREENROLL,
};
use onboard_protocol::{FirstAuthKey, Inventory, Problem, ProblemCode, UnitId};
use time::OffsetDateTime;

use crate::ca::{Authority, CertificateRequest};
use crate::rate_limit::RateLimiter;
use crate::store::{AuditEntry, EnrollAttempt, EnrollOutcome, Store, StoreError};
use crate::stub::Stub;

/// The largest request body: a CSR of an RSA-4096 key in base64 is under 3 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the routes share.
pub struct Shared {
    /// The opened data directory.
    pub stub: Stub,
    /// Failure counters.
    pub limiter: RateLimiter,
    /// Device certificate lifetime.
    pub certificate_days: i64,
}

/// Facts about the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// The client certificate it presented, already verified against the UMS ID by TLS.
    pub client_certificate: Option<Vec<u8>>,
}

/// A refusal or failure, turned into a response in one place.
#[derive(Debug)]
pub enum ApiError {
    /// A refusal the client can act on.
    Problem {
        /// The problem body.
        problem: Problem,
        /// For 429: when to try again.
        retry_after: Option<Duration>,
    },
    /// Something broke here; the client sees a bare 500.
    Internal(anyhow::Error),
}

impl ApiError {
    fn code(code: ProblemCode, detail: impl Into<String>) -> Self {
        ApiError::Problem {
            problem: Problem::new(code).with_detail(detail),
            retry_after: None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::Internal(error.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Problem {
                problem,
                retry_after,
            } => {
                let status =
                    StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST);
                let body = serde_json::to_vec(&problem).unwrap_or_default();
                let mut response = (status, body).into_response();
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(onboard_protocol::problem::PROBLEM_CONTENT_TYPE),
                );
                if let Some(wait) = retry_after {
                    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                    headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
                }
                response
            }
            ApiError::Internal(error) => {
                tracing::error!("internal error: {error:#}");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
            }
        }
    }
}

/// The routes, over `shared`.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(EST_CACERTS, get(cacerts))
        .route(EST_SIMPLEENROLL, post(simpleenroll))
        .route(EST_SIMPLEREENROLL, post(simplereenroll))
        .route(DEVICE_INVENTORY, put(inventory))
        .with_state(shared)
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            MAX_BODY_BYTES,
        ))
}

fn pkcs7_response(certificates: &[&[u8]]) -> Response {
    let body = est::encode_base64(&est::certs_only(certificates));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(onboard_protocol::routes::CONTENT_TYPE_PKCS7_CERTS_ONLY),
    );
    headers.insert(
        "content-transfer-encoding",
        HeaderValue::from_static("base64"),
    );
    response
}

async fn cacerts(State(shared): State<Arc<Shared>>) -> Response {
    pkcs7_response(&[shared.stub.ums_id.certificate_der()])
}

/// The unit ID and key of an HTTP Basic header. The key is never logged or echoed.
fn basic_credentials(headers: &HeaderMap) -> Result<(UnitId, Option<FirstAuthKey>), ApiError> {
    let malformed = |detail: &str| ApiError::code(ProblemCode::BadRequest, detail);
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        malformed(
            "HTTP Basic authorization with the unit ID as user and the key as password is required",
        )
    })?;
    let encoded = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .ok_or_else(|| malformed("the Authorization header is not HTTP Basic"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| malformed("the Basic credentials are not base64 of UTF-8 text"))?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or_else(|| malformed("the Basic credentials lack the ':' between unit ID and key"))?;
    let unit_id = user
        .parse::<UnitId>()
        // The refused text is not echoed: a client that swapped user and password would see its key.
        .map_err(|_| malformed("the Basic user must be the unit ID: 12 hex digits (a MAC) or an 18-character UD Pocket serial"))?;
    // A value no key can have is simply unknown, like any other wrong key.
    Ok((unit_id, FirstAuthKey::new(password).ok()))
}

fn csr_from_body(body: &[u8]) -> Result<CertificateRequest, ApiError> {
    let der = est::decode_base64(body).map_err(|_| {
        ApiError::code(
            ProblemCode::BadRequest,
            "the body must be a base64 PKCS#10 certificate request",
        )
    })?;
    CertificateRequest::from_der(&der)
        .map_err(|error| ApiError::code(ProblemCode::BadRequest, error.to_string()))
}

async fn simpleenroll(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let source = peer.addr.ip();
    let mut unit_seen: Option<String> = None;
    let result = enroll(&shared, &peer, &headers, &body, &mut unit_seen).await;
    let response = match result {
        Ok(response) => return response,
        Err(error) => error,
    };
    if let ApiError::Problem { problem, .. } = &response {
        if problem.code != ProblemCode::RateLimited {
            shared.limiter.failed(source, unit_seen.as_deref(), started);
        }
        // Malformed requests are refused before the store is asked; they still belong in the audit
        // log. Rate-limited ones do not: a flood of them must not turn into a flood of writes.
        if problem.code == ProblemCode::BadRequest {
            let entry = AuditEntry {
                at: OffsetDateTime::now_utc(),
                event: "enroll".to_owned(),
                unit_id: unit_seen.clone(),
                key_id: None,
                source: source.to_string(),
                outcome: problem.code.as_str().to_owned(),
                detail: problem.detail.clone().unwrap_or_default(),
            };
            let shared = shared.clone();
            let _ = tokio::task::spawn_blocking(move || shared.stub.store.record(&entry)).await;
        }
        tracing::info!(unit_id = unit_seen.as_deref().unwrap_or("-"), %source, code = %problem.code, "enrollment refused");
    }
    response.into_response()
}

async fn enroll(
    shared: &Arc<Shared>,
    peer: &Peer,
    headers: &HeaderMap,
    body: &[u8],
    unit_seen: &mut Option<String>,
) -> Result<Response, ApiError> {
    let source = peer.addr.ip();
    let limited = |wait| ApiError::Problem {
        problem: Problem::new(ProblemCode::RateLimited)
            .with_detail("too many failed attempts; retry later"),
        retry_after: Some(wait),
    };
    if let Some(wait) = shared.limiter.blocked_for(source, None, Instant::now()) {
        return Err(limited(wait));
    }
    let (unit_id, key) = basic_credentials(headers)?;
    *unit_seen = Some(unit_id.to_string());
    if let Some(wait) = shared
        .limiter
        .blocked_for(source, Some(unit_id.as_str()), Instant::now())
    {
        return Err(limited(wait));
    }
    let request = csr_from_body(body)?;
    let Some(key) = key else {
        return Err(ApiError::code(
            ProblemCode::KeyUnknown,
            "no such first-authentication key",
        ));
    };
    let lookup = shared.stub.vault.lookup(&key);
    drop(key);
    let attempt = EnrollAttempt {
        unit_id: unit_id.clone(),
        lookup,
        public_key: request.public_key.clone(),
        source: source.to_string(),
    };
    let signer = shared.clone();
    let days = shared.certificate_days;
    let issue: crate::store::IssueOnce = Box::new(move || {
        let authority = Authority::new(&signer.stub.ums_id).map_err(|e| e.to_string())?;
        authority.device_certificate(unit_id.as_str(), &request, days)
    });
    let worker = shared.clone();
    let outcome = tokio::task::spawn_blocking(move || worker.stub.store.enroll(attempt, issue))
        .await
        .map_err(|error| ApiError::Internal(error.into()))??;
    match outcome {
        EnrollOutcome::Issued { device, repeated } => {
            tracing::info!(unit_id = %device.unit_id, serial = %device.serial, repeated, key_type = %device.key_kind, "device enrolled");
            Ok(pkcs7_response(&[&device.certificate]))
        }
        EnrollOutcome::Refused(code) => Err(ApiError::code(code, refusal_detail(code))),
    }
}

fn refusal_detail(code: ProblemCode) -> &'static str {
    match code {
        ProblemCode::KeyUnknown => "no such first-authentication key",
        ProblemCode::KeyInactive => "the key is deactivated; an administrator can activate it",
        ProblemCode::KeyUsed => "the one-time key was already used by another device",
        ProblemCode::KeyBoundToOtherDevice => "the key is bound to another unit ID",
        ProblemCode::UnitIdConflict => {
            "this unit ID is enrolled with another key pair; an administrator must delete the device record \
             (ums-stub devices delete UNIT_ID) before it can enroll again"
        }
        ProblemCode::BadRequest => "malformed request",
        ProblemCode::RateLimited => "too many failed attempts",
    }
}

async fn simplereenroll(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    body: Bytes,
) -> Response {
    match reenroll(&shared, &peer, &body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// The unit ID and serial of the device certificate the client presented over mutual TLS (TLS
/// has already checked it was issued by the UMS ID); `what` names the request in the refusal.
fn device_identity(peer: &Peer, what: &str) -> Result<(UnitId, String), ApiError> {
    let certificate = peer.client_certificate.as_deref().ok_or_else(|| {
        ApiError::code(
            ProblemCode::BadRequest,
            format!("{what} needs mutual TLS with the current device certificate"),
        )
    })?;
    certificate_identity(certificate).ok_or_else(|| {
        ApiError::code(
            ProblemCode::BadRequest,
            "the client certificate names no unit ID",
        )
    })
}

/// The certificate is signed by the UMS ID but is not (or no longer) an enrolled device's.
fn not_current() -> ApiError {
    ApiError::code(
        ProblemCode::BadRequest,
        "this certificate is not the current one of an enrolled device",
    )
}

async fn reenroll(shared: &Arc<Shared>, peer: &Peer, body: &[u8]) -> Result<Response, ApiError> {
    let (unit_id, serial) = device_identity(peer, "renewal")?;
    let request = csr_from_body(body)?;
    let worker = shared.clone();
    let source = peer.addr.ip().to_string();
    let days = shared.certificate_days;
    let renewed = tokio::task::spawn_blocking(move || {
        let authority =
            Authority::new(&worker.stub.ums_id).map_err(|e| StoreError::Issue(e.to_string()))?;
        worker
            .stub
            .store
            .renew(&unit_id, &serial, &request.public_key, &source, &mut || {
                authority.device_certificate(unit_id.as_str(), &request, days)
            })
    })
    .await
    .map_err(|error| ApiError::Internal(error.into()))??;
    match renewed {
        Some(device) => {
            tracing::info!(unit_id = %device.unit_id, serial = %device.serial, "device certificate renewed");
            Ok(pkcs7_response(&[&device.certificate]))
        }
        None => Err(not_current()),
    }
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
    let (unit_id, serial) = device_identity(peer, "the inventory report")?;
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
    let worker = shared.clone();
    let known = {
        let unit_id = unit_id.clone();
        tokio::task::spawn_blocking(move || {
            worker
                .stub
                .store
                .touch_device(&unit_id, &serial, Some(&json))
        })
        .await
        .map_err(|error| ApiError::Internal(error.into()))??
    };
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
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let unit_id = certificate
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .parse()
        .ok()?;
    let serial = crate::ca::serial_hex(certificate.raw_serial());
    Some((unit_id, serial))
}
