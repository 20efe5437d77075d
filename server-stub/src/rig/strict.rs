//! Strict mode (test-rig mode): a request for a route the server does not serve, or with a method
//! the route does not take, is logged at error level and counted, so a rig notices a client (an
//! image, a script, a tool under test) calling something the server does not serve. The counts
//! are kept per method and path, for a bounded number of distinct pairs; the control listener
//! reads them (`GET /rig/v1/strict`) and the metrics listener counts them by method
//! (`ums_stub_rig_unknown_requests_total`).
//!
//! Which answers count is a pure rule ([`unserved`]): a 404 or 405 that no route gave as a problem
//! of its own (a route's 404 for a device it does not know names a problem code; the router's
//! answers for an unknown path or a wrong method name none).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use onboard_protocol::ProblemCode;
use serde::Serialize;

use crate::metrics::Metrics;

/// The most distinct (method, path) pairs kept; requests beyond are counted in the total only.
pub const MAX_PAIRS: usize = 256;

/// The most characters of a path kept and logged.
pub const MAX_PATH_CHARS: usize = 200;

/// Whether an answer is the router's for a request it does not serve: a 404 (no such route) or a
/// 405 (no such method on the route) that carries no problem code of a route.
pub fn unserved(status: StatusCode, route_problem: bool) -> bool {
    matches!(
        status,
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
    ) && !route_problem
}

/// The method as counted: its name when HTTP defines it, else `OTHER` (so that a client cannot
/// grow the metric's labels).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

/// The path as kept: at most [`MAX_PATH_CHARS`] characters (the query is never kept).
pub fn path_kept(path: &str) -> String {
    match path.char_indices().nth(MAX_PATH_CHARS) {
        Some((end, _)) => format!("{}…", &path[..end]),
        None => path.to_owned(),
    }
}

/// One (method, path) pair the server did not serve, and how often it was asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UnservedRequest {
    /// The method (`OTHER` for one HTTP does not define).
    pub method: String,
    /// The path, without the query, cut at 200 characters.
    pub path: String,
    /// How many requests asked for it.
    pub count: u64,
}

/// What strict mode counted since the start or the last reset.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
pub struct UnservedRequests {
    /// Every request the server did not serve.
    pub total: u64,
    /// Those of them past the 256 distinct pairs kept, counted in `total` only.
    pub not_itemised: u64,
    /// Per (method, path), by method then path.
    pub requests: Vec<UnservedRequest>,
}

/// The counts of strict mode.
#[derive(Debug)]
pub struct Strict {
    metrics: Arc<Metrics>,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    pairs: BTreeMap<(&'static str, String), u64>,
    total: u64,
    not_itemised: u64,
}

impl Strict {
    /// Counts kept here and, by method, in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Strict {
        Strict {
            metrics,
            counts: Mutex::default(),
        }
    }

    /// Counts one request for `method` `path` the server did not serve, and logs it at error
    /// level.
    pub fn count(&self, method: &Method, path: &str) {
        let method = method_label(method);
        let path = path_kept(path);
        tracing::error!(
            method,
            path = %path,
            "strict mode (test-rig): a client asked for a route or method this server does not serve"
        );
        self.metrics.unserved_request(method);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total += 1;
        let known = counts.pairs.len();
        match counts.pairs.get_mut(&(method, path.clone())) {
            Some(count) => *count += 1,
            None if known < MAX_PAIRS => {
                counts.pairs.insert((method, path), 1);
            }
            None => counts.not_itemised += 1,
        }
    }

    /// What was counted.
    pub fn view(&self) -> UnservedRequests {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        UnservedRequests {
            total: counts.total,
            not_itemised: counts.not_itemised,
            requests: counts
                .pairs
                .iter()
                .map(|((method, path), count)| UnservedRequest {
                    method: (*method).to_owned(),
                    path: path.clone(),
                    count: *count,
                })
                .collect(),
        }
    }

    /// Forgets every count (the metric keeps counting up, as counters do).
    pub fn clear(&self) {
        *self.counts.lock().unwrap_or_else(|e| e.into_inner()) = Counts::default();
    }
}

/// The middleware of strict mode: counts the answers [`unserved`] says the router gave.
pub async fn watch(State(strict): State<Arc<Strict>>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    if unserved(
        response.status(),
        response.extensions().get::<ProblemCode>().is_some(),
    ) {
        strict.count(&method, &path);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_routers_own_404_and_405_count() {
        let table = [
            (StatusCode::NOT_FOUND, false, true),
            (StatusCode::METHOD_NOT_ALLOWED, false, true),
            // A route's own 404 (a device it does not know) names a problem code.
            (StatusCode::NOT_FOUND, true, false),
            (StatusCode::OK, false, false),
            (StatusCode::BAD_REQUEST, false, false),
            (StatusCode::UNAUTHORIZED, false, false),
            (StatusCode::INTERNAL_SERVER_ERROR, false, false),
        ];
        for (status, route_problem, counted) in table {
            assert_eq!(
                unserved(status, route_problem),
                counted,
                "{status} {route_problem}"
            );
        }
    }

    #[test]
    fn labels_and_paths_stay_bounded() {
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "OTHER");
        let long = "/x".repeat(300);
        let kept = path_kept(&long);
        assert_eq!(kept.chars().count(), MAX_PATH_CHARS + 1);
        assert!(kept.ends_with('…'));
        assert_eq!(path_kept("/api/v2/keys"), "/api/v2/keys");
        let wide = "é".repeat(250);
        assert_eq!(path_kept(&wide).chars().count(), MAX_PATH_CHARS + 1);
    }

    #[test]
    fn counts_per_pair_up_to_the_bound_then_in_the_total_only() {
        let strict = Strict::new(Arc::new(Metrics::new()));
        strict.count(&Method::GET, "/nope");
        strict.count(&Method::GET, "/nope");
        strict.count(&Method::POST, "/nope");
        let view = strict.view();
        assert_eq!(view.total, 3);
        assert_eq!(
            view.requests,
            [
                UnservedRequest {
                    method: "GET".into(),
                    path: "/nope".into(),
                    count: 2
                },
                UnservedRequest {
                    method: "POST".into(),
                    path: "/nope".into(),
                    count: 1
                },
            ]
        );
        for n in 0..MAX_PAIRS + 10 {
            strict.count(&Method::GET, &format!("/n/{n}"));
        }
        let view = strict.view();
        assert_eq!(view.requests.len(), MAX_PAIRS);
        assert_eq!(view.total, 3 + MAX_PAIRS as u64 + 10);
        assert_eq!(view.not_itemised, 12);
        // A pair already kept goes on counting when the table is full.
        strict.count(&Method::GET, "/nope");
        let nope = strict
            .view()
            .requests
            .into_iter()
            .find(|kept| kept.path == "/nope");
        assert_eq!(nope.map(|kept| kept.count), Some(3));
        strict.clear();
        assert_eq!(strict.view(), UnservedRequests::default());
    }
}
