//! `/api/v1/devices`: the enrolled devices.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use onboard_protocol::admin::{CommandQueued, DeviceView, Page, SendCommand};
use onboard_protocol::{Folder, UnitId};

use super::{Admin, Body, Params, PathParam, page};
use crate::http::{ApiError, Shared};
use crate::rights::Operation;
use crate::store::DeviceFilter;

/// The device routes.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v1/devices", get(list))
        .route("/api/v1/devices/{unit_id}", get(one).delete(delete))
        .route("/api/v1/devices/{unit_id}/commands", post(send))
}

/// Filters and paging of the device list.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeviceQuery {
    /// Only devices that landed in this folder or one under it (`/Sites` holds `/Sites/Berlin`).
    #[param(value_type = Option<Folder>)]
    folder: Option<Folder>,
    /// The most devices to return (default 1000).
    #[param(minimum = 0, maximum = 10000)]
    limit: Option<usize>,
    /// Start after this unit ID (the previous page's `next_after`).
    after: Option<UnitId>,
    /// Also count every enrolled device the filter matches (`total`).
    total: Option<bool>,
    /// Only devices whose unit ID starts with this (`00E0C5`, `00:E0:C5`) or whose host name
    /// holds it, in any case; `total` then counts those.
    #[param(max_length = 64)]
    search: Option<String>,
}

/// Lists enrolled devices by unit ID, with the folder each landed in; filters by folder.
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", params(DeviceQuery),
    responses((status = 200, description = "One page of devices", body = Page<DeviceView, UnitId>)))]
pub async fn list(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
    Params(query): Params<DeviceQuery>,
) -> Result<axum::Json<Page<DeviceView, UnitId>>, ApiError> {
    admin.may(Operation::ListDevices)?;
    let devices = shared.stub.devices();
    let filter = DeviceFilter {
        folder: query.folder,
    };
    super::bounded("search", query.search.as_ref(), 64)?;
    if let Some(search) = query
        .search
        .as_deref()
        .filter(|text| !text.trim().is_empty())
    {
        return Ok(axum::Json(
            devices
                .search(search, &filter, &page(query.limit, query.after)?)
                .await?,
        ));
    }
    let mut listed = devices
        .list(&filter, &page(query.limit, query.after)?)
        .await?;
    if query.total == Some(true) {
        listed.total = Some(devices.count(&filter).await?);
    }
    Ok(axum::Json(listed))
}

/// One enrolled device.
#[utoipa::path(get, path = "/api/v1/devices/{unit_id}", tag = "devices",
    params(("unit_id" = UnitId, Path, description = "The device's unit ID")),
    responses((status = 200, description = "The device", body = DeviceView),
        (status = 404, description = "No device has this unit ID", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
pub async fn one(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
    PathParam(unit_id): PathParam<UnitId>,
) -> Result<axum::Json<DeviceView>, ApiError> {
    admin.may(Operation::GetDevice)?;
    Ok(axum::Json(shared.stub.devices().get(&unit_id).await?))
}

/// Forgets an enrolled device, so its unit ID may enroll again with a new key pair.
#[utoipa::path(delete, path = "/api/v1/devices/{unit_id}", tag = "devices",
    params(("unit_id" = UnitId, Path, description = "The device's unit ID")),
    responses((status = 204, description = "Forgotten"),
        (status = 404, description = "No device has this unit ID", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
pub async fn delete(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
    PathParam(unit_id): PathParam<UnitId>,
) -> Result<StatusCode, ApiError> {
    admin.may(Operation::DeleteDevice)?;
    shared.stub.devices().delete(&unit_id, &admin.actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sends a command to a connected device (`renew-now`, `inventory-now`), through whichever server
/// holds its connector session.
#[utoipa::path(post, path = "/api/v1/devices/{unit_id}/commands", tag = "devices",
    params(("unit_id" = UnitId, Path, description = "The device's unit ID")),
    request_body = SendCommand,
    responses((status = 202, description = "Queued for the server holding the device's session", body = CommandQueued),
        (status = 404, description = "No device has this unit ID", body = onboard_protocol::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The device is not connected", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
pub async fn send(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
    PathParam(unit_id): PathParam<UnitId>,
    Body(request): Body<SendCommand>,
) -> Result<(StatusCode, axum::Json<CommandQueued>), ApiError> {
    admin.may(Operation::SendDeviceCommand)?;
    let server = shared
        .stub
        .devices()
        .send(&unit_id, request.command, &admin.actor)
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(CommandQueued { server })))
}
