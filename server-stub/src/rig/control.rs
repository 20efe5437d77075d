//! The control listener of `serve --test-rig`: the [`super::Rig`] controls as plain JSON over HTTP
//! on loopback, for rigs not written in Rust (as Let's Encrypt's Pebble offers for ACME). It
//! listens on loopback only ([`loopback_only`]), has no authentication (anyone on the machine may
//! drive it: a test rig's server only), and is absent from a normal `serve`.
//!
//! Routes, under `/rig/v1/` (their OpenAPI document under the tag `test-rig`, `document.rs`:
//! [`rig_document`], served at `/rig/v1/openapi.json`, and in the whole document [`json`]):
//! - `GET /server`: the server's URL, UMS ID fingerprint and certificate (PEM).
//! - `GET`/`PUT /faults`: the fault plan in force; a plan that does not validate is refused 422
//!   naming the field. `POST /faults/release`: lets held requests go on.
//! - `GET /clock`, `POST /clock/advance`: the server's clock, moved forward by seconds.
//! - `POST /reset`: faults off, the clock back, held requests released, strict counts cleared.
//! - `GET /certificates/{serial}`: the status of any device certificate serial.
//! - `POST /actions/...`: the one-shot actions of [`super::actions`].
//! - `GET /strict`: the requests strict mode counted ([`super::strict`]).
//! - `POST /key-files`: new keys as a key file (the XML of a USB stick) naming this server.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use onboard_protocol::admin::CreateKeys;
use onboard_protocol::keyfile::{Format, Server};
use onboard_protocol::{ProblemCode, UnitId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

mod document;

pub use document::{RIG_OPENAPI_PATH, json, rig_document};

use super::strict::{Strict, UnservedRequests};
use super::{FaultPlan, Rig};
use crate::http::admin::{Body, PathParam};
use crate::http::{ApiError, Shared};
use crate::store::{Actor, DeviceRecord, PageRequest, ServerBeat};

/// The flag that names the control listener's address, as errors name it.
pub const LISTEN_FLAG: &str = "--test-rig-listen";

/// Where the control listener listens unless told: loopback, a free port.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// The furthest one advance moves the clock: a hundred years.
pub const MAX_ADVANCE_SECONDS: u64 = 100 * 365 * 86_400;

/// The most keys one key file request makes.
pub const MAX_KEY_FILE_KEYS: usize = 1000;

/// The address the control listener may listen on: loopback only, since it has no
/// authentication. Anything else is refused naming [`LISTEN_FLAG`].
pub fn loopback_only(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    if addr.ip().to_canonical().is_loopback() {
        Ok(addr)
    } else {
        anyhow::bail!(
            "{LISTEN_FLAG} {addr}: the test-rig control listener has no authentication and \
             listens on loopback only (127.0.0.1:PORT or [::1]:PORT)"
        )
    }
}

/// The banner logged at the start of a server in test-rig mode.
pub fn banner(control: SocketAddr) -> String {
    format!(
        "TEST-RIG MODE: faults, a movable clock and one-shot actions (expire every certificate, \
         replace the UMS ID) are open without authentication to anyone on this machine at \
         http://{control}/rig/v1/; never serve real devices this way"
    )
}

/// What the control listener tells a rig about the server it drives.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The host name the key files name and the URL holds.
    pub host: String,
    /// The port devices reach the server at.
    pub port: u16,
}

/// The control listener's state: the server's shared state and its rig controls.
#[derive(Clone)]
pub struct Control {
    shared: Arc<Shared>,
    rig: Arc<Rig>,
    strict: Arc<Strict>,
    facts: Arc<Facts>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("facts", &self.facts)
            .finish_non_exhaustive()
    }
}

impl Control {
    /// The controls of a server in test-rig mode; refused for a server not in test-rig mode.
    pub fn new(shared: Arc<Shared>, facts: Facts) -> anyhow::Result<Control> {
        let (Some(rig), Some(strict)) = (shared.rig.clone(), shared.strict.clone()) else {
            anyhow::bail!("the server is not in test-rig mode (serve --test-rig)")
        };
        Ok(Control {
            shared,
            rig,
            strict,
            facts: Arc::new(facts),
        })
    }
}

