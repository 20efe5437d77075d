//! Metrics and health for operators, on a listener of their own (`metrics_listen` in the config,
//! `--metrics-listen`; off by default), plain HTTP, never on the devices' port:
//!
//! - `GET /metrics`: the OpenMetrics text format Prometheus scrapes. Counters of enrollments,
//!   renewals and refusals (by outcome, problem code and key type), rate-limited requests (by
//!   scope) and logins (by result); gauges of open connections, connector sessions and keys (by
//!   type and status, counted in the store at each scrape); histograms of the enrollment's and the
//!   store's latency; a build-info metric. No label ever holds a unit ID, a key ID, an address or
//!   a name: their number would grow with the fleet, and they are the audit log's business.
//! - `GET /livez`: 200 while the process serves requests at all.
//! - `GET /readyz`: 200 when this server should be sent devices; 503, with the reason, when its
//!   store does not answer within [`STORE_PROBE_TIMEOUT`], when it is a Distributed UMS server
//!   not in sync with the Main UMS ID, or when it is shutting down.
//!
//! [`Metrics`] is what the request handlers count into (it lives in [`crate::http::Shared`]);
//! [`serve`] answers the listener, reading the live figures through [`Live`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use onboard_protocol::admin::KeyStatus;
use onboard_protocol::{KeyKind, ProblemCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::cluster::SyncStatus;
use crate::store::{KeyFilter, Store};

/// How long `/readyz` waits for the store before it calls it unreachable.
pub const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The outcome of a device's request, as the metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A new certificate was issued (a key consumed, or a renewal).
    Issued,
    /// The answer to a retry: the certificate issued before.
    Repeated,
    /// Refused with a problem code.
    Refused,
    /// Failed inside the server: an internal error, or the store unreachable (`unavailable`).
    Failed,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Issued => "issued",
            Outcome::Repeated => "repeated",
            Outcome::Refused => "refused",
            Outcome::Failed => "error",
        }
    }
}

/// Which limit turned a request away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitScope {
    /// The guess limits of enrollment (a source address or an IPv6 /64, or a unit ID).
    Enrollment,
    /// The failed-login limits (an account from one network, or one network overall).
    Login,
}

impl LimitScope {
    fn label(self) -> &'static str {
        match self {
            LimitScope::Enrollment => "enrollment",
            LimitScope::Login => "login",
        }
    }
}

/// A login's result, as the metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoginResult {
    /// Signed in.
    Ok,
    /// Wrong name or password.
    Refused,
    /// Turned away by the failed-login limit.
    Limited,
}

