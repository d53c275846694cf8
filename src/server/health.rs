//! `/healthz` (the process runs) and `/readyz` (catalog and store answered the last background
//! check).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::schema::Type;
use utoipa::openapi::{RefOr, Schema};

use super::one_of;
use crate::daemon::Context;

// `deny_unknown_fields` on these serialize-only structs does nothing to the JSON; it makes the
// OpenAPI schema say `additionalProperties: false`.

/// Alive.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[schema(schema_with = ok)]
    pub status: &'static str,
}

fn ok() -> RefOr<Schema> {
    one_of(Type::String, &["ok".into()])
}

/// Ready.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ready {
    #[schema(schema_with = always_true)]
    pub ready: bool,
    /// Unix milliseconds of the last check.
    pub checked_ms: i64,
}

fn always_true() -> RefOr<Schema> {
    one_of(Type::Boolean, &[true.into()])
}

/// Not ready, or not checked yet.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotReady {
    #[schema(schema_with = always_false)]
    pub ready: bool,
    pub catalog: bool,
    pub store: bool,
    pub reason: String,
}

fn always_false() -> RefOr<Schema> {
    one_of(Type::Boolean, &[false.into()])
}

/// Liveness: the process serves HTTP
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "healthz",
    responses((status = 200, description = "Alive.", body = Health)),
)]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the catalog and the state store answered the last background check
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Ready.", body = Ready),
        (status = 503, description = "Not ready (or not checked yet).", body = NotReady),
    ),
)]
pub async fn readyz(State(ctx): State<Arc<Context>>) -> Response {
    let r = ctx.readiness();
    if r.catalog && r.store {
        (
            StatusCode::OK,
            Json(Ready {
                ready: true,
                checked_ms: r.checked_ms,
            }),
        )
            .into_response()
    } else {
        let reason = r
            .reason
            .clone()
            .unwrap_or_else(|| "readiness not checked yet".to_string());
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(NotReady {
                ready: false,
                catalog: r.catalog,
                store: r.store,
                reason,
            }),
        )
            .into_response()
    }
}
