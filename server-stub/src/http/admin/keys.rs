//! `/api/v1/keys`: the key page of the UMS Web App as an API.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use onboard_protocol::admin::{
    ChangeKeys, CreateKeys, CreatedKeys, EditKey, ExportCheck, ExportKeys, ExportServerCheck,
    ExportServers, KeyAction, KeyId, KeyIds, KeyMatch, KeyStatus, KeyView, KeysChanged,
    MAX_KEY_IDS, MAX_KEYS_PER_REQUEST, Page,
};
use onboard_protocol::{Folder, KeyKind, ProblemCode};
use time::OffsetDateTime;

use super::{Admin, Body, Params, PathParam, page};
use crate::http::{ApiError, Shared};
use crate::rights::Operation;
use crate::store::{KeyFilter, KeyListing, KeySort};

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
        .route("/api/v1/keys/export/check", post(export_check))
        .route("/api/v1/keys/reveal", post(reveal))
        .route("/api/v1/keys/change", post(change))
        .route("/api/v1/keys/export/servers", get(export_servers))
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
    /// Only keys bound to a unit ID starting with this: a whole unit ID or its first characters
    /// (`00E0C5`, `00:E0:C5`).
    #[param(max_length = 26, pattern = r"^[0-9A-Za-z:.\-]*$")]
    unit_id: Option<String>,
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
    /// Only keys numbered above this (below it with `order=desc`): the previous page's
    /// `next_after`, which is given in ID order.
    after: Option<KeyId>,
    /// Skip this many keys of the list in its order (pages by number, the last page).
    #[param(minimum = 0)]
    offset: Option<i64>,
    /// Sort by `id` (the default), `created`, `usage_date` (never-used keys last) or `status`.
    #[param(inline)]
    sort: Option<SortBy>,
    /// `asc` (the default) or `desc`.
    #[param(inline)]
    order: Option<SortOrder>,
    /// Also count every key the filter matches (`total`).
    total: Option<bool>,
}

/// The key list's sortable columns.
#[derive(Debug, Clone, Copy, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortBy {
    /// The key's number.
    Id,
    /// When it was created.
    Created,
    /// When it last enrolled a device.
    UsageDate,
    /// Its status.
    Status,
}

/// Which way a list is sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    /// Smallest first.
    Asc,
    /// Largest first.
    Desc,
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
    let (listing, paging) = listing_of(&query)?;
    let keys = shared.stub.keys();
    let mut listed = list_page(&keys, &listing, paging).await?;
    if query.total == Some(true) {
        let every = KeyListing {
            after: None,
            ..listing
        };
        listed.total = Some(keys.count_listing(&every).await?);
    }
    Ok(axum::Json(listed))
}

/// Where a page of the key list starts, and how long it is.
#[derive(Debug, Clone, Copy)]
struct Paging {
    offset: u64,
    limit: usize,
}

/// The listing and paging a key list query asks for; a malformed one is an `invalid` problem
/// naming the parameter.
fn listing_of(query: &KeyQuery) -> Result<(KeyListing, Paging), ApiError> {
    super::bounded("comment", query.comment.as_ref(), 200)?;
    let sort = match query.sort {
        None | Some(SortBy::Id) => KeySort::Id,
        Some(SortBy::Created) => KeySort::Created,
        Some(SortBy::UsageDate) => KeySort::UsageDate,
        Some(SortBy::Status) => KeySort::Status,
    };
    let descending = query.order == Some(SortOrder::Desc);
    let matching = KeyMatch {
        kind: query.kind,
        status: query.status,
        unit_id: query.unit_id.clone(),
        comment: query.comment.clone(),
    };
    let mut listing = listing_of_match(&matching)?;
    listing.filter.expires_before = query.expires_before;
    listing.filter.expires_after = query.expires_after;
    listing.sort = sort;
    listing.descending = descending;
    listing.after = query.after;
    let limit = page::<KeyId>(query.limit, None)?.limit;
    let offset = u64::try_from(query.offset.unwrap_or(0))
        .map_err(|_| ApiError::code(ProblemCode::Invalid, "offset: at least 0"))?;
    Ok((listing, Paging { offset, limit }))
}