impl LoginResult {
    fn label(self) -> &'static str {
        match self {
            LoginResult::Ok => "ok",
            LoginResult::Refused => "refused",
            LoginResult::Limited => "limited",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    outcome: &'static str,
    /// The problem code of a refusal; `none` otherwise.
    code: &'static str,
    /// The key's type where the server knows it; `unknown` otherwise (an unknown key, a
    /// malformed request).
    key_type: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    scope: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    key_type: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

/// The server's counters and histograms, and the gauges set at each scrape.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    enrollments: Family<RequestLabels, Counter>,
    renewals: Family<RequestLabels, Counter>,
    rate_limited: Family<ScopeLabels, Counter>,
    logins: Family<ResultLabels, Counter>,
    enrollment_seconds: Histogram,
    store_seconds: Family<OperationLabels, Histogram>,
    connections: Gauge,
    connector_sessions: Gauge,
    keys: Family<KeyLabels, Gauge>,
    unserved: Family<MethodLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Latency buckets in seconds, from a millisecond to ten seconds.
fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

impl Metrics {
    /// Every metric at zero, registered under the `ums_stub_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ums_stub");
        let enrollments = Family::<RequestLabels, Counter>::default();
        registry.register(
            "enrollments",
            "Enrollment requests answered, by outcome, problem code and key type",
            enrollments.clone(),
        );
        let renewals = Family::<RequestLabels, Counter>::default();
        registry.register(
            "renewals",
            "Renewal requests answered, by outcome and problem code",
            renewals.clone(),
        );
        let rate_limited = Family::<ScopeLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests turned away by a guess or login limit, by the limit's scope",
            rate_limited.clone(),
        );
        let logins = Family::<ResultLabels, Counter>::default();
        registry.register(
            "logins",
            "Web App and API logins, by result",
            logins.clone(),
        );
        let enrollment_seconds = Histogram::new(latency_buckets());
        registry.register(
            "enrollment_seconds",
            "Time to answer an enrollment request, from its arrival to its answer",
            enrollment_seconds.clone(),
        );
        let store_seconds = Family::<OperationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register(
            "store_seconds",
            "Time the store took for a device's request, by operation",
            store_seconds.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Connections open on the devices' port (TLS handshakes included)",
            connections.clone(),
        );
        let connector_sessions = Gauge::default();
        registry.register(
            "connector_sessions",
            "Device connector sessions held by this server",
            connector_sessions.clone(),
        );
        let keys = Family::<KeyLabels, Gauge>::default();
        registry.register(
            "keys",
            "First-authentication keys in the store, by type and status",
            keys.clone(),
        );
        let unserved = Family::<MethodLabels, Counter>::default();
        registry.register(
            "rig_unknown_requests",
            "Requests for a route or method the server does not serve, by method (test-rig \
             mode's strict mode; none counted otherwise)",
            unserved.clone(),
        );
        registry.register(
            "build",
            "This build of ums-stub",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Metrics {
            registry,
            enrollments,
            renewals,
            rate_limited,
            logins,
            enrollment_seconds,
            store_seconds,
            connections,
            connector_sessions,
            keys,
            unserved,
        }
    }

    /// Counts an enrollment request's answer. `kind` is the type of the key the answer is about,
    /// where the server knows it.
    pub fn enrollment(&self, outcome: Outcome, code: Option<ProblemCode>, kind: Option<KeyKind>) {
        self.enrollments
            .get_or_create(&request_labels(outcome, code, kind))
            .inc();
    }

    /// Counts a renewal request's answer.
    pub fn renewal(&self, outcome: Outcome, code: Option<ProblemCode>) {
        self.renewals
            .get_or_create(&request_labels(outcome, code, None))
            .inc();
    }

    /// Counts a request a limit turned away.
    pub fn rate_limited(&self, scope: LimitScope) {
        self.rate_limited
            .get_or_create(&ScopeLabels {
                scope: scope.label(),
            })
            .inc();
    }

    /// Counts a request for a route or method the server does not serve (strict mode), by its
    /// method as [`crate::rig::strict::method_label`] bounds it.
    pub fn unserved_request(&self, method: &'static str) {
        self.unserved.get_or_create(&MethodLabels { method }).inc();
    }

    /// Counts a login.
    pub fn login(&self, result: LoginResult) {
        self.logins
            .get_or_create(&ResultLabels {
                result: result.label(),
            })
            .inc();
    }

    /// Records how long an enrollment request took to answer.
    pub fn enrollment_took(&self, took: Duration) {
        self.enrollment_seconds.observe(took.as_secs_f64());
    }

    /// Records how long the store took for `operation` (`enroll`, `renew`).
    pub fn store_took(&self, operation: &'static str, took: Duration) {
        self.store_seconds
            .get_or_create(&OperationLabels { operation })
            .observe(took.as_secs_f64());
    }

    /// The OpenMetrics text, the gauges set from `live` first.
    pub async fn render(&self, live: &Live) -> String {
        self.connections.set(gauge(live.connections()));
        self.connector_sessions
            .set(gauge(live.connector.connected()));
        // One time-out over all the counts, so a scrape answers within a Prometheus scrape
        // time-out even when the store is slow; a store that does not answer leaves the last
        // figures (/readyz says why).
        let counting = async {
            for kind in [
                KeyKind::OneTime,
                KeyKind::DeviceBound,
                KeyKind::MassDeployment,
            ] {
                for status in [KeyStatus::Active, KeyStatus::Inactive, KeyStatus::Used] {
                    let filter = KeyFilter {
                        kind: Some(kind),
                        status: Some(status),
                        ..KeyFilter::default()
                    };
                    let Ok(count) = live.store.count_keys(&filter).await else {
                        return;
                    };
                    self.keys
                        .get_or_create(&KeyLabels {
                            key_type: kind.as_str(),
                            status: status.as_str(),
                        })
                        .set(i64::try_from(count).unwrap_or(i64::MAX));
                }
            }
        };
        let _ = tokio::time::timeout(STORE_PROBE_TIMEOUT, counting).await;
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

fn gauge(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn request_labels(
    outcome: Outcome,
    code: Option<ProblemCode>,
    kind: Option<KeyKind>,
) -> RequestLabels {
    RequestLabels {
        outcome: outcome.label(),
        code: code.map_or("none", ProblemCode::as_str),
        key_type: kind.map_or("unknown", KeyKind::as_str),
    }
}

/// What a device's request came to, put in its response's extensions where it is decided, so
/// that one place ([`Metrics::count_enrollment`], [`Metrics::count_renewal`]) counts every answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// Issued or repeated.
    pub outcome: Outcome,
    /// The type of the key the device enrolled with, where known.
    pub kind: Option<KeyKind>,
}

impl Metrics {
    /// Counts an enrollment's `response`: as [`Answered`] says, else by the problem code the
    /// error answer carries (see [`crate::http::ApiError`]), else as an internal failure.
    pub fn count_enrollment(&self, response: &Response) {
        let (outcome, code, kind) = classify(response);
        self.enrollment(outcome, code, kind);
        if code == Some(ProblemCode::RateLimited) {
            self.rate_limited(LimitScope::Enrollment);
        }
    }

    /// Counts a renewal's `response`, as [`Metrics::count_enrollment`] does.
    pub fn count_renewal(&self, response: &Response) {
        let (outcome, code, _) = classify(response);
        self.renewal(outcome, code);
    }
}

fn classify(response: &Response) -> (Outcome, Option<ProblemCode>, Option<KeyKind>) {
    if let Some(answered) = response.extensions().get::<Answered>() {
        return (answered.outcome, None, answered.kind);
    }
    match response.extensions().get::<ProblemCode>() {
        Some(code) => (outcome_of(*code), Some(*code), None),
        None => (Outcome::Failed, None, None),
    }
}

/// What an answer with a problem code counts as: the server's own failure when the store did not
/// answer (an alert on `outcome="error"` must see an outage), a refusal otherwise.
pub fn outcome_of(code: ProblemCode) -> Outcome {
    match code {
        ProblemCode::Unavailable => Outcome::Failed,
        _ => Outcome::Refused,
    }
}

/// What the listener reads at each request: the running server's live state.
#[derive(Clone)]
pub struct Live {
    /// The counters.
    pub metrics: Arc<Metrics>,
    /// The store, counted and probed.
    pub store: Arc<dyn Store>,
    /// The device connector's sessions.
    pub connector: Arc<crate::connector::Sessions>,
    /// Open connections on the devices' port.
    pub connections: Arc<dyn Fn() -> usize + Send + Sync>,
    /// Whether this server's UMS ID is in sync (Distributed UMS).
    pub sync: SyncStatus,
    /// Set once the server has begun shutting down.
    pub shutting_down: Arc<AtomicBool>,
    /// The test-rig controls, in test-rig mode (a store made unavailable is not ready).
    pub rig: Option<Arc<crate::rig::Rig>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("sync", &self.sync)
            .field("shutting_down", &self.shutting_down)
            .finish_non_exhaustive()
    }
}

impl Live {
    fn connections(&self) -> usize {
        (self.connections)()
    }
}

/// Why a server is not ready, for `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// The store did not answer in time, or failed.
    StoreUnreachable,
    /// A Distributed UMS server whose UMS ID is not the Main one.
    NotInSync,
    /// Shutting down: requests in flight finish, no new ones should come.
    ShuttingDown,
}

impl NotReady {
    /// The reason, as `/readyz` says it.
    pub fn reason(self) -> &'static str {
        match self {
            NotReady::StoreUnreachable => "the store does not answer",
            NotReady::NotInSync => "the UMS ID is not in sync with the Main UMS ID",
            NotReady::ShuttingDown => "shutting down",
        }
    }
}

