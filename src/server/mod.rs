//! The HTTP server: health and readiness, Prometheus metrics, the JSON API with its OpenAPI
//! document, and a read-only HTML status page, on one port.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};

use crate::daemon::Context;

pub mod api;
pub mod health;
pub mod maintenance;
pub mod metrics;
pub mod openapi;
pub mod status;

/// A JSON error response: `{"error": "..."}` with a status code.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub extra: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            extra: None,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn with(mut self, extra: serde_json::Value) -> Self {
        self.extra = Some(extra);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({"error": self.message});
        if let Some(serde_json::Value::Object(extra)) = self.extra {
            for (k, v) in extra {
                body[k] = v;
            }
        }
        (self.status, Json(body)).into_response()
    }
}

/// A schema admitting exactly `values` of type `ty`: the string and boolean constants that the
/// Rust types (`String`, `bool`) cannot express. For `#[schema(schema_with = ...)]`.
pub(crate) fn one_of(ty: Type, values: &[serde_json::Value]) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(ty)
        .enum_values(Some(values.iter().cloned()))
        .into()
}

// The OpenAPI schemas of error bodies (documentation only: [`ApiError`] renders them).

/// An error.
#[derive(utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What went wrong, in lowercase words.
    pub error: String,
}

/// The table is busy with another job.
#[derive(utoipa::ToSchema)]
pub struct Busy {
    #[serde(flatten)]
    pub error: ErrorBody,
    /// The job holding the table's lock.
    pub job_id: String,
}

/// The policies are invalid.
#[derive(utoipa::ToSchema)]
pub struct ReloadFailed {
    #[serde(flatten)]
    pub error: ErrorBody,
    /// Every problem found, as `file:line: message`.
    pub problems: Vec<String>,
}

/// Every route as (method, path). The router is built from this list and the OpenAPI document must
/// describe exactly these operations (tested both ways in [`openapi`]). Non-GET routes require the
/// bearer token when `[server] token` is set. To add a route: add it here, give it a handler in
/// [`handler`], annotate the handler with `#[utoipa::path]` and list it in [`openapi::ApiDoc`].
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/tables"),
    ("GET", "/api/v1/tables/{table}"),
    ("POST", "/api/v1/tables/{table}/reconcile"),
    ("POST", "/api/v1/tables/{table}/compact"),
    ("POST", "/api/v1/tables/{table}/plan"),
    ("POST", "/api/v1/tables/{table}/rewrite-manifests"),
    ("POST", "/api/v1/tables/{table}/expire"),
    ("POST", "/api/v1/tables/{table}/remove-orphans"),
    ("GET", "/api/v1/jobs"),
    ("GET", "/api/v1/jobs/{id}"),
    ("POST", "/api/v1/reload"),
];

/// The handler of one entry of [`ROUTES`].
fn handler(method: &str, path: &str) -> MethodRouter<Arc<Context>> {
    match (method, path) {
        ("GET", "/") => get(status::page),
        ("GET", "/healthz") => get(health::healthz),
        ("GET", "/readyz") => get(health::readyz),
        ("GET", "/metrics") => get(metrics::metrics),
        ("GET", "/api/v1/openapi.json") => get(openapi::openapi),
        ("GET", "/api/v1/tables") => get(api::list_tables),
        ("GET", "/api/v1/tables/{table}") => get(api::get_table),
        ("POST", "/api/v1/tables/{table}/reconcile") => post(api::reconcile),
        ("POST", "/api/v1/tables/{table}/compact") => post(api::compact),
        ("POST", "/api/v1/tables/{table}/plan") => post(api::plan),
        ("POST", "/api/v1/tables/{table}/rewrite-manifests") => post(api::rewrite_manifests),
        ("POST", "/api/v1/tables/{table}/expire") => post(maintenance::expire),
        ("POST", "/api/v1/tables/{table}/remove-orphans") => post(maintenance::remove_orphans),
        ("GET", "/api/v1/jobs") => get(api::list_jobs),
        ("GET", "/api/v1/jobs/{id}") => get(api::get_job),
        ("POST", "/api/v1/reload") => post(api::reload),
        // Reached only when ROUTES gains an entry without a handler: fails every router build,
        // so the first test that starts a server says which.
        _ => panic!("route {method} {path} in ROUTES has no handler"),
    }
}

/// All routes.
pub fn router(ctx: Arc<Context>) -> Router {
    let auth = axum::middleware::from_fn_with_state(Arc::clone(&ctx), api::require_token);
    let mut router = Router::new();
    for &(method, path) in ROUTES {
        let mut h = handler(method, path);
        if method != "GET" {
            h = h.route_layer(auth.clone());
        }
        router = router.route(path, h);
    }
    router
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(axum::middleware::map_response(json_errors))
        .with_state(ctx)
}

/// axum answers a few errors itself, before any handler runs: 405 for a method a path does not
/// take (empty body, `Allow` header) and 413 when a body exceeds the 2 MiB limit (plain text).
/// The API promises JSON errors everywhere, so those get the `{"error": ...}` body; their status
/// and other headers stay.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this path (see the Allow header)",
        StatusCode::PAYLOAD_TOO_LARGE => "request body larger than the 2 MiB limit",
        _ => status.canonical_reason().unwrap_or("error"),
    };
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.remove(axum::http::header::CONTENT_TYPE);
    let body = ApiError::new(status, message.to_lowercase()).into_response();
    let (body_parts, body) = body.into_parts();
    parts.headers.extend(body_parts.headers);
    Response::from_parts(parts, body)
}
