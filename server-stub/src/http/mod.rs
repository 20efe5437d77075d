//! The HTTPS surface, split by who calls it, composed into one router here, with the one place
//! errors become HTTP answers ([`ApiError`]).
//!
//! # Layout
//! - [`est`]: EST enrollment and renewal (`/.well-known/est/...`), for devices.
//! - [`check`]: checking keys before a rollout (`/device/v1/check-keys`), admitted as enrollment.
//! - [`device`]: what enrolled devices send over mutual TLS (`/device/v1/...`).
//! - [`admin`]: the admin API (`/api/v1/...`) for administrators, scripts and the Web App.
//! - [`web`]: the Web App's pages (`/`, `/app/`), embedded, calling the admin API.
//!
//! Refusals are `application/problem+json` (RFC 9457) with the stable `code` of [`ProblemCode`];
//! store errors map to 404, 409 or 503 by their kind, and anything else becomes a bare 500 and a
//! log line.

pub mod admin;
pub mod check;
pub mod device;
pub mod est;
pub mod web;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use onboard_protocol::{Problem, ProblemCode};

use crate::keys::KeyError;
use crate::rate_limit::RateLimiter;
use crate::store::StoreError;
use crate::stub::Stub;

pub use device::certificate_identity;

/// The largest request body: a CSR of an RSA-4096 key in base64 is under 3 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long a client is asked to wait when the database is unavailable.
const UNAVAILABLE_RETRY: Duration = Duration::from_secs(5);

/// What the routes share.
pub struct Shared {
    /// The opened data directory.
    pub stub: Stub,
    /// Failure counters of enrollment.
    pub limiter: RateLimiter,
    /// Failed-login counters, per account and source network.
    pub logins: crate::login_limit::LoginLimiter,
    /// Device certificate lifetime.
    pub certificate_lifetime: time::Duration,
    /// The device connector's sessions on this server.
    pub connector: Arc<crate::connector::Sessions>,
    /// What the requests count for the metrics listener.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The test-rig controls, in test-rig mode only (faults, the clock).
    pub rig: Option<Arc<crate::rig::Rig>>,
    /// Strict mode's counts of requests the server does not serve, in test-rig mode only.
    pub strict: Option<Arc<crate::rig::strict::Strict>>,
}

/// Facts about the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The address of the connection's other end (a device, or a gateway in front of it).
    pub addr: SocketAddr,
    /// The client certificate it presented, already verified against the UMS ID by TLS.
    pub client_certificate: Option<Vec<u8>>,
}

impl Peer {
    /// The client's address: the connection's other end, unless that is a trusted proxy, in which
    /// case the address its `X-Forwarded-For` names (the last one not itself a trusted proxy).
    /// Without a usable header, the proxy's own address.
    pub fn client(&self, headers: &HeaderMap, trusted_proxies: &[ipnet::IpNet]) -> IpAddr {
        client_address(self.addr.ip(), headers, trusted_proxies)
    }
}

/// See [`Peer::client`].
fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    // On a dual-stack listener IPv4 peers arrive as ::ffff:a.b.c.d; ranges are matched on the
    // address itself.
    let peer = peer.to_canonical();
    let is_trusted = |address: &IpAddr| trusted.iter().any(|net| net.contains(address));
    if !is_trusted(&peer) {
        return peer;
    }
    // Each proxy appends the address it received from; the right-most entries are the nearest.
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    for entry in forwarded.iter().rev() {
        match entry
            .parse::<IpAddr>()
            .map(|address| address.to_canonical())
        {
            Ok(address) if is_trusted(&address) => continue,
            Ok(address) => return address,
            // Junk in the chain: stop trusting it there.
            Err(_) => return peer,
        }
    }
    peer
}

/// A refusal or failure, turned into a response in one place.
#[derive(Debug)]
pub enum ApiError {
    /// A refusal the client can act on.
    Problem {
        /// The problem body.
        problem: Problem,
        /// For 429 and 503: when to try again.
        retry_after: Option<Duration>,
    },
    /// Something broke here; the client sees a bare 500.
    Internal(anyhow::Error),
}

