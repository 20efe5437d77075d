//! `/api/v1/keys`: the key page of the UMS Web App as an API.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use onboard_protocol::admin::{
    CreateKeys, CreatedKeys, EditKey, ExportKeys, KeyId, KeyIds, KeyStatus, KeyView, MAX_KEY_IDS,
    MAX_KEYS_PER_REQUEST, Page,
};
use onboard_protocol::{Folder, KeyKind, ProblemCode, UnitId};
use time::OffsetDateTime;

use super::{Admin, Body, Params, PathParam, page};
use crate::http::{ApiError, Shared};
use crate::rights::Operation;
use crate::store::KeyFilter;

/// The key routes.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v1/keys", get(list).post(create))
        .route("/api/v1/keys/import", post(import))
        .route("/api/v1/keys/{id}", get(one).patch(edit).delete(delete_one))
        .route("/api/v1/keys/activate", post(activate))
        .route("/api/v1/keys/deactivate", post(deactivate))
        .route("/api/v1/keys/delete", post(delete_many))
        .route("/api/v1/keys/export", post(export))
        .route("/api/v1/keys/reveal", post(reveal))
}

/// Filters and paging of the key list.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct KeyQuery {
    /// Only keys of this type.
    #[serde(rename = "type")]
    #[param(rename = "type", value_type = Option<String>, pattern = "^(one-time|device-bound|mass)$")]
    kind: Option<KeyKind>,
    /// Only keys with this status.
    status: Option<KeyStatus>,
    /// Only keys bound to this unit ID.
    unit_id: Option<UnitId>,
    /// Only keys whose comment holds this text (ASCII letters in any case).
    #[param(max_length = 200)]
    comment: Option<String>,
    /// Only keys that expire before this time (RFC 3339; expired ones included); keys that never
    /// expire are left out.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    expires_before: Option<OffsetDateTime>,
    /// Only keys that expire after this time (RFC 3339); keys that never expire are left out.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    expires_after: Option<OffsetDateTime>,
    /// The most keys to return (default 1000).
    #[param(minimum = 0, maximum = 10000)]
    limit: Option<usize>,
    /// Start after this key ID (the previous page's `next_after`).
    after: Option<KeyId>,
    /// Also count every key the filter matches (`total`).
    total: Option<bool>,
}

/// The comment of imported keys.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// A comment for all of them.
    #[param(max_length = 1000)]
    comment: Option<String>,
    /// When they stop working (RFC 3339); never when left out.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    expires_at: Option<OffsetDateTime>,
    /// When they start working (RFC 3339); at once when left out.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    not_before: Option<OffsetDateTime>,
    /// Where devices enrolled with them land (`/Sites/Berlin`).
    #[param(value_type = Option<Folder>)]
    folder: Option<Folder>,
}

/// Refuses a creation of more keys than one request may make.
fn check_count(field: &str, count: usize) -> Result<(), ApiError> {
    if count > MAX_KEYS_PER_REQUEST {
        return Err(ApiError::code(
            ProblemCode::Invalid,
            format!(
                "{field}: at most {MAX_KEYS_PER_REQUEST} keys per request (ums-stub keys create \
                 on the server machine makes up to {})",
                crate::keys::MAX_QUANTITY
            ),
        ));
    }
    Ok(())
}

fn check_ids(ids: &[KeyId]) -> Result<(), ApiError> {
    if ids.is_empty() || ids.len() > MAX_KEY_IDS {
        return Err(ApiError::code(
            ProblemCode::Invalid,
            format!("ids: name 1 to {MAX_KEY_IDS} keys"),
        ));
    }
    Ok(())
}

/// Lists keys, masked, with the filters of the UMS key page.
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys", params(KeyQuery),
    responses((status = 200, description = "One page of keys, masked", body = Page<KeyView>)))]
pub async fn list(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
    Params(query): Params<KeyQuery>,
) -> Result<axum::Json<Page<KeyView>>, ApiError> {
    admin.may(Operation::ListKeys)?;
    super::bounded("comment", query.comment.as_ref(), 200)?;
    let filter = KeyFilter {
        kind: query.kind,
        status: query.status,
        unit_id: query.unit_id,
        ids: None,
        comment: query.comment.filter(|text| !text.is_empty()),
        expires_before: query.expires_before,
        expires_after: query.expires_after,
        at: None,
    };
    let keys = shared.stub.keys();
    let mut listed = keys
        .list(&filter, &page(query.limit, query.after)?, false)
        .await?;
    if query.total == Some(true) {
        listed.total = Some(keys.count(&filter).await?);
    }
    Ok(axum::Json(listed))
}

