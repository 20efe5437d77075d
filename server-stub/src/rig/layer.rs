//! The middleware that applies the fault plan of a server in test-rig mode, and the closing of
//! connector sessions every N seconds. Present only when the server has a [`Rig`]: a normal
//! `serve` never builds it.
//!
//! Each request is classed by its path ([`route_class`], pure), then meets, in this order:
//! 1. the store made unavailable ([`super::actions::store_unavailable`]): 503 `unavailable`
//!    with `Retry-After`;
//! 2. a device certificate the rig expired ([`super::actions::expire_certificates`]): the
//!    inventory and the connector refuse it as they refuse any expired one (renewal takes it);
//! 3. one seeded draw of the plan for its class: refused (problem+json, `Retry-After` on 429 and
//!    503), delayed, held until [`Rig::release_held`], or run to its end (the store commits)
//!    and its connection closed without the answer ([`ConnectionKill`]).
//!
//! A held request still counts against the server's request time-out (30 s): a rig that holds
//! one longer sees it answered 408.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use onboard_protocol::routes::{
    ADMIN_API_PREFIX, DEVICE_CHECK_KEYS, DEVICE_CONNECT, EST_SIMPLEREENROLL,
};
use onboard_protocol::{Problem, ProblemCode};

use super::{FaultKind, Rig, RouteClass};
use crate::http::{ApiError, Peer};

/// The class of a request to `path`, for the fault plan; `None` for paths no class covers (the
/// plan leaves them alone).
pub fn route_class(path: &str) -> Option<RouteClass> {
    if path == EST_SIMPLEREENROLL {
        Some(RouteClass::Renewal)
    } else if path.starts_with("/.well-known/est/") || path == DEVICE_CHECK_KEYS {
        Some(RouteClass::Enrollment)
    } else if path == DEVICE_CONNECT {
        Some(RouteClass::Connector)
    } else if path.starts_with("/device/v1/") {
        Some(RouteClass::Inventory)
    } else if path == "/"
        || path == "/app"
        || path.starts_with("/app/")
        || path == ADMIN_API_PREFIX
        || path.starts_with("/api/")
    {
        Some(RouteClass::Admin)
    } else {
        None
    }
}

/// A connection's kill switch: the accept loop gives each connection of a server in test-rig
/// mode one (as a request extension) and closes the connection, with no answer, once it is
/// pulled. A `drop_after_commit` fault pulls it after its request ran.
#[derive(Debug, Clone, Default)]
pub struct ConnectionKill(Arc<tokio::sync::Notify>);

impl ConnectionKill {
    /// A switch not pulled yet.
    pub fn new() -> ConnectionKill {
        ConnectionKill::default()
    }

    /// Pulls it: the connection closes without writing anything more.
    pub fn pull(&self) {
        self.0.notify_one();
    }

    /// Completes once it is pulled (also when it was pulled before the wait began).
    pub async fn pulled(&self) {
        self.0.notified().await;
    }
}

/// A refusal as the plan words it: `status` with a problem body naming `code` (`unavailable` by
/// default); `Retry-After` (at least a second) on 429 and 503.
pub fn refusal(
    status: u16,
    code: Option<ProblemCode>,
    retry_after_seconds: Option<u64>,
) -> Response {
    let mut problem = Problem::new(code.unwrap_or(ProblemCode::Unavailable))
        .with_detail("refused by the test rig's fault plan");
    problem.status = status;
    let retry_after = matches!(status, 429 | 503)
        .then(|| Duration::from_secs(retry_after_seconds.unwrap_or(1).max(1)));
    ApiError::Problem {
        problem,
        retry_after,
    }
    .into_response()
}

/// The store-unavailable answer: 503 `unavailable`, `Retry-After` the time left (whole seconds,
/// rounded up).
fn unavailable(left: Duration) -> Response {
    ApiError::Problem {
        problem: Problem::new(ProblemCode::Unavailable)
            .with_detail("the server's database is busy or unreachable; retry later"),
        retry_after: Some(left),
    }
    .into_response()
}

/// The serial of the device certificate a request was made with over mutual TLS, if any.
fn presented_serial(request: &Request) -> Option<String> {
    let der = request
        .extensions()
        .get::<Peer>()?
        .client_certificate
        .as_deref()?;
    crate::http::certificate_identity(der).map(|(_, serial)| serial)
}