/// Serves the control routes on `listener` (bound by the caller, on loopback) until the task is
/// aborted.
pub fn spawn(listener: tokio::net::TcpListener, control: Control) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router(control)).await {
            tracing::error!("the test-rig control listener stopped: {error}");
        }
    })
}

/// The control routes.
pub fn router(control: Control) -> Router {
    Router::new()
        .route(RIG_OPENAPI_PATH, get(document::serve_document))
        .route("/rig/v1/server", get(server))
        .route("/rig/v1/faults", get(faults).put(put_faults))
        .route("/rig/v1/faults/release", post(release))
        .route("/rig/v1/clock", get(clock))
        .route("/rig/v1/clock/advance", post(advance))
        .route("/rig/v1/reset", post(reset))
        .route("/rig/v1/certificates/{serial}", get(certificate))
        .route(
            "/rig/v1/actions/expire-certificates",
            post(expire_certificates),
        )
        .route("/rig/v1/actions/replace-ums-id", post(replace_ums_id))
        .route("/rig/v1/actions/store-unavailable", post(store_unavailable))
        .route("/rig/v1/strict", get(strict))
        .route("/rig/v1/key-files", post(key_files))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(64 * 1024))
        .with_state(control)
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::code(ProblemCode::Invalid, detail)
}

/// A JSON object body for the control routes: read as [`Body`] reads one (an `invalid` problem
/// naming what is wrong), its whole-number floats (`3.0`) taken as integers, and any integer past
/// the document's `int64` refused naming its member.
#[derive(Debug)]
pub struct RigBody<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for RigBody<T> {
    type Rejection = ApiError;

    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let Body(mut tree) = Body::<serde_json::Value>::from_request(request, state).await?;
        integers(&mut tree, "body")?;
        serde_json::from_value(tree)
            .map(RigBody)
            .map_err(|error| invalid(format!("body: {error}")))
    }
}

/// The first member of `sent` (by its path from `path`) that `read` (what was read from it,
/// written back) does not hold: a member the type ignored. serde ignores the members of a fault
/// kind that has none of its own, whatever it is told; a rig's typo must not pass unnoticed.
/// Members sent as `null` count as left out.
fn ignored_member(
    sent: &serde_json::Value,
    read: &serde_json::Value,
    path: &str,
) -> Option<String> {
    use serde_json::Value;
    match (sent, read) {
        (Value::Object(sent), Value::Object(read)) => sent.iter().find_map(|(name, value)| {
            let path = format!("{path}.{name}");
            match read.get(name) {
                _ if value.is_null() => None,
                None => Some(path),
                Some(kept) => ignored_member(value, kept, &path),
            }
        }),
        (Value::Array(sent), Value::Array(read)) => {
            sent.iter()
                .zip(read)
                .enumerate()
                .find_map(|(index, (value, kept))| {
                    ignored_member(value, kept, &format!("{path}[{index}]"))
                })
        }
        _ => None,
    }
}

/// Makes the whole-number floats of `value` integers and refuses an integer past `i64::MAX`,
/// naming its member by `path`.
fn integers(value: &mut serde_json::Value, path: &str) -> Result<(), ApiError> {
    use serde_json::Value;
    match value {
        Value::Number(number) => {
            if let Some(float) = number.as_f64().filter(|_| number.is_f64())
                && float.fract() == 0.0
                && float.abs() < 9.3e18
            {
                // Within i64 and u64 both, a whole float converts exactly.
                *value = if float < 0.0 {
                    Value::from(float as i64)
                } else {
                    Value::from(float as u64)
                };
            }
            if let Value::Number(number) = value
                && number.as_u64().is_some_and(|n| n > i64::MAX as u64)
            {
                return Err(invalid(format!("{path}: at most {}", i64::MAX)));
            }
            Ok(())
        }
        Value::Array(items) => items
            .iter_mut()
            .enumerate()
            .try_for_each(|(index, item)| integers(item, &format!("{path}[{index}]"))),
        Value::Object(members) => members
            .iter_mut()
            .try_for_each(|(name, member)| integers(member, &format!("{path}.{name}"))),
        _ => Ok(()),
    }
}