impl ApiError {
    /// A refusal with `code` and a detail for people (never a key).
    pub fn code(code: ProblemCode, detail: impl Into<String>) -> Self {
        ApiError::Problem {
            problem: Problem::new(code).with_detail(detail),
            retry_after: None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(missing) => {
                ApiError::code(ProblemCode::NotFound, missing.to_string())
            }
            StoreError::Conflict(detail) => ApiError::code(ProblemCode::Conflict, detail),
            StoreError::Unavailable(detail) => {
                tracing::warn!("database unavailable: {detail}");
                ApiError::Problem {
                    problem: Problem::new(ProblemCode::Unavailable)
                        .with_detail("the server's database is busy or unreachable; retry later"),
                    retry_after: Some(UNAVAILABLE_RETRY),
                }
            }
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<crate::devices::CommandError> for ApiError {
    fn from(error: crate::devices::CommandError) -> Self {
        match error {
            crate::devices::CommandError::Store(error) => error.into(),
            crate::devices::CommandError::Offline(_) => {
                ApiError::code(ProblemCode::Conflict, error.to_string())
            }
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Store(error) => error.into(),
            KeyError::Quantity
            | KeyError::NoUnitIds
            | KeyError::Password(_)
            | KeyError::WeakMassKey(_)
            | KeyError::Server(_)
            | KeyError::Comment
            | KeyError::UsageLimit
            | KeyError::UsageLimitKind(..) => {
                ApiError::code(ProblemCode::Invalid, error.to_string())
            }
            KeyError::NotExportable { .. } | KeyError::NothingToExport => {
                ApiError::code(ProblemCode::Conflict, error.to_string())
            }
            KeyError::NotInSync => ApiError::Problem {
                problem: Problem::new(ProblemCode::ServerNotInSync).with_detail(error.to_string()),
                retry_after: Some(Duration::from_secs(60)),
            },
            KeyError::Seal(_) => ApiError::Internal(error.into()),
        }
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
                // For the metrics: the code, counted where the answer is sent.
                response.extensions_mut().insert(problem.code);
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

/// Every route, over `shared`.
pub fn router(shared: Arc<Shared>) -> Router {
    router_with(shared, |routes| routes)
}

/// Every route, over `shared`, with `inner` wrapped around the routes inside the headers every
/// answer carries (so what `inner` answers carries them too): `serve` puts the test rig's fault
/// plan there in test-rig mode.
pub fn router_with(
    shared: Arc<Shared>,
    inner: impl FnOnce(Router<Arc<Shared>>) -> Router<Arc<Shared>>,
) -> Router {
    let devices = Router::new()
        .merge(est::router())
        .merge(check::router())
        .merge(device::router())
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            MAX_BODY_BYTES,
        ));
    let admin = admin::router().layer(axum::middleware::from_fn_with_state(
        shared.clone(),
        admin::audit_forbidden,
    ));
    let routes = Router::new()
        .merge(devices)
        .merge(admin)
        .merge(web::router());
    // Strict mode (test-rig mode only) sees the router's own answers, before the headers.
    let routes = match &shared.strict {
        Some(strict) => routes.layer(axum::middleware::from_fn_with_state(
            strict.clone(),
            crate::rig::strict::watch,
        )),
        None => routes,
    };
    inner(routes)
        .layer(axum::middleware::from_fn(answer_headers))
        .with_state(shared)
}

/// How long browsers are told to reach this server only over HTTPS: a year.
const HSTS: &str = "max-age=31536000";

/// Headers on every answer: HSTS (the server speaks nothing but HTTPS) and `nosniff`; on admin API
/// answers also `Cache-Control: no-store`, since they carry keys, tokens and the session's CSRF
/// token that no cache may keep, and `Connection: close` on a refusal of a request with a body.
async fn answer_headers(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let with_body = request.headers().contains_key(header::TRANSFER_ENCODING)
        || request
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0");
    let mut response = next.run(request).await;
    // An admin request refused before its body was read (a wrong method, a missing right) ends
    // its connection: hyper does not read a body nobody asked for, so it closes the connection
    // anyway, and a client told so in advance sends its next request on a fresh one instead of
    // losing it to the close.
    if api && with_body && response.status().is_client_error() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let headers = response.headers_mut();
    headers.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static(HSTS),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if api {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Missing;

    fn status(error: ApiError) -> (u16, Option<ProblemCode>) {
        match error {
            ApiError::Problem { problem, .. } => (problem.status, Some(problem.code)),
            ApiError::Internal(_) => (500, None),
        }
    }

    #[test]
    fn store_errors_map_to_their_http_answers() {
        let table = [
            (
                StoreError::NotFound(Missing::Keys(vec![3])),
                404,
                Some(ProblemCode::NotFound),
            ),
            (
                StoreError::Conflict("taken".into()),
                409,
                Some(ProblemCode::Conflict),
            ),
            (
                StoreError::Unavailable("locked".into()),
                503,
                Some(ProblemCode::Unavailable),
            ),
            (StoreError::Issue("signing failed".into()), 500, None),
            (
                StoreError::Backend {
                    database: "db".into(),
                    source: "disk I/O error".into(),
                },
                500,
                None,
            ),
        ];
        for (error, code, problem) in table {
            let shown = error.to_string();
            assert_eq!(status(error.into()), (code, problem), "{shown}");
        }
        assert_eq!(
            status(KeyError::Quantity.into()),
            (422, Some(ProblemCode::Invalid))
        );
    }

    #[test]
    fn the_client_address_comes_from_trusted_proxies_only() {
        let trusted: Vec<ipnet::IpNet> =
            vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let headers = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
            }
            headers
        };
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let table: &[(&str, &[&str], &str)] = &[
            // peer, X-Forwarded-For headers => client
            ("192.0.2.7", &["198.51.100.1"], "192.0.2.7"),
            ("10.1.2.3", &["198.51.100.1"], "198.51.100.1"),
            ("10.1.2.3", &["203.0.113.9, 198.51.100.1"], "198.51.100.1"),
            ("10.1.2.3", &["198.51.100.1, 10.9.9.9"], "198.51.100.1"),
            ("10.1.2.3", &["198.51.100.1", "10.9.9.9"], "198.51.100.1"),
            ("10.1.2.3", &[], "10.1.2.3"),
            ("10.1.2.3", &["not an address"], "10.1.2.3"),
            ("10.1.2.3", &["10.4.4.4"], "10.1.2.3"),
            ("::1", &["2001:db8::5"], "2001:db8::5"),
            // A dual-stack listener sees IPv4 peers as IPv4-mapped IPv6 addresses.
            ("::ffff:10.1.2.3", &["198.51.100.1"], "198.51.100.1"),
            ("::ffff:192.0.2.7", &["198.51.100.1"], "192.0.2.7"),
            (
                "10.1.2.3",
                &["::ffff:10.9.9.9", "198.51.100.4"],
                "198.51.100.4",
            ),
        ];
        for (peer, values, client) in table {
            assert_eq!(
                client_address(ip(peer), &headers(values), &trusted),
                ip(client),
                "{peer} {values:?}"
            );
        }
        assert_eq!(
            client_address(ip("10.1.2.3"), &headers(&["198.51.100.1"]), &[]),
            ip("10.1.2.3"),
            "no trusted proxy: the header is ignored"
        );
    }
}
