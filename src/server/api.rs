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
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
use utoipa::openapi::{Ref, RefOr, Schema};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use super::{ApiError, Busy, ErrorBody, ReloadFailed, one_of};
use crate::catalog::{CatalogError, parse_ident};
use crate::compaction::options::RewriteJobOrder;
use crate::compaction::{CompactionError, PlanView};
use crate::daemon::Context;
use crate::dispatch::{self, JobRequest};
use crate::inspect::TableStatus;
use crate::jobs::{JobKind, StartError, Trigger};
use crate::ops;
use crate::policy::Policy;
use crate::store::{JobRecord, PropertyChange};

// `deny_unknown_fields` on the serialize-only response structs below does nothing to the JSON; it
// makes their OpenAPI schemas say `additionalProperties: false`.

/// The `{table}` path parameter (documentation only: handlers take it as a string and check it
/// with [`watched`]).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TablePath {
    /// Table name as `namespace.table` (nested namespaces separated by dots).
    #[param(pattern = r"^[^.]+(\.[^.]+)+$", example = "metrics.rollups_1m")]
    pub table: String,
}

/// The `{id}` path parameter (documentation only).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct JobIdPath {
    /// Job id (a UUID).
    #[param(format = Uuid)]
    pub id: String,
}

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

/// The watched tables, as last refreshed.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TableList {
    pub tables: Vec<TableStatus>,
}

/// Cached status of every watched table
///
/// Refreshed in the background every `[server] refresh-interval-seconds`; does not contact the
/// catalog.
#[utoipa::path(
    get,
    path = "/api/v1/tables",
    tag = "tables",
    operation_id = "listTables",
    responses((status = 200, description = "Watched tables.", body = inline(TableList))),
)]
pub async fn list_tables(State(ctx): State<Arc<Context>>) -> Json<TableList> {
    Json(TableList {
        tables: ctx.cached_tables(),
    })
}

/// `GET /api/v1/tables/{table}`: a [`TableStatus`] plus the property changes icemaint recorded.
#[derive(Debug, Serialize)]
pub struct TableDetail {
    #[serde(flatten)]
    pub status: TableStatus,
    pub property_changes: Vec<PropertyChange>,
}

/// Built from [`TableStatus`]'s schema rather than derived: a derive would render the flattened
/// status as `allOf: [TableStatus, {property_changes}]`, and the `additionalProperties: false` of
/// TableStatus would then reject every response (it does not compose with `allOf`).
impl PartialSchema for TableDetail {
    fn schema() -> RefOr<Schema> {
        let RefOr::T(Schema::Object(mut o)) = TableStatus::schema() else {
            unreachable!("TableStatus derives an object schema")
        };
        o.description = Some("A TableStatus plus `property_changes`.".to_string());
        o.properties.insert(
            "property_changes".to_string(),
            ArrayBuilder::new()
                .items(Ref::from_schema_name(PropertyChange::name()))
                .description(Some("Properties icemaint changed, oldest first."))
                .into(),
        );
        o.required.push("property_changes".to_string());
        RefOr::T(Schema::Object(o))
    }
}

impl ToSchema for TableDetail {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((PropertyChange::name().into(), PropertyChange::schema()));
        PropertyChange::schemas(schemas);
    }
}

/// Fresh status of one watched table and its recorded property changes
#[utoipa::path(
    get,
    path = "/api/v1/tables/{table}",
    tag = "tables",
    operation_id = "getTable",
    params(TablePath),
    responses(
        (status = 200, description = "The table, inspected now.", body = TableDetail),
        (status = 400, description = "Not a `namespace.table` name.", body = ErrorBody),
        (status = 404, description = "Not watched by any policy, or not in the catalog.", body = ErrorBody),
        (status = 500, description = "The state store failed.", body = ErrorBody),
        (status = 502, description = "The catalog failed.", body = ErrorBody),
    ),
)]
pub async fn get_table(
    State(ctx): State<Arc<Context>>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<TableDetail>, ApiError> {
    let name = path_param(name)?;
    let policy = watched(&ctx, &name)?;
    let status = ctx.inspect(&name, &policy).await.map_err(catalog_error)?;
    let changes = ctx
        .store
        .property_changes(&name)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(TableDetail {
        status,
        property_changes: changes,
    }))
}

/// The query of `GET /api/v1/jobs`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    /// Only jobs of this table (`namespace.table`).
    #[param(pattern = r"^[^.]+(\.[^.]+)+$")]
    pub table: Option<String>,
    /// Only jobs of this kind.
    #[param(value_type = Option<JobKind>, inline)]
    pub kind: Option<String>,
    /// At most this many jobs (default 50).
    #[param(minimum = 1, maximum = 1000, default = 50)]
    pub limit: Option<i64>,
}

