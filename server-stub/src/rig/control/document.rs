//! The OpenAPI document of the control routes (tag `test-rig`): served by the control listener
//! at [`RIG_OPENAPI_PATH`], and merged with the admin API's into the whole document [`json`].

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use onboard_protocol::ProblemCode;
use utoipa::OpenApi;

/// Where the control listener serves its OpenAPI document.
pub const RIG_OPENAPI_PATH: &str = "/rig/v1/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ums-stub test-rig control",
        description = "The controls of a ums-stub server started with `serve --test-rig`, on its \
                       loopback-only control listener: faults, the clock, one-shot actions, \
                       certificate status, strict mode's counts and key files. No \
                       authentication: a test rig's server only."
    ),
    paths(
        super::server, super::faults, super::put_faults, super::release, super::clock,
        super::advance, super::reset, super::certificate, super::expire_certificates,
        super::replace_ums_id, super::store_unavailable, super::strict, super::key_files,
    ),
    components(schemas(onboard_protocol::Problem)),
    modifiers(&RigSchemas),
    tags((name = "test-rig", description = "The test-rig control listener (serve --test-rig, loopback only, no authentication)")),
)]
struct RigDoc;

/// States in the document what the plan's checks ([`crate::rig::FaultPlan::validate`]) and serde refuse,
/// where the types' annotations cannot: probabilities 0 to 1, refusal statuses 400 to 599 with a
/// known problem code, sessions closed every second at most, and no member of another fault kind
/// or key type.
struct RigSchemas;

impl utoipa::Modify for RigSchemas {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::Number;
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::{AdditionalProperties, Object, Schema};
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        fn member<'a>(object: &'a mut Object, name: &str) -> Option<&'a mut Object> {
            match object.properties.get_mut(name) {
                Some(RefOr::T(Schema::Object(member))) => Some(member),
                _ => None,
            }
        }
        let schemas = &mut components.schemas;
        if let Some(RefOr::T(Schema::Object(fault))) = schemas.get_mut("RouteFault")
            && let Some(probability) = member(fault, "probability")
        {
            probability.minimum = Some(Number::Float(0.0));
            probability.maximum = Some(Number::Float(1.0));
        }
        if let Some(RefOr::T(Schema::Object(plan))) = schemas.get_mut("FaultPlan")
            && let Some(every) = member(plan, "close_sessions_every_seconds")
        {
            every.minimum = Some(Number::UInt(1));
        }
        if let Some(RefOr::T(Schema::OneOf(kinds))) = schemas.get_mut("FaultKind") {
            for kind in &mut kinds.items {
                if let RefOr::T(Schema::Object(kind)) = kind {
                    // serde refuses members of another kind (deny_unknown_fields), which utoipa
                    // states for structs only.
                    kind.additional_properties =
                        Some(Box::new(AdditionalProperties::FreeForm(false)));
                    if let Some(status) = member(kind, "status") {
                        status.minimum = Some(Number::UInt(400));
                        status.maximum = Some(Number::UInt(599));
                    }
                    if let Some(code) = member(kind, "code") {
                        let mut codes = vec![serde_json::Value::Null];
                        codes.extend(ProblemCode::ALL.map(|code| code.as_str().into()));
                        code.enum_values = Some(codes);
                    }
                }
            }
        }
        if let Some(RefOr::T(Schema::OneOf(request))) = schemas.get_mut("NewKeyFile") {
            for kind in &mut request.items {
                if let RefOr::T(Schema::Object(kind)) = kind {
                    kind.additional_properties =
                        Some(Box::new(AdditionalProperties::FreeForm(false)));
                }
            }
        }
    }
}

/// The control listener's own document: its routes only.
pub fn rig_document() -> utoipa::openapi::OpenApi {
    RigDoc::openapi()
}

/// The whole OpenAPI document of ums-stub: the admin API ([`crate::http::admin::openapi`], served
/// on the devices' port) and the test-rig routes (tag `test-rig`, served on the control listener
/// only). `ums-stub openapi` prints it; `server-stub/openapi.json` is it.
pub fn json() -> String {
    let mut document = crate::http::admin::openapi::document().clone();
    let rig = rig_document();
    document.paths.paths.extend(rig.paths.paths);
    if let Some(schemas) = rig.components.map(|components| components.schemas) {
        let components = document.components.get_or_insert_with(Default::default);
        for (name, schema) in schemas {
            components.schemas.entry(name).or_insert(schema);
        }
    }
    document
        .tags
        .get_or_insert_with(Vec::new)
        .extend(rig.tags.unwrap_or_default());
    let mut text = document.to_pretty_json().expect("the document serialises");
    text.push('\n');
    text
}

/// The control listener's document, as served.
pub(super) async fn serve_document() -> Response {
    let mut text = rig_document()
        .to_pretty_json()
        .expect("the document serialises");
    text.push('\n');
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
