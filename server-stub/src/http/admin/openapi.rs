//! The OpenAPI 3.1 document of `/api/v1`, generated from the handlers' annotations and the typed
//! views, served at `/api/v1/openapi.json` and printed by `ums-stub openapi`. The copy committed
//! as `server-stub/openapi.json` is checked against it by a test.
//!
//! The refusals every authenticated route can give (401, 403, 422, 503) are added here once rather
//! than on each handler.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::OpenApi;
use utoipa::openapi::schema::{AdditionalProperties, Schema, SchemaType, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};

use crate::http::Shared;

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ums-stub admin API",
        description = "Keys, devices, the audit log, the UMS ID, accounts and tokens of a UMS \
                       stub server. Authenticate with an API token (Authorization: Bearer) or the \
                       Web App's session cookie plus X-CSRF-Token on writes. Refusals are \
                       application/problem+json with a stable `code`."
    ),
    paths(
        super::keys::list, super::keys::create, super::keys::import, super::keys::one,
        super::keys::edit, super::keys::delete_one, super::keys::activate,
        super::keys::deactivate, super::keys::delete_many, super::keys::export,
        super::keys::export_check, super::keys::reveal, super::keys::change,
        super::keys::export_servers,
        super::devices::list, super::devices::one, super::devices::delete, super::devices::send,
        super::server::audit, super::server::ums_id, super::server::certificate,
        super::server::servers,
        super::accounts::list, super::accounts::create, super::accounts::one,
        super::accounts::edit, super::accounts::remove, super::accounts::tokens,
        super::accounts::create_token, super::accounts::revoke,
        super::session::login, super::session::whoami, super::session::logout,
    ),
    components(schemas(onboard_protocol::Problem)),
    security(("bearer" = []), ("session" = [])),
    modifiers(&Refusals),
    tags(
        (name = "keys", description = "First-authentication keys (keys:read, keys:write, keys:reveal, keys:export)"),
        (name = "devices", description = "Enrolled devices (devices:read, devices:write)"),
        (name = "audit", description = "The audit log (audit:read)"),
        (name = "ums-id", description = "The server's identity (server:admin)"),
        (name = "accounts", description = "Administrator accounts (server:admin)"),
        (name = "tokens", description = "API tokens (server:admin)"),
        (name = "session", description = "Web App login"),
    )
)]
struct ApiDoc;

/// Adds the security schemes and the refusals common to every route.
struct Refusals;

fn problem(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            onboard_protocol::problem::PROBLEM_CONTENT_TYPE,
            Content::new(Some(Ref::from_schema_name("Problem"))),
        )
        .into()
}

impl utoipa::Modify for Refusals {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token (umst_...)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                crate::accounts::SESSION_COOKIE,
            ))),
        );
        // utoipa does not mark a generic `Option<A>` as nullable: a page's `next_after` is null on
        // the last page.
        for (name, schema) in components.schemas.iter_mut() {
            if !name.starts_with("Page_") {
                continue;
            }
            if let RefOr::T(Schema::Object(page)) = schema
                && let Some(RefOr::T(Schema::Object(next))) = page.properties.get_mut("next_after")
                && let SchemaType::Type(kind) = next.schema_type.clone()
            {
                next.schema_type = SchemaType::from_iter([kind, Type::Null]);
            }
        }
        // A creation request names only the members of its type (serde refuses any other, such
        // as a usage limit on a one-time key); utoipa states `deny_unknown_fields` for structs
        // only, not for the variants of a tagged enum.
        if let Some(RefOr::T(Schema::OneOf(create))) = components.schemas.get_mut("CreateKeys") {
            for variant in &mut create.items {
                if let RefOr::T(Schema::Object(object)) = variant {
                    object.additional_properties =
                        Some(Box::new(AdditionalProperties::FreeForm(false)));
                }
            }
        }
        // An account change names at least one thing to change.
        if let Some(RefOr::T(Schema::Object(edit))) = components.schemas.get_mut("EditAccount") {
            edit.min_properties = Some(1);
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.put,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                let login = path == "/api/v1/session" && operation.security.is_some();
                let responses = &mut operation.responses.responses;
                let mut add = |status: &str, description: &str| {
                    responses
                        .entry(status.to_owned())
                        .or_insert_with(|| problem(description));
                };
                add(
                    "401",
                    "No valid credentials: missing, unknown, expired or revoked",
                );
                if !login {
                    add(
                        "403",
                        "The account lacks the right, or a cookie write lacks its CSRF token",
                    );
                }
                add(
                    "422",
                    "A path, query or body field cannot be used; the detail names it",
                );
                add("503", "The database is unavailable; retry later");
            }
        }
    }
}

/// The document.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(ApiDoc::openapi)
}

/// The document as pretty JSON, as committed.
pub fn json() -> String {
    let mut text = document()
        .to_pretty_json()
        .expect("the document serialises");
    text.push('\n');
    text
}

/// The route serving the document.
pub fn router() -> Router<Arc<Shared>> {
    Router::new().route(OPENAPI_PATH, get(serve))
}

async fn serve() -> Response {
    let mut response = json().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
