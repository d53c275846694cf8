//! Compaction as a job: upgrades the format version first when the policy asks for one the table
//! has not reached, plans with the policy's options and the run's overrides, rewrites and commits
//! through [`crate::compaction`], and turns the report into a job outcome.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::catalog::{CatalogHandle, CommitBackend};
use crate::compaction::options::OptionError;
use crate::compaction::{self, CompactionError, Prepared, Report};
use crate::config::SparkConfig;
use crate::jobs::{JobOutcome, JobStatus};
use crate::maintenance::properties::{self, Drift};
use crate::policy::{Engine, Policy};

use super::{Deps, engine, reconcile};

/// Called after each group and commit with the report so far.
pub type OnProgress<'a> = Box<dyn Fn(&Report) + Send + Sync + 'a>;

/// The policy's compaction options (empty when the policy has no `[compaction]`).
pub fn policy_options(policy: &Policy) -> BTreeMap<String, String> {
    policy
        .compaction
        .as_ref()
        .map(|c| c.options.clone())
        .unwrap_or_default()
}

/// Plans `table` without writing anything (`--dry-run`, `POST .../plan`).
pub async fn plan(
    catalog: &CatalogHandle,
    table: &str,
    policy: &Policy,
    overrides: &BTreeMap<String, String>,
) -> Result<Prepared, CompactionError> {
    let (_, overrides) = split_engine(overrides)?;
    compaction::prepare(catalog, table, &policy_options(policy), &overrides).await
}

/// The run's `engine` override and the rewrite options (see [`engine::split`]).
fn split_engine(
    overrides: &BTreeMap<String, String>,
) -> Result<(Option<Engine>, BTreeMap<String, String>), CompactionError> {
    engine::split(overrides).map_err(|message| {
        CompactionError::Options(vec![OptionError {
            key: engine::ENGINE_KEY.into(),
            message,
        }])
    })
}

/// Checks a run that may go to Spark (the policy's or the run's engine is `spark` or `auto`)
/// before a job is recorded: `[spark] master` is set and every option is Spark's.
pub fn check_engine(
    spark: &SparkConfig,
    policy: &Policy,
    overrides: &BTreeMap<String, String>,
) -> Result<(), CompactionError> {
    let (run, rest) = split_engine(overrides)?;
    if engine::requested(policy, run) == Engine::Native {
        return Ok(());
    }
    engine::check_spark(spark, policy, &rest).map_err(|e| {
        let key = match &e {
            crate::spark::SparkError::Unsupported(k) => k.clone(),
            _ => engine::ENGINE_KEY.into(),
        };
        CompactionError::Options(vec![OptionError {
            key,
            message: e.to_string(),
        }])
    })
}

/// Checks per-run option overrides without the table (unknown option names), so a bad request is
/// refused even while the catalog is down.
pub fn check_options(overrides: &BTreeMap<String, String>) -> Result<(), CompactionError> {
    let (_, overrides) = split_engine(overrides)?;
    let unknown = compaction::options::unknown_options(&overrides);
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(CompactionError::Options(unknown))
    }
}

/// Checks a request before a job is recorded: option values, the `where` filter's columns and
/// the table's existence, so bad input is an error to the caller, not a failed job.
pub async fn check_request(
    catalog: &CatalogHandle,
    table: &str,
    policy: &Policy,
    overrides: &BTreeMap<String, String>,
) -> Result<(), CompactionError> {
    let (_, overrides) = split_engine(overrides)?;
    compaction::check_request(catalog, table, &policy_options(policy), &overrides)
        .await
        .map(drop)
}

/// Binpack-compacts `table` and commits `replace` snapshots.
pub async fn run(
    deps: Deps<'_>,
    table: &str,
    policy: &Policy,
    job_id: &str,
    overrides: &BTreeMap<String, String>,
    on_progress: OnProgress<'_>,
) -> JobOutcome {
    let (run_engine, overrides) = match split_engine(overrides) {
        Ok(s) => s,
        Err(e) => return JobOutcome::failed(e.to_string(), serde_json::json!({})),
    };
    let overrides = &overrides;
    let backend: Arc<dyn CommitBackend> = match deps.catalog.committer().await {
        Ok(b) => b,
        Err(e) => return JobOutcome::failed(e.to_string(), serde_json::json!({})),
    };
    if let Err(e) = upgrade_format(deps, table, policy, job_id).await {
        return JobOutcome::failed(e, serde_json::json!({}));
    }
    let prepared = match plan(deps.catalog, table, policy, overrides).await {
        Ok(p) => p,
        Err(e) => return JobOutcome::failed(e.to_string(), serde_json::json!({})),
    };
    if prepared.plan.groups.is_empty() {
        let detail = serde_json::json!({
            "plan": prepared.plan,
            "reason": "nothing to compact",
        });
        return JobOutcome {
            status: JobStatus::Skipped,
            detail,
            error: None,
        };
    }
    let min_spark = policy
        .compaction
        .as_ref()
        .map_or(crate::policy::DEFAULT_SPARK_MIN_INPUT_BYTES, |c| {
            c.spark_min_input_bytes
        });
    let chosen = engine::choose(
        engine::requested(policy, run_engine),
        prepared.plan.rewrite_bytes,
        min_spark,
    );
    if chosen == Engine::Spark {
        let options = engine::merged_options(policy, overrides);
        return engine::run_spark(deps, table, job_id, &options, prepared).await;
    }
    let env = compaction::Env {
        catalog: deps.catalog,
        backend,
        metrics: deps.metrics,
        cancel: deps.cancel.child_token(),
        fence: deps.fence,
        job_id: job_id.to_string(),
        progress: on_progress,
    };
    match compaction::execute(&env, prepared).await {
        Ok(report) => outcome(&report),
        Err(e) => JobOutcome::failed(e.to_string(), serde_json::json!({})),
    }
}

/// Succeeded when every planned group committed, partial when some did, failed when none did.
fn outcome(report: &Report) -> JobOutcome {
    let status = if report.groups_committed == report.groups_planned {
        JobStatus::Succeeded
    } else if report.groups_committed > 0 {
        JobStatus::Partial
    } else {
        JobStatus::Failed
    };
    let mut detail = serde_json::to_value(report).expect("serializable");
    detail["engine"] = "native".into();
    JobOutcome {
        status,
        error: (!report.errors.is_empty()).then(|| report.errors.join("; ")),
        detail,
    }
}

/// When the policy asks for a format version the table has not reached yet (e.g. a v1 table
/// whose policy says `format-version = 2`, before the reconciler got to it), the upgrade is
/// committed first, so the compaction writes the version the policy wants: a metadata-only change the policy
/// already asks for, recorded like a reconciliation. Other property drift is left to the
/// reconciler.
async fn upgrade_format(
    deps: Deps<'_>,
    table: &str,
    policy: &Policy,
    job_id: &str,
) -> Result<(), String> {
    let t = deps.catalog.load(table).await.map_err(|e| e.to_string())?;
    let Some(versions) = properties::table_drift(&t, policy).format_version else {
        return Ok(());
    };
    let upgrade = Drift {
        properties: Vec::new(),
        format_version: Some(versions),
    };
    properties::reconcile(deps.catalog, &t, &upgrade, deps.fence)
        .await
        .map_err(|e| {
            format!(
                "upgrading to format version {} before compacting: {e}",
                versions.1
            )
        })?;
    tracing::info!(
        table,
        from = versions.0,
        to = versions.1,
        "format version upgraded (policy) before compaction"
    );
    reconcile::record_changes(deps.store, table, &upgrade, job_id).await;
    Ok(())
}
