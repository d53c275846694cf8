//! `/api/v1/...`: watched tables, job history, and triggers (reconcile, compaction, reload).
//!
//! Mutating endpoints require `Authorization: Bearer <token>` when `[server] token` is set.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::ApiError;
use crate::catalog::{CatalogError, parse_ident};
use crate::compaction::CompactionError;
use crate::daemon::Context;
use crate::dispatch::{self, JobRequest};
use crate::jobs::{StartError, Trigger};
use crate::ops;
use crate::policy::Policy;

/// Token comparison whose time does not depend on where the inputs differ (only on their
/// lengths, which are no secret). `subtle` is the reviewed implementation the TLS stack already
/// uses; a hand-written loop can be optimised into an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// Middleware: bearer-token check for mutating routes.
pub async fn require_token(State(ctx): State<Arc<Context>>, req: Request, next: Next) -> Response {
    if let Some(token) = &ctx.config.server.token {
        let given = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
            return ApiError::new(StatusCode::UNAUTHORIZED, "missing or invalid bearer token")
                .into_response();
        }
    }
    next.run(req).await
}

/// The watched table `name` and its policy, or a 400/404.
pub(crate) fn watched(ctx: &Context, name: &str) -> Result<Policy, ApiError> {
    parse_ident(name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    ctx.policy_for(name)
        .ok_or_else(|| ApiError::not_found(format!("table {name} is not watched by any policy")))
}

/// A path parameter, or a JSON 400: axum's own rejection (e.g. percent-encoded bytes that are not
/// UTF-8) is a plain-text body, unlike every other error of the API.
pub(crate) fn path_param(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::bad_request(format!("bad path: {}", e.body_text())))
}

pub(crate) fn catalog_error(e: CatalogError) -> ApiError {
    match e {
        CatalogError::TableNotFound(t) => ApiError::not_found(format!("table {t} not found")),
        CatalogError::BadName(_) => ApiError::bad_request(e.to_string()),
        other => ApiError::new(StatusCode::BAD_GATEWAY, other.to_string()),
    }
}

pub async fn list_tables(State(ctx): State<Arc<Context>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"tables": ctx.cached_tables()}))
}

pub async fn get_table(
    State(ctx): State<Arc<Context>>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = path_param(name)?;
    let policy = watched(&ctx, &name)?;
    let status = ctx.inspect(&name, &policy).await.map_err(catalog_error)?;
    let changes = ctx
        .store
        .property_changes(&name)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut v = serde_json::to_value(status).expect("serializable");
    v["property_changes"] = serde_json::to_value(changes).expect("serializable");
    Ok(Json(v))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    pub table: Option<String>,
    pub kind: Option<String>,
    pub limit: Option<i64>,
}

const KINDS: &[&str] = &[
    "reconcile",
    "compaction",
    "expire",
    "remove-orphans",
    "rewrite-manifests",
];

pub async fn list_jobs(
    State(ctx): State<Arc<Context>>,
    query: Result<Query<JobsQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) =
        query.map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    if let Some(t) = &q.table {
        parse_ident(t).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    if let Some(k) = &q.kind
        && !KINDS.contains(&k.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "unknown job kind '{k}' (one of: {})",
            KINDS.join(", ")
        )));
    }
    let jobs = ctx
        .store
        .jobs(q.table.as_deref(), q.kind.as_deref(), limit)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(serde_json::json!({"jobs": jobs})))
}

pub async fn get_job(
    State(ctx): State<Arc<Context>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = path_param(id)?;
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(ApiError::bad_request(format!("'{id}' is not a job id")));
    }
    match ctx.store.job(&id).await {
        Ok(Some(job)) => Ok(Json(serde_json::to_value(job).expect("serializable"))),
        Ok(None) => Err(ApiError::not_found(format!("job {id} not found"))),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
        )),
    }
}