pub(crate) const KINDS: &[&str] = &[
    "reconcile",
    "compaction",
    "expire",
    "remove-orphans",
    "rewrite-manifests",
];

/// Jobs, newest first: first the due jobs this replica holds back (`status: queued`, with
/// `detail.waiting_for`), then the recorded ones.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobList {
    pub jobs: Vec<JobRecord>,
}

/// Job history, newest first
#[utoipa::path(
    get,
    path = "/api/v1/jobs",
    tag = "jobs",
    operation_id = "listJobs",
    params(JobsQuery),
    responses(
        (status = 200, description = "Jobs.", body = inline(JobList)),
        (status = 400, description = "A bad query parameter (unknown parameter, bad table name, unknown kind, limit out of range).", body = ErrorBody),
        (status = 500, description = "The state store failed.", body = ErrorBody),
    ),
)]
pub async fn list_jobs(
    State(ctx): State<Arc<Context>>,
    query: Result<Query<JobsQuery>, QueryRejection>,
) -> Result<Json<JobList>, ApiError> {
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
    let stored = ctx
        .store
        .jobs(q.table.as_deref(), q.kind.as_deref(), limit)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    // This replica's queued jobs come first (they start after every stored one), newest first.
    let mut jobs: Vec<JobRecord> = ctx
        .queued_jobs()
        .into_iter()
        .rev()
        .filter(|j| q.table.as_ref().is_none_or(|t| *t == j.table))
        .filter(|j| q.kind.as_ref().is_none_or(|k| *k == j.kind))
        .collect();
    jobs.extend(stored);
    jobs.truncate(limit as usize);
    Ok(Json(JobList { jobs }))
}

/// One job
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}",
    tag = "jobs",
    operation_id = "getJob",
    params(JobIdPath),
    responses(
        (status = 200, description = "The job.", body = JobRecord),
        (status = 400, description = "Not a job id.", body = ErrorBody),
        (status = 404, description = "No such job.", body = ErrorBody),
        (status = 500, description = "The state store failed.", body = ErrorBody),
    ),
)]
pub async fn get_job(
    State(ctx): State<Arc<Context>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<JobRecord>, ApiError> {
    let id = path_param(id)?;
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(ApiError::bad_request(format!("'{id}' is not a job id")));
    }
    match ctx.store.job(&id).await {
        Ok(Some(job)) => Ok(Json(job)),
        // A job this replica holds back keeps its id when it starts.
        Ok(None) if let Some(j) = ctx.queued_jobs().into_iter().find(|j| j.id == id) => Ok(Json(j)),
        Ok(None) => Err(ApiError::not_found(format!("job {id} not found"))),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
        )),
    }
}

/// A job started; `GET /api/v1/jobs/{id}` tells how it ends.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobStarted {
    #[schema(format = Uuid)]
    pub job_id: String,
    #[schema(schema_with = running)]
    pub status: &'static str,
}

fn running() -> RefOr<Schema> {
    one_of(Type::String, &["running".into()])
}

/// 202 with the job id, or 409 with the running job's id.
pub(crate) fn started(result: Result<String, StartError>) -> Response {
    match result {
        Err(StartError::Busy { table, job_id }) => busy(&table, &job_id).into_response(),
        Ok(id) => (
            StatusCode::ACCEPTED,
            Json(JobStarted {
                job_id: id,
                status: "running",
            }),
        )
            .into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// 409 with the id of the job holding the table.
fn busy(table: &str, job_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        format!("table {table} is busy with job {job_id}"),
    )
    .with(serde_json::json!({"job_id": job_id}))
}

/// A 409 before anything touches the catalog when a job of this process holds the table, so a
/// busy table answers the same whether the catalog is up or not. (A job of another process is
/// found when the job starts, through the store's lease.)
pub(crate) fn refuse_if_busy(ctx: &Context, table: &str) -> Result<(), ApiError> {
    match ctx.jobs.running_on(table) {
        Some(job_id) => Err(busy(table, &job_id)),
        None => Ok(()),
    }
}

/// Start a property reconciliation job now
#[utoipa::path(
    post,
    path = "/api/v1/tables/{table}/reconcile",
    tag = "tables",
    operation_id = "reconcileTable",
    params(TablePath),
    responses(
        (status = 202, description = "Started.", body = JobStarted),
        (status = 400, description = "Not a `namespace.table` name.", body = ErrorBody),
        (status = 404, description = "Not watched by any policy.", body = ErrorBody),
        (status = 409, description = "Another job holds the table's lock.", body = Busy),
        (status = 500, description = "The state store failed.", body = ErrorBody),
    ),
)]
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