/// The server a rig drives.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServerFacts {
    /// Its HTTPS URL, as devices reach it.
    pub url: String,
    /// The fingerprint of its UMS ID (SHA-256 of the certificate), which devices pin.
    pub ums_id_fingerprint: String,
    /// Its UMS ID certificate, PEM: the trust anchor of its TLS chain.
    pub ums_id_certificate_pem: String,
}

/// The server's URL, UMS ID fingerprint and certificate.
#[utoipa::path(get, path = "/rig/v1/server", tag = "test-rig", security(()),
    responses((status = 200, description = "The server", body = ServerFacts)))]
async fn server(State(control): State<Control>) -> axum::Json<ServerFacts> {
    let ums_id = &control.shared.stub.ums_id;
    axum::Json(ServerFacts {
        url: format!("https://{}:{}", control.facts.host, control.facts.port),
        ums_id_fingerprint: ums_id.fingerprint().to_string(),
        ums_id_certificate_pem: ums_id.certificate_pem().to_owned(),
    })
}

/// The fault plan in force (no faults unless a rig put a plan in force).
#[utoipa::path(get, path = "/rig/v1/faults", tag = "test-rig", security(()),
    responses((status = 200, description = "The plan in force", body = FaultPlan)))]
async fn faults(State(control): State<Control>) -> axum::Json<FaultPlan> {
    axum::Json(control.rig.faults())
}

/// Puts a fault plan in force from the next request on, its draws starting again from its seed.
#[utoipa::path(put, path = "/rig/v1/faults", tag = "test-rig", security(()),
    request_body = FaultPlan,
    responses((status = 200, description = "The plan now in force", body = FaultPlan),
        (status = 422, description = "The plan does not validate; the detail names the field", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
async fn put_faults(
    State(control): State<Control>,
    RigBody(sent): RigBody<serde_json::Value>,
) -> Result<axum::Json<FaultPlan>, ApiError> {
    let plan: FaultPlan =
        serde_json::from_value(sent.clone()).map_err(|error| invalid(format!("body: {error}")))?;
    let read = serde_json::to_value(&plan).map_err(|error| ApiError::Internal(error.into()))?;
    if let Some(member) = ignored_member(&sent, &read, "body") {
        return Err(invalid(format!("{member}: unknown field")));
    }
    plan.validate()
        .map_err(|error| invalid(format!("body: {error}")))?;
    control.rig.set_faults(plan);
    Ok(axum::Json(control.rig.faults()))
}

/// How many held requests were let go on.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Released {
    /// Requests a `hold` fault held, now let go on.
    pub released: u64,
}

/// Lets every request a `hold` fault holds go on.
#[utoipa::path(post, path = "/rig/v1/faults/release", tag = "test-rig", security(()),
    responses((status = 200, description = "How many were held", body = Released)))]
async fn release(State(control): State<Control>) -> axum::Json<Released> {
    axum::Json(Released {
        released: control.rig.release_held() as u64,
    })
}

/// The server's clock.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClockView {
    /// Now, as the server sees it (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub now: OffsetDateTime,
    /// How far it runs ahead of the machine's clock, in whole seconds.
    pub offset_seconds: i64,
}

impl ClockView {
    fn of(rig: &Rig) -> ClockView {
        ClockView {
            now: rig
                .clock
                .now()
                .replace_nanosecond(0)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            offset_seconds: rig.clock.offset().whole_seconds(),
        }
    }
}