/// Creates one-time keys (a quantity), device-bound keys (unit IDs) or a mass-deployment key
/// (random, or a typed password no other key has: 409 otherwise), each optionally with a
/// lifetime (`not_before`, `expires_at`) and a folder, and a mass key with a usage limit (another
/// kind naming `usage_limit` is refused with 422).
#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", request_body = CreateKeys,
    responses((status = 201, description = "The new keys' IDs", body = CreatedKeys),
        (status = 409, description = "A typed password another key has", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
    Body(request): Body<CreateKeys>,
) -> Result<(StatusCode, axum::Json<CreatedKeys>), ApiError> {
    admin.may(Operation::CreateKeys)?;
    let keys = shared.stub.keys();
    let none = || Box::new(|_| {}) as crate::store::Progress;
    match &request {
        CreateKeys::OneTime { quantity, .. } => check_count("quantity", *quantity)?,
        CreateKeys::DeviceBound { unit_ids, .. } => check_count("unit_ids", unit_ids.len())?,
        CreateKeys::Mass { .. } => {}
    }
    let ids = keys.create(&request, none(), &admin.actor).await?;
    Ok((StatusCode::CREATED, axum::Json(CreatedKeys { ids })))
}

/// Creates one device-bound key per unit ID of a CSV file (one unit ID per row in the first
/// column, header optional, `;` or `,`), as `ums-stub keys create device-bound --import` does.
#[utoipa::path(post, path = "/api/v1/keys/import", tag = "keys", params(ImportQuery),
    request_body(content = String, content_type = "text/csv", description = "One unit ID per row"),
    responses((status = 201, description = "The new keys' IDs", body = CreatedKeys)))]
pub async fn import(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
    Params(query): Params<ImportQuery>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, axum::Json<CreatedKeys>), ApiError> {
    admin.may(Operation::CreateKeys)?;
    super::bounded("comment", query.comment.as_ref(), 1000)?;
    let unit_ids = crate::unit_ids::from_csv(&body)
        .map_err(|error| ApiError::code(ProblemCode::Invalid, format!("body: {error}")))?;
    check_count("body", unit_ids.len())?;
    let request = CreateKeys::DeviceBound {
        unit_ids,
        comment: query.comment.unwrap_or_default(),
        expires_at: query.expires_at,
        not_before: query.not_before,
        folder: query.folder,
    };
    let ids = shared
        .stub
        .keys()
        .create(&request, Box::new(|_| {}), &admin.actor)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(CreatedKeys { ids })))
}