/// The listing of every key `matching` names, by ID; a malformed unit ID or comment is an
/// `invalid` problem naming it.
pub(super) fn listing_of_match(matching: &KeyMatch) -> Result<KeyListing, ApiError> {
    super::bounded("comment", matching.comment.as_ref(), 200)?;
    let unit_id_prefix = match matching.unit_id.as_deref().map(crate::unit_ids::prefix) {
        None => None,
        Some(Ok(prefix)) if prefix.is_empty() => None,
        Some(Ok(prefix)) => Some(prefix),
        Some(Err(why)) => {
            return Err(ApiError::code(
                ProblemCode::Invalid,
                format!("unit_id: {why}"),
            ));
        }
    };
    Ok(KeyListing {
        filter: KeyFilter {
            kind: matching.kind,
            status: matching.status,
            comment: matching.comment.clone().filter(|text| !text.is_empty()),
            ..KeyFilter::default()
        },
        unit_id_prefix,
        ..KeyListing::default()
    })
}

/// One page of `listing`: `next_after` is given in ID order only (other orders page by offset
/// and `total`).
async fn list_page(
    keys: &crate::keys::KeyAdmin,
    listing: &KeyListing,
    paging: Paging,
) -> Result<Page<KeyView>, ApiError> {
    let mut items = keys
        .listing(listing, paging.offset, paging.limit.saturating_add(1))
        .await?;
    let more = items.len() > paging.limit;
    items.truncate(paging.limit);
    let next_after = if more && listing.sort == KeySort::Id {
        items.last().map(|key| key.id)
    } else {
        None
    };
    Ok(Page {
        items,
        next_after,
        total: None,
    })
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
    let matching = match &request.filter {
        None => None,
        Some(matching) => Some(exportable_matching(matching, &request.ids)?),
    };
    if request.ids.len() > MAX_KEY_IDS {
        return Err(ApiError::code(
            ProblemCode::Invalid,
            format!("ids: at most {MAX_KEY_IDS} keys"),
        ));
    }
    let servers = servers_named(&shared, &request)?;
    // Audited by the use case before the file is made.
    let keys = shared.stub.keys().acting_as(&admin.actor);
    let fingerprint = shared.stub.ums_id.fingerprint();
    let file = match matching {
        None => keys.export(&request.ids, servers, fingerprint).await?,
        Some(listing) => keys
            .export_matching(&listing, servers, fingerprint)
            .await
            .map_err(|error| match error {
                crate::keys::KeyError::NothingToExport => nothing_matches(),
                other => other.into(),
            })?,
    };
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

/// The servers an export names: those requested, or the configured public address.
fn servers_named(
    shared: &Shared,
    request: &ExportKeys,
) -> Result<Vec<onboard_protocol::Server>, ApiError> {
    if request.servers.is_empty() {
        return Ok(vec![shared.stub.settings.public_server.clone()]);
    }
    request
        .servers
        .iter()
        .map(|server| {
            onboard_protocol::Server::new(&server.host, server.port)
                .map_err(|error| ApiError::code(ProblemCode::Invalid, format!("servers: {error}")))
        })
        .collect()
}

/// What the export the request describes would write, checked before it is made (the export
/// dialog's check): each server probed from this server (TCP and TLS within a few seconds, and
/// whether its chain holds the UMS ID the file would pin), and each key named with whether it can
/// go on a stick (an ID no key has is refused, 404, as the export refuses it). Shows and audits
/// no key. Needs `keys:export`, as the export itself.
#[utoipa::path(post, path = "/api/v1/keys/export/check", tag = "keys", request_body = ExportKeys,
    responses((status = 200, description = "The servers as reached from here, and the keys' statuses", body = ExportCheck),
        (status = 404, description = "A key named does not exist", body = onboard_protocol::Problem, content_type = "application/problem+json"),
        (status = 409, description = "A filter no active key matches: the export would write nothing", body = onboard_protocol::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field cannot be used", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
pub async fn export_check(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
    Body(request): Body<ExportKeys>,
) -> Result<axum::Json<ExportCheck>, ApiError> {
    admin.may(Operation::ExportKeys)?;
    if request.ids.len() > MAX_KEY_IDS {
        return Err(ApiError::code(
            ProblemCode::Invalid,
            format!("ids: at most {MAX_KEY_IDS} keys"),
        ));
    }
    let servers = servers_named(&shared, &request)?;
    let fingerprint = shared.stub.ums_id.fingerprint();
    // Every server at once: the dialog waits for the slowest, at most the probe's time-out.
    let mut probes = tokio::task::JoinSet::new();
    for (index, server) in servers.iter().enumerate() {
        let server = server.clone();
        probes.spawn(async move {
            let found = crate::probe::probe(
                server.host(),
                server.port(),
                &fingerprint,
                crate::probe::PROBE_TIMEOUT,
            )
            .await;
            (index, server, found)
        });
    }
    let mut checked: Vec<(usize, ExportServerCheck)> = Vec::with_capacity(servers.len());
    while let Some(joined) = probes.join_next().await {
        let (index, server, found) =
            joined.map_err(|error| ApiError::Internal(anyhow::anyhow!(error)))?;
        checked.push((
            index,
            ExportServerCheck {
                host: server.host().to_owned(),
                port: server.port(),
                reach: found.reach,
                detail: found.detail,
            },
        ));
    }
    checked.sort_by_key(|(index, _)| *index);
    let admin_keys = shared.stub.keys().acting_as(&admin.actor);
    let keys = match &request.filter {
        // Every active key the filter matches (among the IDs named, if any), as the export
        // writes them: counted, not listed.
        Some(matching) => crate::keys::ExportKeysCheck {
            keys: Vec::new(),
            exportable: admin_keys
                .count_listing(&exportable_matching(matching, &request.ids)?)
                .await?,
            refused: 0,
        },
        None => admin_keys.export_check(&request.ids).await?,
    };
    Ok(axum::Json(ExportCheck {
        fingerprint,
        servers: checked.into_iter().map(|(_, server)| server).collect(),
        keys: keys.keys,
        exportable: keys.exportable,
        refused: keys.refused,
    }))
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

/// The listing of the active keys `matching` names (of `among`, when it names some), for an export
/// of "every key matching the filter": the filter's status, when it names one, must be the
/// exportable one. None is a `conflict` (the export refuses), never an export of every key.
fn exportable_matching(matching: &KeyMatch, among: &[KeyId]) -> Result<KeyListing, ApiError> {
    let exportable = KeyStatus::ALL
        .into_iter()
        .find(|status| crate::claim::exportable(*status));
    let mut listing = listing_of_match(matching)?;
    if listing.filter.status.is_some() && listing.filter.status != exportable {
        return Err(nothing_matches());
    }
    listing.filter.status = exportable;
    if !among.is_empty() {
        listing.filter.ids = Some(among.to_vec());
    }
    Ok(listing)
}

fn nothing_matches() -> ApiError {
    ApiError::code(
        ProblemCode::Conflict,
        "filter: no active key matches it; nothing to export",
    )
}

/// Activates, deactivates or deletes the keys named, or every key a filter matches (the Web
/// App's "select all matching"; with `ids`, those of them it matches), in one request: all of
/// them or none. Says how many changed and, by status, which stayed as they were (a used key
/// stays used).
#[utoipa::path(post, path = "/api/v1/keys/change", tag = "keys", request_body = ChangeKeys,
    responses((status = 200, description = "What changed", body = KeysChanged),
        (status = 404, description = "A key named does not exist; nothing changed", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
pub async fn change(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
    Body(request): Body<ChangeKeys>,
) -> Result<axum::Json<KeysChanged>, ApiError> {
    admin.may(match request.action {
        KeyAction::Activate => Operation::ActivateKeys,
        KeyAction::Deactivate => Operation::DeactivateKeys,
        KeyAction::Delete => Operation::DeleteKeys,
    })?;
    let keys = shared.stub.keys();
    if request.ids.len() > MAX_KEY_IDS {
        return Err(ApiError::code(
            ProblemCode::Invalid,
            format!("ids: at most {MAX_KEY_IDS} keys"),
        ));
    }
    let ids = match &request.filter {
        None => request.ids,
        Some(matching) => {
            let mut listing = listing_of_match(matching)?;
            if !request.ids.is_empty() {
                listing.filter.ids = Some(request.ids);
            }
            keys.matching(&listing).await?
        }
    };
    Ok(axum::Json(
        keys.change(request.action, &ids, &admin.actor).await?,
    ))
}

/// The servers an export names unless told otherwise, for the export dialog to show and
/// prefill ([`crate::servers::export_servers`]).
#[utoipa::path(get, path = "/api/v1/keys/export/servers", tag = "keys",
    responses((status = 200, description = "The servers devices will contact", body = ExportServers)))]
pub async fn export_servers(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
) -> Result<axum::Json<ExportServers>, ApiError> {
    admin.may(Operation::ExportKeys)?;
    // The connector is named once the server listens ("-" before).
    let own = Some(shared.connector.server()).filter(|name| *name != "-");
    Ok(axum::Json(
        crate::servers::export_servers(&shared.stub, own).await?,
    ))
}