/// The server's clock: now, and how far it was moved.
#[utoipa::path(get, path = "/rig/v1/clock", tag = "test-rig", security(()),
    responses((status = 200, description = "The clock", body = ClockView)))]
async fn clock(State(control): State<Control>) -> axum::Json<ClockView> {
    axum::Json(ClockView::of(&control.rig))
}

/// How far to move the clock.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Advance {
    /// Seconds to move the server's clock forward (it never moves back), at most a hundred
    /// years.
    #[schema(minimum = 0, maximum = 3_153_600_000_u64)]
    pub seconds: u64,
}

/// Moves the server's clock forward: key lifetimes, token and session expiry, renewal windows and
/// grace, certificate validity and heartbeats are judged by it from now on.
#[utoipa::path(post, path = "/rig/v1/clock/advance", tag = "test-rig", security(()),
    request_body = Advance,
    responses((status = 200, description = "The clock, moved", body = ClockView),
        (status = 422, description = "Too far; the detail names the field", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
async fn advance(
    State(control): State<Control>,
    RigBody(advance): RigBody<Advance>,
) -> Result<axum::Json<ClockView>, ApiError> {
    if advance.seconds > MAX_ADVANCE_SECONDS {
        return Err(invalid(format!(
            "seconds: at most {MAX_ADVANCE_SECONDS} (a hundred years)"
        )));
    }
    let by = time::Duration::seconds(i64::try_from(advance.seconds).unwrap_or(i64::MAX));
    control
        .rig
        .clock
        .advance(by)
        .map_err(|error| invalid(format!("seconds: {error}")))?;
    beat(&control.shared).await;
    Ok(axum::Json(ClockView::of(&control.rig)))
}

/// Records this server's heartbeat at once, by the clock just moved, so its devices keep showing
/// connected rather than waiting for the next beat.
async fn beat(shared: &Shared) {
    let server = shared.connector.server();
    if server.is_empty() {
        return;
    }
    let beat = ServerBeat {
        name: server.to_owned(),
        fingerprint: shared.stub.ums_id.fingerprint(),
        status: shared.stub.sync,
    };
    if let Err(error) = shared.stub.store.heartbeat(&beat).await {
        tracing::warn!("cannot record the heartbeat after moving the clock: {error}");
    }
}

/// Faults off, the clock back on the machine's, held requests released, strict mode's counts
/// cleared.
#[utoipa::path(post, path = "/rig/v1/reset", tag = "test-rig", security(()),
    responses((status = 200, description = "Reset; how many held requests were released", body = Released)))]
async fn reset(State(control): State<Control>) -> axum::Json<Released> {
    control.rig.set_faults(FaultPlan::default());
    control.rig.clock.reset();
    let released = control.rig.release_held() as u64;
    control.strict.clear();
    beat(&control.shared).await;
    axum::Json(Released { released })
}

/// Where a device certificate stands, by its serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CertificateState {
    /// The device's current certificate, within its lifetime.
    Valid,
    /// The device's current certificate, past its lifetime (it may still renew within the
    /// renewal grace).
    Expired,
    /// A certificate a renewal replaced, still honoured until the device is seen with the new one.
    Renewed,
    /// No enrolled device holds it (never issued here, replaced and forgotten, or the device was
    /// deleted).
    Unknown,
}

/// The status of one certificate serial.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CertificateStatus {
    /// The serial asked for, as the server writes serials (lowercase hex).
    pub serial: String,
    /// Where it stands.
    pub status: CertificateState,
    /// The device holding it, unless unknown.
    #[schema(value_type = Option<String>)]
    pub unit_id: Option<UnitId>,
    /// When it expires: known for the current certificate only.
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_after: Option<OffsetDateTime>,
}