/// Spark rewrite_data_files options (names and meaning as in Spark). Cross-option rules (min <
/// target < max, an existing output spec, a valid where filter) are checked by the server: 400 when
/// violated.
// Documentation only: the body is read by [`overrides_from_body`] into a map and validated against
// the table with the policy's options; a test checks these names are `options::KNOWN_OPTIONS`.
#[derive(ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[schema(as = CompactionOptions)]
pub struct CompactionOverrides {
    #[schema(schema_with = positive_integer)]
    pub target_file_size_bytes: Option<u64>,
    #[schema(schema_with = positive_integer)]
    pub min_file_size_bytes: Option<u64>,
    #[schema(schema_with = positive_integer)]
    pub max_file_size_bytes: Option<u64>,
    #[schema(schema_with = positive_integer)]
    pub min_input_files: Option<u64>,
    #[schema(schema_with = positive_integer)]
    pub max_file_group_size_bytes: Option<u64>,
    #[schema(schema_with = positive_integer)]
    pub delete_file_threshold: Option<u64>,
    /// At least 1 when `partial-progress.enabled` is true; without partial progress Spark
    /// accepts (and ignores) 0, and so does icemaint.
    #[serde(rename = "partial-progress.max-commits")]
    #[schema(schema_with = non_negative_integer)]
    pub partial_progress_max_commits: Option<u64>,
    #[serde(rename = "partial-progress.max-failed-commits")]
    #[schema(schema_with = non_negative_integer)]
    pub partial_progress_max_failed_commits: Option<u64>,
    #[schema(schema_with = positive_integer)]
    pub max_concurrent_file_group_rewrites: Option<u64>,
    // Parsed as a non-negative i32: `format: int32` is exact.
    #[schema(minimum = 0, nullable = false)]
    pub output_spec_id: Option<i32>,
    #[schema(nullable = false)]
    pub rewrite_all: Option<bool>,
    #[serde(rename = "partial-progress.enabled")]
    #[schema(nullable = false)]
    pub partial_progress_enabled: Option<bool>,
    /// Only true is supported (new files keep the starting snapshot's data sequence number).
    #[schema(nullable = false)]
    pub use_starting_sequence_number: Option<bool>,
    /// Also remove delete files that no longer apply to any live data file, in the same replace
    /// snapshot.
    #[schema(nullable = false)]
    pub remove_dangling_deletes: Option<bool>,
    /// icemaint's own option, not Spark's: also rewrite every file written under a partition spec
    /// other than the output spec, whatever its size.
    #[schema(nullable = false)]
    pub rewrite_older_specs: Option<bool>,
    /// icemaint's own option, not Spark's: partitions with data committed more recently than
    /// this duration (`30s`, `15m`, `2h`, `1d`) are hot and only their small fragments are merged.
    #[schema(nullable = false)]
    pub hot_partition_age: Option<String>,
    /// icemaint's own option, not Spark's: the output row groups the concurrent group rewrites
    /// of one run may hold in memory together (default 128 MiB); groups wait for room.
    #[schema(schema_with = positive_integer)]
    pub max_rewrite_memory_bytes: Option<u64>,
    #[schema(exclusive_minimum = 0, maximum = 1, nullable = false)]
    pub delete_ratio_threshold: Option<f64>,
    #[schema(inline, nullable = false)]
    pub rewrite_job_order: Option<RewriteJobOrder>,
    /// Partition filter, e.g. `org_id = 3 AND ts >= '2025-01-02'`.
    #[schema(nullable = false)]
    pub r#where: Option<String>,
    /// Not an option: the engine for this run (default: the policy's `engine`). `spark` submits
    /// Spark's own rewrite_data_files to `[spark] master`; `auto` decides by the plan's input.
    #[schema(inline, nullable = false)]
    pub engine: Option<crate::policy::Engine>,
}

/// An integer of at least 1, with no `format`: the server parses these options as 64-bit unsigned
/// integers, so `format: int64` would call valid values above `i64::MAX` invalid.
fn positive_integer() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .into()
}

/// An integer of at least 0, with no `format` (see [`positive_integer`]).
fn non_negative_integer() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0))
        .into()
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