/// 202 with the job id, or 409 with the running job's id.
pub(crate) fn started(result: Result<String, StartError>) -> Response {
    match result {
        Ok(id) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({"job_id": id, "status": "running"})),
        )
            .into_response(),
        Err(StartError::Busy { table, job_id }) => ApiError::new(
            StatusCode::CONFLICT,
            format!("table {table} is busy with job {job_id}"),
        )
        .with(serde_json::json!({"job_id": job_id}))
        .into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

pub async fn reconcile(
    State(ctx): State<Arc<Context>>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = path_param(name)?;
    watched(&ctx, &name)?;
    Ok(started(
        dispatch::start(&ctx, &name, JobRequest::Reconcile, Trigger::Manual).await,
    ))
}

/// Compaction option overrides from an optional JSON object body (`{"min-input-files": 2}`).
pub(crate) fn overrides_from_body(body: &[u8]) -> Result<BTreeMap<String, String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(BTreeMap::new());
    }
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("body is not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::bad_request("body must be a JSON object of option overrides"))?;
    obj.iter()
        .map(|(k, v)| {
            let s = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "option '{k}' must be a string, number or boolean"
                    )));
                }
            };
            Ok((k.clone(), s))
        })
        .collect()
}

fn compaction_error(e: CompactionError) -> ApiError {
    match e {
        e if e.is_bad_input() => ApiError::bad_request(e.to_string()),
        CompactionError::Catalog(c) => catalog_error(c),
        CompactionError::Unsupported { .. } => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

/// `POST /api/v1/tables/{table}/compact`: 202 with a job id, 409 when the table is busy.
pub async fn compact(
    State(ctx): State<Arc<Context>>,
    name: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = path_param(name)?;
    let policy = watched(&ctx, &name)?;
    let overrides = overrides_from_body(&body)?;
    // Validate against the table now so bad input (including a `where` on an unknown column) is
    // a 400 and a missing table a 404, not a failed job.
    ops::compact::check_request(&ctx.catalog, &name, &policy, &overrides)
        .await
        .map_err(compaction_error)?;
    Ok(started(
        dispatch::start(&ctx, &name, JobRequest::Compact(overrides), Trigger::Manual).await,
    ))
}

/// `POST /api/v1/tables/{table}/plan`: the dry-run plan, nothing written.
pub async fn plan(
    State(ctx): State<Arc<Context>>,
    name: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = path_param(name)?;
    let policy = watched(&ctx, &name)?;
    let overrides = overrides_from_body(&body)?;
    let prepared = ops::compact::plan(&ctx.catalog, &name, &policy, &overrides)
        .await
        .map_err(compaction_error)?;
    Ok(Json(
        serde_json::to_value(prepared.view()).expect("serializable"),
    ))
}

/// `POST /api/v1/tables/{table}/rewrite-manifests`: 202 with a job id, 409 when busy.
pub async fn rewrite_manifests(
    State(ctx): State<Arc<Context>>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = path_param(name)?;
    watched(&ctx, &name)?;
    Ok(started(
        dispatch::start(&ctx, &name, JobRequest::RewriteManifests, Trigger::Manual).await,
    ))
}

pub async fn reload(State(ctx): State<Arc<Context>>) -> Response {
    match ctx.reload_policies() {
        Ok(n) => Json(serde_json::json!({"policies": n})).into_response(),
        Err(e) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "policy reload failed; the previous policies stay in force",
        )
        .with(serde_json::json!({
            "problems": e.problems().iter().map(|p| p.to_string()).collect::<Vec<_>>()
        }))
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_bodies() {
        assert!(overrides_from_body(b"").unwrap().is_empty());
        let o = overrides_from_body(
            br#"{"min-input-files": 2, "rewrite-all": true, "where": "org_id = 1"}"#,
        )
        .unwrap();
        assert_eq!(o["min-input-files"], "2");
        assert_eq!(o["rewrite-all"], "true");
        assert_eq!(o["where"], "org_id = 1");
        for bad in [&b"[1]"[..], b"{\"a\": [1]}", b"not json"] {
            assert_eq!(
                overrides_from_body(bad).unwrap_err().status,
                StatusCode::BAD_REQUEST
            );
        }
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret1"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
