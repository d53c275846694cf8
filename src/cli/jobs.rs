//! The one-shot job commands (`compact`, `rewrite-manifests`, `expire`, `remove-orphans`): each
//! runs one job now, in this process, through [`crate::dispatch::run`], so it is recorded like a
//! daemon's job and never overlaps one on the same table.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};

use crate::catalog::{CatalogError, parse_ident};
use crate::config::Config;
use crate::daemon::Context;
use crate::dispatch::{self, JobRequest, ProgressObserver};
use crate::jobs::{JobKind, JobOutcome, JobStatus, StartError, Trigger};
use crate::ops::{self, prune::Overrides};
use crate::policy::Policy;
use crate::util::parse_duration;

use super::{parse_key_values, print};

/// Connects for a one-shot job on `table`: the name parses and some policy selects it.
async fn open(config_path: &Path, table: &str) -> anyhow::Result<(Arc<Context>, Policy)> {
    let config = Config::load(config_path)?;
    parse_ident(table)?;
    let ctx = Context::new(config).await?;
    let policy = ctx.policy_for(table).ok_or_else(|| {
        anyhow!(
            "table {table} is not watched by any policy in {}",
            ctx.config.policies.dir.display()
        )
    })?;
    Ok((ctx, policy))
}

/// Fails with one line when the catalog has no such table (before a job is recorded).
async fn require_table(ctx: &Context, table: &str) -> anyhow::Result<()> {
    match ctx.catalog.load(table).await {
        Ok(_) => Ok(()),
        Err(CatalogError::TableNotFound(_)) => bail!("table {table} not found"),
        Err(e) => Err(e).context(format!("loading {table}")),
    }
}

/// Runs `request` as a manual job; a busy table is an error naming the job that holds it.
async fn run(
    ctx: &Arc<Context>,
    table: &str,
    request: JobRequest,
    observer: Option<ProgressObserver>,
) -> anyhow::Result<(String, JobOutcome)> {
    match dispatch::run(ctx, table, request, Trigger::Manual, observer).await {
        Ok(r) => Ok(r),
        Err(StartError::Busy { job_id, .. }) => bail!("table {table} is busy with job {job_id}"),
        Err(e) => Err(e.into()),
    }
}

fn ok_or_skipped(outcome: &JobOutcome) -> bool {
    matches!(outcome.status, JobStatus::Succeeded | JobStatus::Skipped)
}

/// `icemaint compact`: prints the plan (`dry_run`) or runs the compaction as a job; a failed or
/// partial job is an error after its result is printed.
pub async fn compact(
    config_path: &Path,
    table: &str,
    dry_run: bool,
    options: &[String],
    json: bool,
) -> anyhow::Result<()> {
    let overrides = parse_key_values("option", options)?;
    let (ctx, policy) = open(config_path, table).await?;
    if dry_run {
        let prepared = ops::compact::plan(&ctx.catalog, table, &policy, &overrides).await?;
        let v = serde_json::to_value(prepared.view())?;
        return print::plan(&v, json);
    }
    // Bad input (option values, the `where` filter's columns, a missing table) fails before a
    // job is recorded.
    ops::compact::check_request(&ctx.catalog, table, &policy, &overrides).await?;
    ops::compact::check_engine(&ctx.config.spark, &policy, &overrides)?;
    let bar = (!json).then(print::ProgressBar::on_terminal).flatten();
    let observer = bar.as_ref().map(print::ProgressBar::observer);
    let (job_id, outcome) = run(&ctx, table, JobRequest::Compact(overrides), observer).await?;
    if let Some(b) = bar {
        b.finish();
    }
    let ok = ok_or_skipped(&outcome);
    let mut v = serde_json::json!({
        "job_id": job_id,
        "status": outcome.status.as_str(),
        "result": outcome.detail,
    });
    if let Some(e) = &outcome.error {
        v["error"] = serde_json::Value::String(e.clone());
    }
    print::compaction(&v, json)?;
    if !ok {
        bail!(
            "compaction of {table} {}: {}",
            outcome.status.as_str(),
            outcome.error.as_deref().unwrap_or("see the job detail")
        )
    }
    Ok(())
}

/// `icemaint rewrite-manifests`: runs a manifest rewrite as a job.
pub async fn rewrite_manifests(config_path: &Path, table: &str, json: bool) -> anyhow::Result<()> {
    let (ctx, _) = open(config_path, table).await?;
    require_table(&ctx, table).await?;
    let (job_id, outcome) = run(&ctx, table, JobRequest::RewriteManifests, None).await?;
    let mut v = serde_json::json!({
        "job_id": job_id,
        "kind": JobKind::RewriteManifests.as_str(),
        "status": outcome.status.as_str(),
        "result": outcome.detail,
    });
    if let Some(e) = &outcome.error {
        v["error"] = serde_json::Value::String(e.clone());
    }
    print::job(&v, json)?;
    if !ok_or_skipped(&outcome) {
        bail!(
            "rewrite-manifests of {table} failed: {}",
            outcome.error.as_deref().unwrap_or("see the job detail")
        );
    }
    Ok(())
}

fn older_than_flag(v: Option<&str>) -> anyhow::Result<Option<std::time::Duration>> {
    v.map(|v| parse_duration(v).map_err(|e| anyhow!("--older-than: {e}")))
        .transpose()
}

/// `icemaint expire`: expires snapshots as the policy says, with the flags on top.
pub async fn expire(
    config_path: &Path,
    table: &str,
    older_than: Option<&str>,
    retain_last: Option<&str>,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<()> {
    let retain_last = retain_last
        .map(|v| {
            v.trim()
                .parse::<u32>()
                .map_err(|_| anyhow!("--retain-last '{v}': expected a positive integer"))
        })
        .transpose()?;
    let overrides = Overrides {
        older_than: older_than_flag(older_than)?,
        retain_last,
        dry_run: Some(dry_run),
        force: false,
    };
    prune(config_path, table, JobRequest::Expire(overrides), json).await
}

/// `icemaint remove-orphans`: deletes unreferenced files as the policy says, with the flags on
/// top; without `--dry-run` the policy's `dry-run` decides.
pub async fn remove_orphans(
    config_path: &Path,
    table: &str,
    dry_run: bool,
    older_than: Option<&str>,
    force: bool,
    json: bool,
) -> anyhow::Result<()> {
    let overrides = Overrides {
        older_than: older_than_flag(older_than)?,
        retain_last: None,
        dry_run: dry_run.then_some(true),
        force,
    };
    prune(
        config_path,
        table,
        JobRequest::RemoveOrphans(overrides),
        json,
    )
    .await
}

/// Runs one expiry or orphan-removal job and prints its result; a failed or partial job is an
/// error (exit 1) after the result is printed.
async fn prune(
    config_path: &Path,
    table: &str,
    request: JobRequest,
    json: bool,
) -> anyhow::Result<()> {
    let kind = request.kind();
    if let JobRequest::Expire(o) | JobRequest::RemoveOrphans(o) = &request {
        o.validate(kind).map_err(anyhow::Error::msg)?;
    }
    let (ctx, _) = open(config_path, table).await?;
    require_table(&ctx, table).await?;
    let (job_id, outcome) = run(&ctx, table, request, None).await?;
    print::pruning(&job_id, table, kind, &outcome, json)?;
    match (outcome.status, outcome.error) {
        (JobStatus::Failed | JobStatus::Partial, Some(e)) => Err(anyhow!(e)),
        (JobStatus::Failed | JobStatus::Partial, None) => {
            Err(anyhow!("{} {}", kind.as_str(), outcome.status.as_str()))
        }
        _ => Ok(()),
    }
}
