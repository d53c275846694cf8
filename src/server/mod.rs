//! The HTTP server: health and readiness, Prometheus metrics and the JSON API, on one port.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::app::Context;

pub mod api;
pub mod health;
pub mod maintenance;
pub mod metrics;

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

/// All routes.
pub fn router(ctx: Arc<Context>) -> Router {
    let mutating = Router::new()
        .route("/api/v1/reload", post(api::reload))
        .route("/api/v1/tables/{table}/reconcile", post(api::reconcile))
        .route("/api/v1/tables/{table}/expire", post(maintenance::expire))
        .route(
            "/api/v1/tables/{table}/remove-orphans",
            post(maintenance::remove_orphans),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&ctx),
            api::require_token,
        ));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/tables", get(api::list_tables))
        .route("/api/v1/tables/{table}", get(api::get_table))
        .route("/api/v1/jobs", get(api::list_jobs))
        .route("/api/v1/jobs/{id}", get(api::get_job))
        .merge(mutating)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .with_state(ctx)
}
