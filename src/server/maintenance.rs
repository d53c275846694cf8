//! `POST /api/v1/tables/{table}/expire` and `/remove-orphans`: start a pruning job, with an
//! optional JSON body overriding the policy (`older-than`, `retain-last`, `dry-run`, `force`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;

use super::api::{
    JobStarted, TablePath, catalog_error, path_param, refuse_if_busy, started, watched,
};
use super::{ApiError, Busy, ErrorBody};
use crate::daemon::Context;
use crate::dispatch::{self, JobRequest};
use crate::jobs::{JobKind, Trigger};
use crate::ops::prune::Overrides;
use crate::util::parse_duration;

/// Per-run overrides of the policy's [expire] / [orphans] section. older-than under 1d is refused
/// for orphan removal unless force is true. A null value means: as the policy says.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[schema(as = PruningOptions)]
pub struct Body {
    /// Duration like 5d, 12h, 0s.
    pub older_than: Option<String>,
    // utoipa would say `format: int32` for a u32, which calls valid values above i32::MAX invalid.
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 4_294_967_295_u32)]
    pub retain_last: Option<u32>,
    pub dry_run: Option<bool>,
    pub force: Option<bool>,
}

/// Parses and checks a request body for `kind`; empty means "as the policy says".
pub fn overrides(kind: JobKind, body: &[u8]) -> Result<Overrides, String> {
    let body: Body = if body.iter().all(u8::is_ascii_whitespace) {
        Body::default()
    } else {
        serde_json::from_slice(body).map_err(|e| format!("bad body: {e}"))?
    };
    let older_than = body
        .older_than
        .as_deref()
        .map(|s| parse_duration(s).map_err(|e| format!("older-than: {e}")))
        .transpose()?;
    let o = Overrides {
        older_than,
        retain_last: body.retain_last,
        dry_run: body.dry_run,
        force: body.force.unwrap_or(false),
    };
    o.validate(kind)?;
    Ok(o)
}

async fn start(
    ctx: Arc<Context>,
    name: String,
    kind: JobKind,
    request: fn(Overrides) -> JobRequest,
    body: Bytes,
) -> Result<Response, ApiError> {
    watched(&ctx, &name)?;
    let o = overrides(kind, &body).map_err(ApiError::bad_request)?;
    // `force` lets orphan removal delete files young enough to belong to a commit in flight:
    // over HTTP only from a caller who proved who they are, i.e. when a token guards the API.
    if o.force && ctx.config.server.token.is_none() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "force is refused over HTTP unless [server] token is set",
        ));
    }
    // The lock before the catalog, so a busy table answers 409 even while the catalog is down.
    refuse_if_busy(&ctx, &name)?;
    // 404 for a table the policies select but the catalog does not have.
    ctx.catalog.load(&name).await.map_err(catalog_error)?;
    Ok(started(
        dispatch::start(&ctx, &name, request(o), Trigger::Manual).await,
    ))
}

/// Start a snapshot expiry job now
#[utoipa::path(
    post,
    path = "/api/v1/tables/{table}/expire",
    tag = "tables",
    operation_id = "expireSnapshots",
    params(TablePath),
    request_body(content = Option<Body>, content_type = "application/json"),
    responses(
        (status = 202, description = "Started.", body = JobStarted),
        (status = 400, description = "Not a `namespace.table` name, or a bad body.", body = ErrorBody),
        (status = 404, description = "Not watched by any policy, or not in the catalog.", body = ErrorBody),
        (status = 409, description = "Another job holds the table's lock.", body = Busy),
        (status = 413, description = "The body is larger than 2 MiB.", body = ErrorBody),
        (status = 500, description = "The state store failed.", body = ErrorBody),
        (status = 502, description = "The catalog failed.", body = ErrorBody),
    ),
)]
pub async fn expire(
    State(ctx): State<Arc<Context>>,
    name: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    start(
        ctx,
        path_param(name)?,
        JobKind::Expire,
        JobRequest::Expire,
        body,
    )
    .await
}

/// Start an orphan-file removal job now
#[utoipa::path(
    post,
    path = "/api/v1/tables/{table}/remove-orphans",
    tag = "tables",
    operation_id = "removeOrphanFiles",
    params(TablePath),
    request_body(content = Option<Body>, content_type = "application/json"),
    responses(
        (status = 202, description = "Started.", body = JobStarted),
        (status = 400, description = "Not a `namespace.table` name, or a bad body.", body = ErrorBody),
        (status = 403, description = "`force` without a `[server] token` configured.", body = ErrorBody),
        (status = 404, description = "Not watched by any policy, or not in the catalog.", body = ErrorBody),
        (status = 409, description = "Another job holds the table's lock.", body = Busy),
        (status = 413, description = "The body is larger than 2 MiB.", body = ErrorBody),
        (status = 500, description = "The state store failed.", body = ErrorBody),
        (status = 502, description = "The catalog failed.", body = ErrorBody),
    ),
)]
pub async fn remove_orphans(
    State(ctx): State<Arc<Context>>,
    name: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    start(
        ctx,
        path_param(name)?,
        JobKind::RemoveOrphans,
        JobRequest::RemoveOrphans,
        body,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        let o = overrides(JobKind::Expire, b"").unwrap();
        assert_eq!(o, Overrides::default());
        let o = overrides(
            JobKind::Expire,
            br#"{"older-than": "0s", "retain-last": 2, "dry-run": true}"#,
        )
        .unwrap();
        assert_eq!(o.older_than, Some(std::time::Duration::ZERO));
        assert_eq!((o.retain_last, o.dry_run), (Some(2), Some(true)));
        for (kind, body, needle) in [
            (JobKind::Expire, &b"{"[..], "bad body"),
            (JobKind::Expire, br#"{"olderThan": "1d"}"#, "unknown field"),
            (JobKind::Expire, br#"{"older-than": "5x"}"#, "older-than"),
            (JobKind::Expire, br#"{"retain-last": 0}"#, "at least 1"),
            (JobKind::Expire, br#"{"retain-last": "2"}"#, "bad body"),
            (JobKind::RemoveOrphans, br#"{"older-than": "1h"}"#, "force"),
            (
                JobKind::RemoveOrphans,
                br#"{"retain-last": 1}"#,
                "only applies",
            ),
        ] {
            let e = overrides(kind, body).unwrap_err();
            assert!(e.contains(needle), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let o = overrides(
            JobKind::RemoveOrphans,
            br#"{"older-than": "1s", "force": true}"#,
        )
        .unwrap();
        assert!(o.force);
    }
}
