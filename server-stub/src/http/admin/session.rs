//! `/api/v1/session`: Web App login, the caller's identity, logout.
//!
//! A login sets the session cookie (`HttpOnly`, `Secure`, `SameSite=Strict`) and answers with the
//! CSRF token that writes made with the cookie carry in `X-CSRF-Token`. Failed logins are limited
//! per account and source network ([`crate::login_limit`]): a failure is reserved before the
//! password is checked and given back when it was right, so nobody can lock an administrator out
//! from another network.

use crate::metrics::{LimitScope, LoginResult};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use onboard_protocol::admin::{CallerView, Login};
use onboard_protocol::{Problem, ProblemCode};

use super::{Admin, Body, client_of};
use crate::accounts::{Proof, SESSION_COOKIE};
use crate::http::{ApiError, Shared};
use crate::login_limit::LoginAdmission;
use crate::rights::MAX_ACCOUNT_NAME_CHARS;
use crate::store::{Actor, AuditEntry};

/// The session routes.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v1/session", get(whoami).post(login).delete(logout))
        // A login is a name and a password: anyone may send one, so it may not be large.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_LOGIN_BYTES))
}

/// The most bytes of a login body.
const MAX_LOGIN_BYTES: usize = 8 * 1024;

/// The client address, taken before the body.
pub struct Client(String);

impl FromRequestParts<Arc<Shared>> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        Ok(Client(client_of(parts, shared)))
    }
}

fn cookie(value: &str, max_age: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict"
    ))
    .expect("a base64url value")
}

/// Logs in with a name and password; sets the session cookie.
#[utoipa::path(post, path = "/api/v1/session", tag = "session", request_body = Login, security(),
    responses((status = 200, description = "Logged in; the cookie is set", body = CallerView,
            headers(("set-cookie" = String, description = "The session cookie"))),
        (status = 429, description = "Too many failed logins for this account or address", body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds to wait")))))]
pub async fn login(
    State(shared): State<Arc<Shared>>,
    Client(source): Client,
    Body(login): Body<Login>,
) -> Result<Response, ApiError> {
    if login.name.chars().count() > MAX_ACCOUNT_NAME_CHARS {
        return Err(ApiError::code(
            ProblemCode::Invalid,
            format!("name: at most {MAX_ACCOUNT_NAME_CHARS} characters"),
        ));
    }
    let address = source
        .parse()
        .unwrap_or(std::net::Ipv6Addr::LOCALHOST.into());
    // A failure is reserved before the password is checked, so parallel guesses cannot all slip
    // under the limit while argon2 runs; a success gives it back (crate::login_limit).
    let (ticket, decoy, _lane) = match shared.logins.admit(address, &login.name, Instant::now()) {
        LoginAdmission::Refused { retry_after } => {
            shared.metrics.login(LoginResult::Limited);
            shared.metrics.rate_limited(LimitScope::Login);
            return Err(ApiError::Problem {
                problem: Problem::new(ProblemCode::RateLimited).with_detail(
                    "too many failed logins to this account from this network, or from this \
                     network to any account; retry later",
                ),
                retry_after: Some(retry_after),
            });
        }
        LoginAdmission::Check {
            ticket,
            wait,
            decoy,
            lane,
        } => {
            // An account guessed at from many networks: those that failed against it go one at a
            // time through its lane, each waiting first, until its password is checked.
            let held = match lane {
                Some(lane) => Some(lane.lock_owned().await),
                None => None,
            };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            (ticket, decoy, held)
        }
    };
    let name = login.name.clone();
    let actor = Actor::admin(&name, &source);
    let outcome = shared.stub.accounts().login(login, &actor, decoy).await;
    if !matches!(outcome, Err(crate::accounts::AuthError::Unauthorized)) {
        // Only wrong names and passwords are failures.
        ticket.succeeded(&shared.logins);
    }
    match outcome {
        Ok(session) => {
            shared.metrics.login(LoginResult::Ok);
            let max_age = shared.stub.settings.session_lifetime.whole_seconds();
            let mut response = axum::Json(session.caller.view()).into_response();
            let headers = response.headers_mut();
            headers.insert(header::SET_COOKIE, cookie(&session.cookie, max_age));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(response)
        }
        Err(crate::accounts::AuthError::Unauthorized) => {
            shared.metrics.login(LoginResult::Refused);
            // The name typed is not an actor: it may be anything, a password typed in the wrong
            // field among them. It goes into the detail only when an account has it.
            let mut entry = AuditEntry::new("session.login", &Actor::anonymous(&source));
            entry.outcome = ProblemCode::Unauthorized.as_str().to_owned();
            if matches!(shared.stub.store.account(&name).await, Ok(Some(_))) {
                entry.detail = format!("failed login as {name}");
            }
            if let Err(error) = shared.stub.store.record(entry).await {
                tracing::warn!("cannot audit a failed login: {error}");
            }
            Err(ApiError::code(
                ProblemCode::Unauthorized,
                "the name or the password is wrong",
            ))
        }
        Err(error) => Err(error.into()),
    }
}

/// Who the credentials of this request belong to and the rights they hold; with the session
/// cookie, also the CSRF token and when the session ends. A server not in sync, which can verify
/// no credentials, says so instead of 401 (the sign-in page shows it at the top).
#[utoipa::path(get, path = "/api/v1/session", tag = "session",
    responses((status = 200, description = "The caller", body = CallerView),
        (status = 503, description = "This server is not in sync with the Main UMS ID", body = Problem, content_type = "application/problem+json")))]
pub async fn whoami(
    State(shared): State<Arc<Shared>>,
    admin: Result<Admin, ApiError>,
) -> Result<axum::Json<CallerView>, ApiError> {
    match admin {
        Ok(admin) => Ok(axum::Json(admin.caller.view())),
        Err(_) if shared.stub.sync == crate::cluster::SyncStatus::NotInSync => {
            Err(not_in_sync_here(&shared).await)
        }
        Err(error) => Err(error),
    }
}

/// The refusal of a server not in sync, naming the Main UMS ID the database holds and this
/// server's Local one (both public: devices see them in the TLS chain).
async fn not_in_sync_here(shared: &Shared) -> ApiError {
    let main = match shared.stub.store.main_ums_id().await {
        Ok(Some(main)) => main.fingerprint.short(),
        _ => "unknown".to_owned(),
    };
    ApiError::Problem {
        problem: Problem::new(ProblemCode::ServerNotInSync).with_detail(format!(
            "This server is not in sync with the Main UMS ID {main}: it has no or a wrong \
             cluster secret, so it runs with its Local UMS ID {} and signs nobody in, enrolls no \
             device and changes nothing. Restart it with the cluster's secret.",
            shared.stub.local_fingerprint.short()
        )),
        retry_after: None,
    }
}

/// Logs out: ends the session and clears the cookie (a bearer token is left as it is).
#[utoipa::path(delete, path = "/api/v1/session", tag = "session",
    responses((status = 204, description = "Logged out; the cookie is cleared")))]
pub async fn logout(State(shared): State<Arc<Shared>>, admin: Admin) -> Result<Response, ApiError> {
    if let Proof::Session { digest, .. } = &admin.caller.proof {
        shared.stub.accounts().logout(digest, &admin.actor).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie("", 0));
    Ok(response)
}