/// The status of `serial` among `devices` at `now`, a current certificate counted expired also
/// when `expired_by_rig` says the rig expired it (the expire-certificates action): pure, the rule
/// the route applies.
pub fn certificate_status(
    serial: &str,
    devices: &[DeviceRecord],
    now: OffsetDateTime,
    expired_by_rig: impl Fn(&str) -> bool,
) -> CertificateStatus {
    let serial = serial.to_ascii_lowercase();
    let same = |held: &str| held.eq_ignore_ascii_case(&serial);
    if let Some(device) = devices.iter().find(|device| same(&device.serial)) {
        return CertificateStatus {
            status: if device.not_after < now || expired_by_rig(&device.serial) {
                CertificateState::Expired
            } else {
                CertificateState::Valid
            },
            unit_id: Some(device.unit_id.clone()),
            not_after: Some(device.not_after),
            serial,
        };
    }
    if let Some(device) = devices
        .iter()
        .find(|device| device.previous_serial.as_deref().is_some_and(same))
    {
        return CertificateStatus {
            status: CertificateState::Renewed,
            unit_id: Some(device.unit_id.clone()),
            not_after: None,
            serial,
        };
    }
    CertificateStatus {
        serial,
        status: CertificateState::Unknown,
        unit_id: None,
        not_after: None,
    }
}

/// The status of any device certificate serial (hex, as the certificate states it): valid,
/// expired, renewed or unknown, judged by the server's clock.
#[utoipa::path(get, path = "/rig/v1/certificates/{serial}", tag = "test-rig", security(()),
    params(("serial" = String, Path, description = "The certificate's serial, hex", pattern = "^[0-9A-Fa-f]{1,64}$")),
    responses((status = 200, description = "Its status", body = CertificateStatus),
        (status = 422, description = "Not a serial; the detail names the field", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
async fn certificate(
    State(control): State<Control>,
    PathParam(serial): PathParam<String>,
) -> Result<axum::Json<CertificateStatus>, ApiError> {
    if serial.is_empty() || serial.len() > 64 || !serial.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid("serial: 1 to 64 hexadecimal digits"));
    }
    let devices = control
        .shared
        .stub
        .store
        .devices(&PageRequest::all())
        .await?;
    let rig = control.shared.rig.clone();
    Ok(axum::Json(certificate_status(
        &serial,
        &devices,
        control.shared.stub.clock.now(),
        |held| rig.as_ref().is_some_and(|rig| rig.is_expired(held)),
    )))
}

/// An action that could not run: 409 with the reason.
fn action_failed(error: anyhow::Error) -> ApiError {
    ApiError::code(
        ProblemCode::Conflict,
        format!("the action did not run: {error:#}"),
    )
}

/// How many device records an action changed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Changed {
    /// Device records changed.
    pub changed: u64,
}

