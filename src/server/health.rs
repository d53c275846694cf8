//! `/healthz` (the process runs) and `/readyz` (catalog and store answered the last background
//! check).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::daemon::Context;

pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

pub async fn readyz(State(ctx): State<Arc<Context>>) -> Response {
    let r = ctx.readiness();
    if r.catalog && r.store {
        (
            StatusCode::OK,
            Json(serde_json::json!({"ready": true, "checked_ms": r.checked_ms})),
        )
            .into_response()
    } else {
        let reason = r
            .reason
            .clone()
            .unwrap_or_else(|| "readiness not checked yet".to_string());
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"ready": false, "catalog": r.catalog, "store": r.store, "reason": reason})),
        )
            .into_response()
    }
}