/// The readiness rule: every reason a server is not ready, in the order `/readyz` lists them;
/// empty when it is ready.
pub fn readiness(store_answers: bool, sync: SyncStatus, shutting_down: bool) -> Vec<NotReady> {
    let mut reasons = Vec::new();
    if shutting_down {
        reasons.push(NotReady::ShuttingDown);
    }
    if sync == SyncStatus::NotInSync {
        reasons.push(NotReady::NotInSync);
    }
    if !store_answers {
        reasons.push(NotReady::StoreUnreachable);
    }
    reasons
}

/// The listener's routes.
pub fn router(live: Live) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(live)
}

async fn scrape(State(live): State<Live>) -> Response {
    let text = live.metrics.render(&live).await;
    ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response()
}

async fn ready(State(live): State<Live>) -> Response {
    let made_unavailable = live
        .rig
        .as_ref()
        .is_some_and(|rig| rig.store_unavailable_for().is_some());
    let store_answers = !made_unavailable
        && matches!(
            tokio::time::timeout(STORE_PROBE_TIMEOUT, live.store.ums_id()).await,
            Ok(Ok(_))
        );
    let reasons = readiness(
        store_answers,
        live.sync,
        live.shutting_down.load(Ordering::Relaxed),
    );
    if reasons.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let text: String = reasons
            .iter()
            .map(|reason| format!("not ready: {}\n", reason.reason()))
            .collect();
        (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
    }
}