/// Start a binpack compaction job now
#[utoipa::path(
    post,
    path = "/api/v1/tables/{table}/compact",
    tag = "tables",
    operation_id = "compactTable",
    params(TablePath),
    request_body(
        content = Option<CompactionOverrides>,
        content_type = "application/json",
        description = "Spark rewrite_data_files option overrides, e.g. {\"min-input-files\": 2, \"where\": \"org_id = 3\"}.",
    ),
    responses(
        (status = 202, description = "Started.", body = JobStarted),
        (status = 400, description = "Not a `namespace.table` name, or bad options.", body = ErrorBody),
        (status = 404, description = "Not watched by any policy, or not in the catalog.", body = ErrorBody),
        (status = 409, description = "Another job holds the table's lock.", body = Busy),
        (status = 413, description = "The body is larger than 2 MiB.", body = ErrorBody),
        (status = 422, description = "The table cannot be compacted by icemaint.", body = ErrorBody),
        (status = 500, description = "The state store failed.", body = ErrorBody),
        (status = 502, description = "The catalog failed.", body = ErrorBody),
    ),
)]
pub async fn compact(
    State(ctx): State<Arc<Context>>,
    name: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = path_param(name)?;
    let policy = watched(&ctx, &name)?;
    let overrides = overrides_from_body(&body)?;
    // What needs no catalog first (the body, the lock), so a bad request is a 400 and a busy
    // table a 409 even while the catalog is down. Then against the table, so a `where` on an
    // unknown column is a 400 and a missing table a 404, not a failed job.
    ops::compact::check_options(&overrides).map_err(compaction_error)?;
    ops::compact::check_engine(&ctx.config.spark, &policy, &overrides).map_err(compaction_error)?;
    refuse_if_busy(&ctx, &name)?;
    ops::compact::check_request(&ctx.catalog, &name, &policy, &overrides)
        .await
        .map_err(compaction_error)?;
    Ok(started(
        dispatch::start(&ctx, &name, JobRequest::Compact(overrides), Trigger::Manual).await,
    ))
}

/// Plan a compaction without writing anything (dry run)
#[utoipa::path(
    post,
    path = "/api/v1/tables/{table}/plan",
    tag = "tables",
    operation_id = "planTable",
    params(TablePath),
    request_body(
        content = Option<CompactionOverrides>,
        content_type = "application/json",
        description = "Spark rewrite_data_files option overrides, e.g. {\"min-input-files\": 2, \"where\": \"org_id = 3\"}.",
    ),
    responses(
        (status = 200, description = "The plan: groups, files and bytes per partition, expected output files.", body = inline(PlanView)),
        (status = 400, description = "Not a `namespace.table` name, or bad options.", body = ErrorBody),
        (status = 404, description = "Not watched by any policy, or not in the catalog.", body = ErrorBody),
        (status = 413, description = "The body is larger than 2 MiB.", body = ErrorBody),
        (status = 422, description = "The table cannot be compacted by icemaint.", body = ErrorBody),
        (status = 500, description = "The state store failed.", body = ErrorBody),
        (status = 502, description = "The catalog failed.", body = ErrorBody),
    ),
)]
pub async fn plan(
    State(ctx): State<Arc<Context>>,
    name: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = path_param(name)?;
    let policy = watched(&ctx, &name)?;
    let overrides = overrides_from_body(&body)?;
    ops::compact::check_options(&overrides).map_err(compaction_error)?;
    let prepared = ops::compact::plan(&ctx.catalog, &name, &policy, &overrides)
        .await
        .map_err(compaction_error)?;
    Ok(Json(prepared.view()).into_response())
}

/// Start a manifest rewrite job now
#[utoipa::path(
    post,
    path = "/api/v1/tables/{table}/rewrite-manifests",
    tag = "tables",
    operation_id = "rewriteManifests",
    params(TablePath),
    responses(
        (status = 202, description = "Started.", body = JobStarted),
        (status = 400, description = "Not a `namespace.table` name.", body = ErrorBody),
        (status = 404, description = "Not watched by any policy.", body = ErrorBody),
        (status = 409, description = "Another job holds the table's lock.", body = Busy),
        (status = 500, description = "The state store failed.", body = ErrorBody),
    ),
)]
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

/// The policies were reloaded.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reloaded {
    /// Number of policies now in force.
    pub policies: usize,
}

/// Re-read the policy directory (as SIGHUP does)
#[utoipa::path(
    post,
    path = "/api/v1/reload",
    tag = "policies",
    operation_id = "reloadPolicies",
    responses(
        (status = 200, description = "Reloaded.", body = inline(Reloaded)),
        (status = 422, description = "The policies are invalid; the previous ones stay in force.", body = ReloadFailed),
    ),
)]
pub async fn reload(State(ctx): State<Arc<Context>>) -> Response {
    match ctx.reload_policies() {
        Ok(n) => Json(Reloaded { policies: n }).into_response(),
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
