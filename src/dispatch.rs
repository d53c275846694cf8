//! The seam through which every job starts: the scheduler, the HTTP API and the CLI describe
//! what to run as a [`JobRequest`]; [`start`] runs it in the background (the daemon) and [`run`]
//! in the caller's task (one-shot CLI commands). Either way the job is recorded in the state
//! store, holds the table's lock for its whole run, and reaches the operations in [`crate::ops`]
//! with only the narrow dependencies they take.
//!
//! Neither the scheduler nor the server know the operations; adding a job kind means a variant
//! here and an operation in `ops`.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::compaction::Report;
use crate::daemon::Context;
use crate::fence::Fence;
use crate::jobs::{
    JobHandle, JobKind, JobOutcome, JobStatus, Origin, ProgressSink, StartError, Trigger,
};
use crate::ops::{self, Deps, prune::Overrides};

/// What to run on a table: the job kind with its per-run overrides of the policy.
#[derive(Debug, Clone, PartialEq)]
pub enum JobRequest {
    Reconcile,
    /// Spark `rewrite_data_files` options on top of the policy's.
    Compact(BTreeMap<String, String>),
    RewriteManifests,
    Expire(Overrides),
    RemoveOrphans(Overrides),
}

impl JobRequest {
    pub fn kind(&self) -> JobKind {
        match self {
            Self::Reconcile => JobKind::Reconcile,
            Self::Compact(_) => JobKind::Compaction,
            Self::RewriteManifests => JobKind::RewriteManifests,
            Self::Expire(_) => JobKind::Expire,
            Self::RemoveOrphans(_) => JobKind::RemoveOrphans,
        }
    }

    /// The request a schedule fires: the policy's settings, nothing overridden.
    pub fn as_policy_says(kind: JobKind) -> Self {
        match kind {
            JobKind::Reconcile => Self::Reconcile,
            JobKind::Compaction => Self::Compact(BTreeMap::new()),
            JobKind::RewriteManifests => Self::RewriteManifests,
            JobKind::Expire => Self::Expire(Overrides::default()),
            JobKind::RemoveOrphans => Self::RemoveOrphans(Overrides::default()),
        }
    }
}

/// An extra observer of a compaction's progress (the CLI's progress bar).
pub type ProgressObserver = Arc<dyn Fn(&Report) + Send + Sync>;

/// Starts `request` on `table` in the background, tracked for the shutdown drain; returns the
/// job id, or who holds the table. When the job ends, the table's cached status is refreshed.
pub async fn start(
    ctx: &Arc<Context>,
    table: &str,
    request: JobRequest,
    trigger: Trigger,
) -> Result<String, StartError> {
    let handle = ctx.jobs.begin(table, request.kind(), trigger).await?;
    Ok(spawn(ctx, handle, request))
}

/// Starts a fire of the scheduler (a schedule's, or a health trigger's) of `kind` on `table` like
/// [`start`], with the policy's settings; `origin` (fire time, reason, queued id) is recorded
/// with the job.
pub async fn start_fire(
    ctx: &Arc<Context>,
    table: &str,
    kind: JobKind,
    origin: Origin,
) -> Result<String, StartError> {
    let handle = ctx.jobs.begin_from(table, kind, origin).await?;
    Ok(spawn(ctx, handle, JobRequest::as_policy_says(kind)))
}

/// Runs `request` under `handle` in the background; returns the job id.
fn spawn(ctx: &Arc<Context>, handle: JobHandle, request: JobRequest) -> String {
    let id = handle.id.clone();
    let job = Job::of(&handle);
    let (ctx2, table) = (Arc::clone(ctx), handle.table.clone());
    ctx.jobs.spawn(handle, async move {
        let kind = request.kind();
        let outcome = execute(&ctx2, &table, request, &job, None).await;
        // A skipped job changed nothing, except a compaction that upgraded the format first.
        if outcome.status != JobStatus::Skipped || kind == JobKind::Compaction {
            ctx2.refresh_table(&table).await;
        }
        outcome
    });
    id
}

/// Runs `request` on `table` to completion in the caller's task (CLI one-shots): the same job
/// record and table lock as [`start`], so it never overlaps a daemon's job on that table.
pub async fn run(
    ctx: &Arc<Context>,
    table: &str,
    request: JobRequest,
    trigger: Trigger,
    observer: Option<ProgressObserver>,
) -> Result<(String, JobOutcome), StartError> {
    let handle = ctx.jobs.begin(table, request.kind(), trigger).await?;
    let id = handle.id.clone();
    let job = Job::of(&handle);
    let outcome = ctx
        .jobs
        .run(handle, execute(ctx, table, request, &job, observer))
        .await;
    Ok((id, outcome))
}

/// What a running job hands its operation: where its progress goes, its token (shutdown, lost
/// lease) and its lease's fence.
struct Job {
    sink: ProgressSink,
    cancel: CancellationToken,
    fence: Fence,
}

impl Job {
    fn of(handle: &JobHandle) -> Self {
        Self {
            sink: handle.progress_sink(),
            cancel: handle.cancel_token(),
            fence: handle.fence(),
        }
    }
}

/// Runs one job (the caller holds the table's lock) with the policy in force now.
async fn execute(
    ctx: &Context,
    table: &str,
    request: JobRequest,
    job: &Job,
    observer: Option<ProgressObserver>,
) -> JobOutcome {
    let Some(policy) = ctx.policy_for(table) else {
        return JobOutcome::failed(
            format!("table {table} is not selected by any policy"),
            serde_json::json!({}),
        );
    };
    let deps = Deps {
        catalog: &ctx.catalog,
        store: &ctx.store,
        metrics: &ctx.metrics,
        cancel: &job.cancel,
        fence: &job.fence,
        spark: &ctx.config.spark,
    };
    let sink = &job.sink;
    let job_id = sink.job_id.as_str();
    match request {
        JobRequest::Reconcile => ops::reconcile::run(deps, table, &policy, job_id).await,
        JobRequest::Compact(overrides) => {
            let sink = sink.clone();
            let on_progress = Box::new(move |r: &Report| {
                if let Some(observe) = &observer {
                    observe(r);
                }
                sink.report(serde_json::json!({ "progress": r }));
            });
            ops::compact::run(deps, table, &policy, job_id, &overrides, on_progress).await
        }
        JobRequest::RewriteManifests => ops::manifests::run(deps, table, &policy, job_id).await,
        JobRequest::Expire(o) => ops::prune::expire(deps, table, &policy, &o).await,
        JobRequest::RemoveOrphans(o) => ops::prune::remove_orphans(deps, table, &policy, &o).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scheduled_request_has_its_kind_and_no_overrides() {
        for kind in [
            JobKind::Reconcile,
            JobKind::Compaction,
            JobKind::RewriteManifests,
            JobKind::Expire,
            JobKind::RemoveOrphans,
        ] {
            assert_eq!(JobRequest::as_policy_says(kind).kind(), kind);
        }
        assert_eq!(
            JobRequest::as_policy_says(JobKind::Expire),
            JobRequest::Expire(Overrides::default())
        );
        assert_eq!(
            JobRequest::as_policy_says(JobKind::Compaction),
            JobRequest::Compact(BTreeMap::new())
        );
    }
}