/// The middleware: applies `rig` to one request (see the module's documentation).
pub async fn apply(State(rig): State<Arc<Rig>>, request: Request, next: Next) -> Response {
    let Some(class) = route_class(request.uri().path()) else {
        return next.run(request).await;
    };
    if let Some(left) = rig.store_unavailable_for() {
        return unavailable(left);
    }
    if matches!(class, RouteClass::Inventory | RouteClass::Connector)
        && rig.expires_any()
        && presented_serial(&request).is_some_and(|serial| rig.is_expired(&serial))
    {
        return ApiError::code(
            ProblemCode::BadRequest,
            "the device certificate has expired: renew it (simplereenroll) first",
        )
        .into_response();
    }
    match rig.draw(class) {
        None => next.run(request).await,
        Some(FaultKind::Refuse {
            status,
            code,
            retry_after_seconds,
        }) => {
            tracing::debug!(route = class.as_str(), status, "test rig: request refused");
            refusal(status, code, retry_after_seconds)
        }
        Some(FaultKind::Delay { millis }) => {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            next.run(request).await
        }
        Some(FaultKind::Hold) => {
            tracing::debug!(route = class.as_str(), "test rig: request held");
            rig.hold().await;
            next.run(request).await
        }
        Some(FaultKind::DropAfterCommit) => {
            let kill = request.extensions().get::<ConnectionKill>().cloned();
            let response = next.run(request).await;
            match kill {
                Some(kill) => {
                    tracing::debug!(
                        route = class.as_str(),
                        "test rig: answer lost after the commit"
                    );
                    kill.pull();
                    // The connection is closed from the accept loop; this answer is never sent.
                    std::future::pending::<Response>().await
                }
                None => {
                    tracing::warn!(
                        "test rig: no connection to drop (the router runs outside the accept \
                         loop); the answer is sent"
                    );
                    response
                }
            }
        }
    }
}

/// Closes every connector session of `sessions` each `close_sessions_every_seconds` of the plan
/// in force (devices reconnect); idle while the plan sets none. Runs until aborted.
pub async fn close_sessions(rig: Arc<Rig>, sessions: Arc<crate::connector::Sessions>) {
    loop {
        let every = rig
            .faults()
            .close_sessions_every_seconds
            .map(Duration::from_secs);
        let changed = rig.plan_changed.notified();
        match every {
            Some(every) => tokio::select! {
                () = changed => {}
                () = tokio::time::sleep(every) => {
                    let closed = sessions.close_every_session("closed by the test rig");
                    tracing::debug!(closed, "test rig: closed every connector session");
                }
            },
            None => changed.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_classed_by_who_calls_them() {
        use RouteClass::*;
        let table = [
            ("/.well-known/est/simpleenroll", Some(Enrollment)),
            ("/.well-known/est/cacerts", Some(Enrollment)),
            ("/device/v1/check-keys", Some(Enrollment)),
            ("/.well-known/est/simplereenroll", Some(Renewal)),
            ("/device/v1/connect", Some(Connector)),
            ("/device/v1/inventory", Some(Inventory)),
            ("/device/v1/anything-else", Some(Inventory)),
            ("/api/v1/keys", Some(Admin)),
            ("/api/v1", Some(Admin)),
            ("/", Some(Admin)),
            ("/app", Some(Admin)),
            ("/app/app.js", Some(Admin)),
            ("/favicon.ico", None),
            ("/device/v2/inventory", None),
            ("/apple", None),
            ("/application", None),
        ];
        for (path, class) in table {
            assert_eq!(route_class(path), class, "{path}");
        }
    }

    #[tokio::test]
    async fn refusals_carry_the_status_code_and_retry_after_the_plan_names() {
        let table = [
            (503, None, Some(3), ProblemCode::Unavailable, Some("3")),
            (503, None, None, ProblemCode::Unavailable, Some("1")),
            (
                429,
                Some(ProblemCode::RateLimited),
                Some(0),
                ProblemCode::RateLimited,
                Some("1"),
            ),
            (
                409,
                Some(ProblemCode::KeyUsed),
                Some(9),
                ProblemCode::KeyUsed,
                None,
            ),
        ];
        for (status, code, after, expected_code, expected_after) in table {
            let response = refusal(status, code, after);
            assert_eq!(response.status().as_u16(), status);
            let retry_after = response
                .headers()
                .get(axum::http::header::RETRY_AFTER)
                .map(|value| value.to_str().unwrap().to_owned());
            assert_eq!(retry_after.as_deref(), expected_after, "{status}");
            let body = axum::body::to_bytes(response.into_body(), 4096)
                .await
                .unwrap();
            let problem: Problem = serde_json::from_slice(&body).unwrap();
            assert_eq!((problem.status, problem.code), (status, expected_code));
        }
    }
}
