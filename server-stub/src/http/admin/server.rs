//! `/api/v1/audit` and `/api/v1/ums-id`: the audit log and the server's identity.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use onboard_protocol::admin::{AuditEntryView, Page, ServerView, UmsIdView};
use onboard_protocol::{ProblemCode, UnitId};
use time::OffsetDateTime;

use super::{Admin, Params, bounded, page};
use crate::http::{ApiError, Shared};
use crate::rights::Operation;
use crate::store::AuditFilter;

/// The audit and UMS ID routes.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/ums-id", get(ums_id))
        .route("/api/v1/ums-id/certificate", get(certificate))
        .route("/api/v1/servers", get(servers))
}

/// Which end of the audit log a page starts from.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuditOrder {
    /// Oldest first (the default).
    #[default]
    Oldest,
    /// Newest first: `after` then names the line the page goes back in time from.
    Newest,
}

/// Filters and paging of the audit log.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only lines at or after this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<OffsetDateTime>,
    /// Only lines about this unit ID.
    unit_id: Option<UnitId>,
    /// Only lines with this outcome (`ok` or a problem code).
    #[param(max_length = 64)]
    outcome: Option<String>,
    /// Only lines by this actor (`cli`, an account, a unit ID).
    #[param(max_length = 64)]
    actor: Option<String>,
    /// The most lines to return (default 1000).
    #[param(minimum = 0, maximum = 10000)]
    limit: Option<usize>,
    /// Start after this line (the previous page's `next_after`).
    after: Option<i64>,
    /// Also count every line the filter matches (`total`).
    total: Option<bool>,
    /// `oldest` (the default) or `newest` first.
    #[param(inline)]
    order: Option<AuditOrder>,
}

/// The audit log, oldest first: key changes, reveals, exports, enrollments, logins, account and
/// token changes, with who made each and from where. Never a key.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "One page of audit lines", body = Page<AuditEntryView, i64>)))]
pub async fn audit(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
    Params(query): Params<AuditQuery>,
) -> Result<axum::Json<Page<AuditEntryView, i64>>, ApiError> {
    admin.may(Operation::ReadAudit)?;
    bounded("outcome", query.outcome.as_ref(), 64)?;
    bounded("actor", query.actor.as_ref(), 64)?;
    let filter = AuditFilter {
        since: query.since,
        unit_id: query.unit_id,
        outcome: query.outcome,
        actor: query.actor,
        newest_first: matches!(query.order, Some(AuditOrder::Newest)),
    };
    let log = shared.stub.audit_log();
    let mut listed = log.list(&filter, &page(query.limit, query.after)?).await?;
    if query.total == Some(true) {
        listed.total = Some(log.count(&filter).await?);
    }
    Ok(axum::Json(listed))
}

/// The Main UMS ID as the UMS ID page shows it: the fingerprint whole, in four parts, short, and
/// the communication token; how this server stands towards it; and this server's Local UMS ID
/// when that is not the Main one.
#[utoipa::path(get, path = "/api/v1/ums-id", tag = "ums-id",
    responses((status = 200, description = "The UMS ID", body = UmsIdView)))]
pub async fn ums_id(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
) -> Result<axum::Json<UmsIdView>, ApiError> {
    admin.may(Operation::ShowUmsId)?;
    Ok(axum::Json(crate::servers::ums_id_view(&shared.stub).await?))
}

/// The servers sharing this server's database and the UMS ID each holds, as the UMS ID page's
/// status table shows them: running or not by their heartbeats, by the database's clock.
#[utoipa::path(get, path = "/api/v1/servers", tag = "ums-id",
    responses((status = 200, description = "One row per server", body = Vec<ServerView>)))]
pub async fn servers(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
) -> Result<axum::Json<Vec<ServerView>>, ApiError> {
    admin.may(Operation::ShowUmsId)?;
    Ok(axum::Json(crate::servers::list(&shared.stub).await?))
}

/// The Main UMS ID certificate as a `.crt` download (PEM), for devices and tools to trust;
/// refused by a server not in sync, which holds no Main UMS ID it could check.
#[utoipa::path(get, path = "/api/v1/ums-id/certificate", tag = "ums-id",
    responses((status = 200, description = "The certificate, PEM", content_type = "application/x-pem-file", body = String),
        (status = 503, description = "This server is not in sync with the Main UMS ID", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
pub async fn certificate(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
) -> Result<Response, ApiError> {
    admin.may(Operation::ShowUmsId)?;
    if let Some(why) = crate::servers::certificate_refusal(shared.stub.sync) {
        return Err(ApiError::Problem {
            problem: onboard_protocol::Problem::new(ProblemCode::ServerNotInSync).with_detail(why),
            retry_after: None,
        });
    }
    let mut response = shared
        .stub
        .ums_id
        .certificate_pem()
        .to_owned()
        .into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-pem-file"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"ums-id.crt\""),
    );
    Ok(response)
}
