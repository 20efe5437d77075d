//! The admin API, `/api/v1`: JSON over the same HTTPS listener as EST, for the Web App, scripts and
//! the command line driving a remote server.
//!
//! Every route but the OpenAPI document and the login names the [`Operation`] it performs; the
//! [`Admin`] extractor authenticates the request (a bearer token, or the session cookie plus the
//! CSRF header on writes) and [`Admin::may`] asks [`crate::rights`] whether its rights allow it.
//! Malformed paths, queries and bodies are refused as `invalid` (422) problems, never with axum's
//! own plain-text answers, so that every answer is one the OpenAPI document describes.
//!
//! # Layout
//! - [`keys`]: create, list, get, edit, (de)activate, delete, export and reveal keys.
//! - [`devices`]: list, get and delete enrolled devices.
//! - [`server`]: the audit log and the UMS ID.
//! - [`accounts`]: accounts and API tokens.
//! - [`session`]: Web App login and logout.
//! - [`openapi`]: the OpenAPI 3.1 document, generated from the handlers.

pub mod accounts;
pub mod devices;
pub mod keys;
pub mod openapi;
pub mod server;
pub mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use onboard_protocol::ProblemCode;
use serde::de::DeserializeOwned;

use super::{ApiError, Peer, Shared};
use crate::accounts::{
    AccountError, AuthError, Caller, Granter, Proof, SESSION_COOKIE, csrf_matches,
};
use crate::rights::{self, Operation};
use crate::store::{Actor, PageRequest};

/// The header that carries a session's CSRF token on writes.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The most bytes of an admin request body: a CSV or JSON list of a million unit IDs fits.
pub const MAX_ADMIN_BODY_BYTES: usize = 32 * 1024 * 1024;

/// The rows of a page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 1000;

/// The most rows of one page.
pub const MAX_LIMIT: usize = 10_000;

/// Every admin route, under `/api/v1`.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .merge(keys::router())
        .merge(devices::router())
        .merge(server::router())
        .merge(accounts::router())
        .merge(session::router())
        .merge(openapi::router())
        .layer(axum::extract::DefaultBodyLimit::max(MAX_ADMIN_BODY_BYTES))
}

/// Where the [`Admin`] of a request puts its actor, for [`audit_forbidden`].
#[derive(Debug, Clone, Default)]
struct ActorSlot(Arc<std::sync::Mutex<Option<Actor>>>);

/// Audits every admin request refused with 403: who (the authenticated actor), the method and
/// path (never the query or body), and why.
pub async fn audit_forbidden(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let slot = ActorSlot::default();
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(slot.clone());
    let what = format!("{} {}", parts.method, parts.uri.path());
    let source = client_of(&parts, &shared);
    let response = next.run(Request::from_parts(parts, body)).await;
    if response.status() != axum::http::StatusCode::FORBIDDEN {
        return response;
    }
    let actor = slot
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    // A 403 that no credentials reached (none is made before authentication today) names the
    // address only.
    let actor = actor.unwrap_or_else(|| Actor::anonymous(source));
    let mut entry = crate::store::AuditEntry::new("api.forbidden", &actor);
    entry.outcome = ProblemCode::Forbidden.as_str().to_owned();
    entry.detail = what;
    if let Err(error) = shared.stub.store.record(entry).await {
        tracing::warn!("cannot audit a refused admin request: {error}");
    }
    response
}

/// An authenticated administrator and where the request came from.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Who, with which rights.
    pub caller: Caller,
    /// The account and the client address, for the audit log.
    pub actor: Actor,
}

impl Admin {
    /// The caller as the one who gives rights in an account or token change.
    pub fn granter(&self) -> Granter {
        Granter {
            actor: self.actor.clone(),
            rights: self.caller.rights,
        }
    }

    /// Refuses with 403 unless the caller's rights allow `operation`.
    pub fn may(&self, operation: Operation) -> Result<(), ApiError> {
        if rights::allows(self.caller.rights, operation) {
            Ok(())
        } else {
            Err(ApiError::code(
                ProblemCode::Forbidden,
                format!(
                    "the account {} lacks the right {} for this",
                    self.caller.account,
                    operation.right()
                ),
            ))
        }
    }
}

/// The client address of a request, for the audit log and login limits.
pub(super) fn client_of(parts: &Parts, shared: &Shared) -> String {
    parts.extensions.get::<Peer>().map_or_else(
        || "local".to_owned(),
        |peer| {
            peer.client(&parts.headers, &shared.stub.settings.trusted_proxies)
                .to_string()
        },
    )
}

fn not_in_sync(detail: String) -> ApiError {
    ApiError::Problem {
        problem: onboard_protocol::Problem::new(ProblemCode::ServerNotInSync).with_detail(detail),
        retry_after: Some(std::time::Duration::from_secs(60)),
    }
}

fn unauthorized() -> ApiError {
    ApiError::code(
        ProblemCode::Unauthorized,
        "send an API token as Authorization: Bearer, or log in at /api/v1/session",
    )
}