/// Serves the metrics and health routes on `listener` until the task is aborted (the server
/// stops it after the devices' port has drained, so `/readyz` says "shutting down" meanwhile).
pub async fn serve(listener: tokio::net::TcpListener, live: Live) {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    if let Err(error) = axum::serve(listener, router(live)).await {
        tracing::warn!(?addr, "the metrics listener stopped: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_lists_every_reason() {
        use NotReady::*;
        use SyncStatus::{InSync, Main, NotInSync as Out};
        #[rustfmt::skip]
        let table = [
            // store answers, sync, shutting down, reasons
            (true,  Main,   false, vec![]),
            (true,  InSync, false, vec![]),
            (true,  Out,    false, vec![NotInSync]),
            (false, Main,   false, vec![StoreUnreachable]),
            (true,  Main,   true,  vec![ShuttingDown]),
            (false, Out,    true,  vec![ShuttingDown, NotInSync, StoreUnreachable]),
        ];
        for (store, sync, stopping, reasons) in table {
            assert_eq!(
                readiness(store, sync, stopping),
                reasons,
                "{store} {sync:?} {stopping}"
            );
        }
    }

    #[test]
    fn an_unreachable_store_is_an_error_and_other_codes_refusals() {
        assert_eq!(outcome_of(ProblemCode::Unavailable), Outcome::Failed);
        for code in [
            ProblemCode::KeyUnknown,
            ProblemCode::KeyUsed,
            ProblemCode::RateLimited,
            ProblemCode::ServerNotInSync,
            ProblemCode::BadRequest,
        ] {
            assert_eq!(outcome_of(code), Outcome::Refused, "{code:?}");
        }
    }

    #[test]
    fn labels_hold_codes_and_types_never_identifiers() {
        let metrics = Metrics::new();
        metrics.enrollment(Outcome::Issued, None, Some(KeyKind::OneTime));
        metrics.enrollment(Outcome::Refused, Some(ProblemCode::KeyUnknown), None);
        metrics.rate_limited(LimitScope::Enrollment);
        metrics.login(LoginResult::Refused);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry).unwrap();
        assert!(
            text.contains(
                r#"ums_stub_enrollments_total{outcome="issued",code="none",key_type="one-time"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"ums_stub_enrollments_total{outcome="refused",code="key_unknown",key_type="unknown"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"ums_stub_rate_limited_total{scope="enrollment"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ums_stub_logins_total{result="refused"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                r#"ums_stub_build_info{{version="{}"}} 1"#,
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
    }
}