/// One key, masked.
#[utoipa::path(get, path = "/api/v1/keys/{id}", tag = "keys",
    params(("id" = i64, Path, minimum = 1, description = "The key's ID")),
    responses((status = 200, description = "The key, masked", body = KeyView),
        (status = 404, description = "No such key", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
pub async fn one(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
    PathParam(id): PathParam<KeyId>,
) -> Result<axum::Json<KeyView>, ApiError> {
    admin.may(Operation::GetKey)?;
    Ok(axum::Json(shared.stub.keys().get(id, false).await?))
}

/// Edits a key: its comment, lifetime (`not_before`, `expires_at`), usage limit (mass keys only)
/// and folder; members left out stay, `null` clears one. Devices enrolled already keep the folder
/// they landed in.
#[utoipa::path(patch, path = "/api/v1/keys/{id}", tag = "keys", request_body = EditKey,
    params(("id" = i64, Path, minimum = 1, description = "The key's ID")),
    responses((status = 200, description = "The key, masked", body = KeyView),
        (status = 404, description = "No such key", body = onboard_protocol::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A usage limit for a key that is not a mass-deployment key", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
pub async fn edit(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
    PathParam(id): PathParam<KeyId>,
    Body(request): Body<EditKey>,
) -> Result<axum::Json<KeyView>, ApiError> {
    admin.may(Operation::EditKey)?;
    let keys = shared.stub.keys();
    keys.edit(id, &request, &admin.actor).await?;
    Ok(axum::Json(keys.get(id, false).await?))
}

/// Deletes one key.
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys",
    params(("id" = i64, Path, minimum = 1, description = "The key's ID")),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No such key", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
pub async fn delete_one(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
    PathParam(id): PathParam<KeyId>,
) -> Result<StatusCode, ApiError> {
    admin.may(Operation::DeleteKeys)?;
    shared.stub.keys().delete(&[id], &admin.actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Activates keys: all of them, or none if one is unknown (a used one-time key stays used).
#[utoipa::path(post, path = "/api/v1/keys/activate", tag = "keys", request_body = KeyIds,
    responses((status = 204, description = "Activated"),
        (status = 404, description = "A key does not exist; nothing changed", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
pub async fn activate(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
    Body(request): Body<KeyIds>,
) -> Result<StatusCode, ApiError> {
    admin.may(Operation::ActivateKeys)?;
    check_ids(&request.ids)?;
    shared
        .stub
        .keys()
        .activate(&request.ids, &admin.actor)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deactivates keys: all of them, or none if one is unknown.
#[utoipa::path(post, path = "/api/v1/keys/deactivate", tag = "keys", request_body = KeyIds,
    responses((status = 204, description = "Deactivated"),
        (status = 404, description = "A key does not exist; nothing changed", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
pub async fn deactivate(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
    Body(request): Body<KeyIds>,
) -> Result<StatusCode, ApiError> {
    admin.may(Operation::DeactivateKeys)?;
    check_ids(&request.ids)?;
    shared
        .stub
        .keys()
        .deactivate(&request.ids, &admin.actor)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes keys: all of them, or none if one is unknown.
#[utoipa::path(post, path = "/api/v1/keys/delete", tag = "keys", request_body = KeyIds,
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "A key does not exist; nothing changed", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
pub async fn delete_many(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
    Body(request): Body<KeyIds>,
) -> Result<StatusCode, ApiError> {
    admin.may(Operation::DeleteKeys)?;
    check_ids(&request.ids)?;
    shared
        .stub
        .keys()
        .delete(&request.ids, &admin.actor)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The key file for a USB stick: the keys named (all active or not valid yet), or every such key,
/// with the servers devices should contact and the UMS ID fingerprint. Expired, exhausted, used
/// and inactive keys are never exported: naming one is refused (409). A download in the chosen
/// format. Needs `keys:export`: an export is a reveal to a file.
#[utoipa::path(post, path = "/api/v1/keys/export", tag = "keys", request_body = ExportKeys,
    responses((status = 200, description = "The key file",
            content((String = "application/xml"), (String = "text/html"), (String = "text/plain"))),
        (status = 404, description = "A key does not exist", body = onboard_protocol::Problem, content_type = "application/problem+json"),
        (status = 409, description = "A key named is expired, exhausted, used or inactive, or no key can be exported", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
pub async fn export(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
    Body(request): Body<ExportKeys>,
) -> Result<Response, ApiError> {
    admin.may(Operation::ExportKeys)?;
    if request.ids.len() > MAX_KEY_IDS {
        return Err(ApiError::code(
            ProblemCode::Invalid,
            format!("ids: at most {MAX_KEY_IDS} keys"),
        ));
    }
    let servers = if request.servers.is_empty() {
        vec![shared.stub.settings.public_server.clone()]
    } else {
        request
            .servers
            .iter()
            .map(|server| {
                onboard_protocol::Server::new(&server.host, server.port).map_err(|error| {
                    ApiError::code(ProblemCode::Invalid, format!("servers: {error}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    // Audited by the use case before the file is made.
    let file = shared
        .stub
        .keys()
        .acting_as(&admin.actor)
        .export(&request.ids, servers, shared.stub.ums_id.fingerprint())
        .await?;
    let body = file.write(request.format);
    let content_type = match request.format {
        onboard_protocol::Format::Xml => "application/xml",
        onboard_protocol::Format::Html => "text/html; charset=utf-8",
        onboard_protocol::Format::Text => "text/plain; charset=utf-8",
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!(
            "attachment; filename=\"{}\"",
            request.format.default_file_name()
        ))
        .expect("a plain file name"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The keys named, in the clear (IGEL's "Show keys"). Needs `keys:reveal`; every reveal is
/// audited with the keys' IDs.
#[utoipa::path(post, path = "/api/v1/keys/reveal", tag = "keys", request_body = KeyIds,
    responses((status = 200, description = "The keys, shown", body = Vec<KeyView>),
        (status = 404, description = "A key does not exist", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
pub async fn reveal(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
    Body(request): Body<KeyIds>,
) -> Result<Response, ApiError> {
    admin.may(Operation::RevealKeys)?;
    check_ids(&request.ids)?;
    // Audited by the use case before anything is shown: a reveal that cannot be recorded is not
    // made.
    let shown = shared
        .stub
        .keys()
        .acting_as(&admin.actor)
        .reveal(&request.ids)
        .await?;
    let mut response = axum::Json(shown).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