/// The bearer token of `Authorization`, if the header is one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The value of the session cookie, if sent.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Unauthorized => unauthorized(),
            AuthError::NotInSync => not_in_sync(error.to_string()),
            AuthError::Store(error) => error.into(),
        }
    }
}

impl From<AccountError> for ApiError {
    fn from(error: AccountError) -> Self {
        match error {
            AccountError::Invalid(error) if rights::is_forbidden(&error) => {
                ApiError::code(ProblemCode::Forbidden, error.to_string())
            }
            AccountError::Invalid(error) if rights::is_conflict(&error) => {
                ApiError::code(ProblemCode::Conflict, error.to_string())
            }
            AccountError::Tampered(_) => ApiError::code(ProblemCode::Conflict, error.to_string()),
            AccountError::NotInSync => not_in_sync(error.to_string()),
            AccountError::Invalid(error) => ApiError::code(ProblemCode::Invalid, error.to_string()),
            AccountError::Store(error) => error.into(),
            AccountError::Hash(_) => ApiError::Internal(error.into()),
        }
    }
}

impl FromRequestParts<Arc<Shared>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        // A server not in sync cannot tell an authentic account row from a forged one: it
        // changes nothing, whoever asks.
        if rights::refused_out_of_sync(
            shared.stub.sync != crate::cluster::SyncStatus::NotInSync,
            &parts.method,
        ) {
            return Err(not_in_sync(
                "this server is not in sync with the Main UMS ID (no or a wrong cluster secret): \
                 it refuses every admin change; restart it with the cluster's secret"
                    .to_owned(),
            ));
        }
        let accounts = shared.stub.accounts();
        // Expiries by the database's clock, the same on every server sharing it.
        let now = shared.stub.store.clock().await?;
        let caller = if let Some(token) = bearer(&parts.headers) {
            accounts.bearer(token, now).await?
        } else if let Some(cookie) = session_cookie(&parts.headers) {
            let caller = accounts.session(cookie, now).await?;
            // The session is genuine: a refusal for a missing CSRF token names its account.
            fill_slot(parts, actor_of(&caller, parts, shared));
            if rights::needs_csrf(&parts.method, true) {
                let Proof::Session { csrf, .. } = &caller.proof else {
                    return Err(unauthorized());
                };
                let presented = parts
                    .headers
                    .get(CSRF_HEADER)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default();
                if !csrf_matches(csrf, presented) {
                    return Err(ApiError::code(
                        ProblemCode::Forbidden,
                        "a write with the session cookie needs the session's CSRF token in \
                         X-CSRF-Token",
                    ));
                }
            }
            caller
        } else {
            return Err(unauthorized());
        };
        let actor = actor_of(&caller, parts, shared);
        fill_slot(parts, actor.clone());
        Ok(Admin { caller, actor })
    }
}

/// The audit log's actor for `caller`: its account, from the request's client address, through
/// its token when it used one.
fn actor_of(caller: &Caller, parts: &Parts, shared: &Shared) -> Actor {
    let actor = Actor::admin(&caller.account, client_of(parts, shared));
    match &caller.proof {
        Proof::Token { id, name } => actor.via_token(name, id),
        Proof::Session { .. } => actor,
    }
}

/// Tells [`audit_forbidden`] who the request's caller is.
fn fill_slot(parts: &Parts, actor: Actor) {
    if let Some(slot) = parts.extensions.get::<ActorSlot>() {
        *slot
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(actor);
    }
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::code(ProblemCode::Invalid, detail)
}

/// A JSON object body; anything else is an `invalid` problem naming what is wrong. The body is
/// read straight into `T`, never into a generic JSON tree, so its size bounds the memory it costs.
/// (serde would also read a struct from an array; every body here is an object.)
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(invalid("body: expected Content-Type: application/json"));
        }
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|rejection| invalid(format!("body: {}", rejection.body_text())))?;
        if bytes.iter().find(|byte| !byte.is_ascii_whitespace()) != Some(&b'{') {
            return Err(invalid("body: expected a JSON object"));
        }
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|error| invalid(format!("body: {error}")))
    }
}

/// Query parameters; anything malformed is an `invalid` problem.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Params(value))
            .map_err(|rejection| invalid(format!("query: {}", rejection.body_text())))
    }
}

/// A path parameter; anything malformed is an `invalid` problem.
#[derive(Debug)]
pub struct PathParam<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathParam<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| PathParam(value))
            .map_err(|rejection| invalid(format!("path: {}", rejection.body_text())))
    }
}

/// Refuses a query text longer than `max` characters, naming it.
pub fn bounded(name: &str, value: Option<&String>, max: usize) -> Result<(), ApiError> {
    match value {
        Some(text) if text.chars().count() > max => {
            Err(invalid(format!("{name}: at most {max} characters")))
        }
        _ => Ok(()),
    }
}

/// A page request from `limit` and `after`, with the limit checked.
pub fn page<A>(limit: Option<usize>, after: Option<A>) -> Result<PageRequest<A>, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit > MAX_LIMIT {
        return Err(invalid(format!("limit: at most {MAX_LIMIT}")));
    }
    Ok(PageRequest { limit, after })
}