/// Makes every device certificate expired as of now: devices must renew (within the renewal
/// grace) before they are served again.
#[utoipa::path(post, path = "/rig/v1/actions/expire-certificates", tag = "test-rig", security(()),
    responses((status = 200, description = "Done", body = Changed),
        (status = 409, description = "The action could not run; the detail says why", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
async fn expire_certificates(
    State(control): State<Control>,
) -> Result<axum::Json<Changed>, ApiError> {
    let changed = super::actions::expire_certificates(&control.shared)
        .await
        .map_err(action_failed)?;
    Ok(axum::Json(Changed { changed }))
}

/// The UMS ID after a rotation drill.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Replaced {
    /// The fingerprint of the UMS ID the server presents now.
    pub ums_id_fingerprint: String,
}

/// A rotation drill: the server presents a chain under a fresh UMS ID; devices pinning the old one
/// refuse it and must burn no key.
#[utoipa::path(post, path = "/rig/v1/actions/replace-ums-id", tag = "test-rig", security(()),
    responses((status = 200, description = "Replaced", body = Replaced),
        (status = 409, description = "The action could not run; the detail says why", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
async fn replace_ums_id(State(control): State<Control>) -> Result<axum::Json<Replaced>, ApiError> {
    let fingerprint = super::actions::replace_ums_id(&control.shared)
        .await
        .map_err(action_failed)?;
    Ok(axum::Json(Replaced {
        ums_id_fingerprint: fingerprint.to_string(),
    }))
}

/// How long the store is to be unavailable.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Unavailable {
    /// Seconds, 1 to 3600.
    #[schema(minimum = 1, maximum = 3600)]
    pub seconds: u64,
}

/// Answers as a server whose database is unreachable for a while: 503 `unavailable` with
/// `Retry-After`, and `/readyz` not ready.
#[utoipa::path(post, path = "/rig/v1/actions/store-unavailable", tag = "test-rig", security(()),
    request_body = Unavailable,
    responses((status = 200, description = "Unavailable from now on for that long", body = Unavailable),
        (status = 409, description = "The action could not run; the detail says why", body = onboard_protocol::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Out of range; the detail names the field", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
async fn store_unavailable(
    State(control): State<Control>,
    RigBody(unavailable): RigBody<Unavailable>,
) -> Result<axum::Json<Unavailable>, ApiError> {
    if !(1..=3600).contains(&unavailable.seconds) {
        return Err(invalid("seconds: 1 to 3600"));
    }
    super::actions::store_unavailable(
        &control.shared,
        std::time::Duration::from_secs(unavailable.seconds),
    )
    .map_err(action_failed)?;
    Ok(axum::Json(unavailable))
}

/// The requests for a route or method the server does not serve, counted by strict mode since
/// the start or the last reset.
#[utoipa::path(get, path = "/rig/v1/strict", tag = "test-rig", security(()),
    responses((status = 200, description = "The counts", body = UnservedRequests)))]
async fn strict(State(control): State<Control>) -> axum::Json<UnservedRequests> {
    axum::Json(control.strict.view())
}

/// Which keys to make for a key file, by type.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum NewKeyFile {
    /// `count` one-time keys.
    #[serde(rename = "one-time")]
    OneTime {
        /// How many, 1 to 1000.
        #[schema(minimum = 1, maximum = 1000)]
        count: usize,
    },
    /// One mass-deployment key.
    #[serde(rename = "mass")]
    Mass {},
    /// One device-bound key per unit ID.
    #[serde(rename = "device-bound")]
    DeviceBound {
        /// The unit IDs, 1 to 1000.
        #[schema(min_items = 1, max_items = 1000, value_type = Vec<onboard_protocol::UnitId>)]
        unit_ids: Vec<UnitId>,
    },
}

/// New keys, as the key file (`icg.xml`) a USB stick carries, naming this server and its UMS ID.
/// The keys are created and the export audited as any other.
#[utoipa::path(post, path = "/rig/v1/key-files", tag = "test-rig", security(()),
    request_body = NewKeyFile,
    responses((status = 200, description = "The key file", content_type = "application/xml", body = String),
        (status = 422, description = "The request names the wrong members; the detail names the field", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
async fn key_files(
    State(control): State<Control>,
    RigBody(request): RigBody<NewKeyFile>,
) -> Result<Response, ApiError> {
    let create = key_file_request(&request)?;
    let keys = control.shared.stub.keys();
    let ids = keys
        .create(&create, Box::new(|_| {}), &Actor::cli())
        .await?;
    let server = Server::new(control.facts.host.clone(), control.facts.port)
        .map_err(|error| ApiError::Internal(error.into()))?;
    let file = keys
        .export(&ids, vec![server], control.shared.stub.ums_id.fingerprint())
        .await?;
    let mut response = file.write(Format::Xml).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    Ok(response)
}

/// The creation a key file request asks for, or the field that is wrong.
fn key_file_request(request: &NewKeyFile) -> Result<CreateKeys, ApiError> {
    let comment = "test rig".to_owned();
    match request {
        NewKeyFile::OneTime { count } => {
            if !(1..=MAX_KEY_FILE_KEYS).contains(count) {
                return Err(invalid("count: 1 to 1000"));
            }
            Ok(CreateKeys::OneTime {
                quantity: *count,
                comment,
                expires_at: None,
                not_before: None,
                folder: None,
            })
        }
        NewKeyFile::Mass {} => Ok(CreateKeys::Mass {
            password: None,
            comment,
            expires_at: None,
            not_before: None,
            folder: None,
            usage_limit: None,
        }),
        NewKeyFile::DeviceBound { unit_ids } => {
            if !(1..=MAX_KEY_FILE_KEYS).contains(&unit_ids.len()) {
                return Err(invalid("unit_ids: 1 to 1000 unit IDs"));
            }
            Ok(CreateKeys::DeviceBound {
                unit_ids: unit_ids.clone(),
                comment,
                expires_at: None,
                not_before: None,
                folder: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onboard_protocol::KeyKind;

    #[test]
    fn only_loopback_addresses_are_taken_and_the_refusal_names_the_flag() {
        for taken in ["127.0.0.1:0", "127.0.0.1:9999", "[::1]:0", "127.1.2.3:80"] {
            assert!(loopback_only(taken.parse().unwrap()).is_ok(), "{taken}");
        }
        for refused in ["0.0.0.0:9999", "192.0.2.1:80", "[::]:0", "[2001:db8::1]:1"] {
            let error = loopback_only(refused.parse().unwrap())
                .unwrap_err()
                .to_string();
            assert!(error.contains(LISTEN_FLAG), "{error}");
            assert!(error.contains("loopback"), "{error}");
        }
    }

    fn device(
        unit: &str,
        serial: &str,
        previous: Option<&str>,
        not_after: OffsetDateTime,
    ) -> DeviceRecord {
        DeviceRecord {
            unit_id: unit.parse().unwrap(),
            public_key: Vec::new(),
            certificate: Vec::new(),
            serial: serial.to_owned(),
            not_after,
            previous_serial: previous.map(str::to_owned),
            key_id: None,
            key_kind: KeyKind::OneTime,
            enrolled_at: not_after,
            last_seen: not_after,
            inventory: None,
            online_server: None,
            folder: None,
        }
    }

    #[test]
    fn a_serial_is_valid_expired_renewed_or_unknown() {
        let now = OffsetDateTime::now_utc();
        let hour = time::Duration::HOUR;
        let devices = [
            device("00E0C5000001", "aa01", Some("aa00"), now + hour),
            device("00E0C5000002", "bb01", None, now - hour),
        ];
        let table = [
            ("aa01", CertificateState::Valid, Some("00E0C5000001"), true),
            ("AA01", CertificateState::Valid, Some("00E0C5000001"), true),
            (
                "bb01",
                CertificateState::Expired,
                Some("00E0C5000002"),
                true,
            ),
            (
                "aa00",
                CertificateState::Renewed,
                Some("00E0C5000001"),
                false,
            ),
            ("cc00", CertificateState::Unknown, None, false),
        ];
        for (serial, state, unit, has_not_after) in table {
            let status = certificate_status(serial, &devices, now, |_| false);
            assert_eq!(status.status, state, "{serial}");
            assert_eq!(
                status.unit_id.map(|u| u.to_string()).as_deref(),
                unit,
                "{serial}"
            );
            assert_eq!(status.not_after.is_some(), has_not_after, "{serial}");
            assert_eq!(status.serial, serial.to_ascii_lowercase());
        }
        // The same certificate past its end, by a clock moved past it.
        assert_eq!(
            certificate_status("aa01", &devices, now + 2 * hour, |_| false).status,
            CertificateState::Expired
        );
        // The same certificate before its end, expired by the rig's action.
        let by_rig = |held: &str| held == devices[0].serial;
        assert_eq!(
            certificate_status(&devices[0].serial, &devices, now, by_rig).status,
            CertificateState::Expired
        );
    }

    #[test]
    fn key_file_requests_read_by_type_and_name_the_wrong_member() {
        let read = |text: &str| serde_json::from_str::<NewKeyFile>(text);
        let refused = |request: NewKeyFile| match key_file_request(&request) {
            Err(ApiError::Problem { problem, .. }) => problem.detail.unwrap_or_default(),
            other => panic!("taken: {other:?}"),
        };
        assert!(matches!(
            key_file_request(&read(r#"{"kind": "one-time", "count": 3}"#).unwrap()),
            Ok(CreateKeys::OneTime { quantity: 3, .. })
        ));
        assert!(matches!(
            key_file_request(&read(r#"{"kind": "mass"}"#).unwrap()),
            Ok(CreateKeys::Mass { .. })
        ));
        assert!(matches!(
            key_file_request(
                &read(r#"{"kind": "device-bound", "unit_ids": ["00E0C5000001"]}"#).unwrap()
            ),
            Ok(CreateKeys::DeviceBound { .. })
        ));
        assert!(
            refused(read(r#"{"kind": "one-time", "count": 0}"#).unwrap()).starts_with("count:")
        );
        assert!(
            refused(read(r#"{"kind": "one-time", "count": 1001}"#).unwrap()).starts_with("count:")
        );
        assert!(
            refused(read(r#"{"kind": "device-bound", "unit_ids": []}"#).unwrap())
                .starts_with("unit_ids:")
        );
        // Members of another type are refused by name.
        for (text, member) in [
            (r#"{"kind": "mass", "count": 2}"#, "count"),
            (
                r#"{"kind": "one-time", "count": 1, "unit_ids": []}"#,
                "unit_ids",
            ),
        ] {
            let error = read(text).unwrap_err().to_string();
            assert!(error.contains(member), "{error}");
        }
    }

    #[test]
    fn whole_floats_read_as_integers_and_integers_past_int64_are_refused_by_name() {
        let mut tree = serde_json::json!({"seconds": 60.0, "routes": {"admin": [{"probability": 0.5, "fault": {"millis": 1e3}}]}});
        integers(&mut tree, "body").unwrap();
        assert_eq!(tree["seconds"], serde_json::json!(60));
        assert!(tree["seconds"].is_u64());
        assert_eq!(
            tree["routes"]["admin"][0]["fault"]["millis"],
            serde_json::json!(1000)
        );
        assert_eq!(
            tree["routes"]["admin"][0]["probability"],
            serde_json::json!(0.5)
        );
        let mut past = serde_json::json!({"routes": {"admin": [{"fault": {"millis": 9_223_372_036_854_775_808_u64}}]}});
        match integers(&mut past, "body") {
            Err(ApiError::Problem { problem, .. }) => assert_eq!(
                problem.detail.as_deref(),
                Some("body.routes.admin[0].fault.millis: at most 9223372036854775807")
            ),
            other => panic!("taken: {other:?}"),
        }
    }

    #[test]
    fn a_member_the_plan_ignores_is_named() {
        let sent = serde_json::json!({"seed": 1, "routes": {"admin": [
            {"probability": 0.5, "fault": {"kind": "hold", "millis": 3}}]}});
        let plan: FaultPlan = serde_json::from_value(sent.clone()).unwrap();
        let read = serde_json::to_value(&plan).unwrap();
        assert_eq!(
            ignored_member(&sent, &read, "body").as_deref(),
            Some("body.routes.admin[0].fault.millis")
        );
        let sent = serde_json::json!({"routes": {"admin": [
            {"probability": 0.5, "fault": {"kind": "refuse", "status": 503, "code": null}}]}});
        let plan: FaultPlan = serde_json::from_value(sent.clone()).unwrap();
        let read = serde_json::to_value(&plan).unwrap();
        assert_eq!(ignored_member(&sent, &read, "body"), None);
    }

    #[test]
    fn a_failed_action_is_a_conflict_saying_why() {
        match action_failed(anyhow::anyhow!("not built yet")) {
            ApiError::Problem { problem, .. } => {
                assert_eq!(problem.status, 409);
                assert_eq!(problem.code, ProblemCode::Conflict);
                assert_eq!(
                    problem.detail.as_deref(),
                    Some("the action did not run: not built yet")
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
