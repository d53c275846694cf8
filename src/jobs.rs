//! One job model and one per-table lock for every maintenance kind.
//!
//! A job is a row in the state store (`running` → `succeeded` / `failed` / `partial` / `skipped`)
//! and holds the table's maintenance lock for as long as it runs: in this process (a map) and
//! across processes (a lease row in the store, renewed while the job runs and taken over once
//! expired by the store's clock, so a crashed process never blocks a table for longer than the
//! lease).
//!
//! The lease is also a fencing token: each acquisition gets a new epoch, and the job's
//! [`Fence`] checks (job id, epoch, time left) in the store before every commit and deletion.
//! When the heartbeat finds the lease gone (taken over after a pause, expired, or not renewable
//! for a whole lease), it cancels the job's token, so no new work starts and no commit is sent,
//! and the job ends `failed` with the lease error.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::fence::{self, Fence, FenceError, Lease};
use crate::store::{JobRecord, Store, StoreError};
use crate::telemetry::Metrics;

/// How long a table lease lasts without renewal unless configured (`[server] lease-seconds`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// The shortest lease the configuration may ask for: renewed every third of it, a shorter one
/// would be lost to an ordinary scheduling hiccup.
pub const MIN_LEASE_SECONDS: u64 = 3;

/// The error recorded on a job whose process stopped before it finished.
pub const ABANDONED: &str =
    "abandoned: the process running it stopped before it finished (its table lease expired)";

/// What a job does.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    Reconcile,
    Compaction,
    Expire,
    RemoveOrphans,
    RewriteManifests,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Reconcile => "reconcile",
            JobKind::Compaction => "compaction",
            JobKind::Expire => "expire",
            JobKind::RemoveOrphans => "remove-orphans",
            JobKind::RewriteManifests => "rewrite-manifests",
        }
    }
}

/// Why a job started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Schedule,
    Manual,
    Startup,
    /// A health condition of the policy's `[compaction.trigger]` (the job's `reason` says which).
    Condition,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Startup => "startup",
            Trigger::Condition => "condition",
        }
    }
}

/// Where a job comes from: its trigger, the finer reason recorded with it (`schedule`, or the
/// condition of a triggered job, `trigger:small-files`, ...), the scheduler's fire it runs for
/// and the id it was listed under while queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub trigger: Trigger,
    pub reason: String,
    pub fire_ms: Option<i64>,
    pub id: Option<String>,
}

impl Origin {
    /// A job started by `trigger`, for no fire: its reason is the trigger.
    pub fn of(trigger: Trigger) -> Self {
        Self {
            trigger,
            reason: trigger.as_str().to_string(),
            fire_ms: None,
            id: None,
        }
    }
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Succeeded,
    /// Some work committed, some did not (e.g. a compaction group refused by validation).
    Partial,
    Failed,
    /// Nothing to do.
    Skipped,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Succeeded => "succeeded",
            JobStatus::Partial => "partial",
            JobStatus::Failed => "failed",
            JobStatus::Skipped => "skipped",
        }
    }
}

/// The end of a job: status, a JSON result and an error message when it failed.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    pub status: JobStatus,
    pub detail: serde_json::Value,
    pub error: Option<String>,
}

impl JobOutcome {
    pub fn ok(detail: serde_json::Value) -> Self {
        Self {
            status: JobStatus::Succeeded,
            detail,
            error: None,
        }
    }
    pub fn failed(error: impl Into<String>, detail: serde_json::Value) -> Self {
        Self {
            status: JobStatus::Failed,
            detail,
            error: Some(error.into()),
        }
    }
}

/// Why a job could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("table {table} is busy with job {job_id}")]
    Busy { table: String, job_id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Starts, tracks and finishes jobs.
#[derive(Debug)]
pub struct Jobs {
    store: Store,
    metrics: Metrics,
    /// This process among the replicas (lease owner, fire claims).
    owner: String,
    lease: Duration,
    /// Every job's token is a child of this one (the daemon's shutdown).
    shutdown: CancellationToken,
    running: Mutex<HashMap<String, String>>,
    tracker: TaskTracker,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Jobs {
    /// Jobs whose table leases last `lease` between renewals and whose tokens are children of
    /// `shutdown`.
    pub fn new(
        store: Store,
        metrics: Metrics,
        lease: Duration,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            metrics,
            owner: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            lease,
            shutdown,
            running: Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// This process's identity among the replicas sharing the store.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The job running on `table` in this process, if any.
    pub fn running_on(&self, table: &str) -> Option<String> {
        self.running
            .lock()
            .expect("not poisoned")
            .get(table)
            .cloned()
    }

    /// How many jobs run in this process now.
    pub fn running_count(&self) -> usize {
        self.running.lock().expect("not poisoned").len()
    }

    /// Records a new job and takes the table's lock, or says who holds it.
    pub async fn begin(
        self: &Arc<Self>,
        table: &str,
        kind: JobKind,
        trigger: Trigger,
    ) -> Result<JobHandle, StartError> {
        self.begin_from(table, kind, Origin::of(trigger)).await
    }

    /// [`Jobs::begin`] for a job of the scheduler: its fire time (un-jittered) and reason are
    /// recorded with it, and it keeps the id it was queued under.
    pub async fn begin_from(
        self: &Arc<Self>,
        table: &str,
        kind: JobKind,
        origin: Origin,
    ) -> Result<JobHandle, StartError> {
        let Origin {
            trigger,
            reason,
            fire_ms,
            id,
        } = origin;
        let id = id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        {
            let mut running = self.running.lock().expect("not poisoned");
            if let Some(job_id) = running.get(table) {
                return Err(StartError::Busy {
                    table: table.to_string(),
                    job_id: job_id.clone(),
                });
            }
            running.insert(table.to_string(), id.clone());
        }
        let release_local = || {
            self.running.lock().expect("not poisoned").remove(table);
        };
        let epoch = match self
            .store
            .try_lock(table, &self.owner, &id, millis(self.lease))
            .await
        {
            Ok(Ok(epoch)) => epoch,
            Ok(Err(holder)) => {
                release_local();
                return Err(StartError::Busy {
                    table: table.to_string(),
                    job_id: holder,
                });
            }
            Err(e) => {
                release_local();
                return Err(e.into());
            }
        };
        let record = JobRecord {
            fire_ms,
            reason: Some(reason.clone()),
            ..JobRecord::running(&id, table, kind.as_str(), trigger.as_str(), now_ms())
        };
        if let Err(e) = self.store.insert_job(&record).await {
            let _ = self.store.unlock(table, &id, epoch).await;
            release_local();
            return Err(e.into());
        }
        let cancel = self.shutdown.child_token();
        let lease = Lease {
            table: table.to_string(),
            job_id: id.clone(),
            epoch,
        };
        let fence = Fence::new(self.store.clone(), lease, self.lease, cancel.clone());
        let heartbeat = tokio::spawn(heartbeat(self.store.clone(), fence.clone(), self.lease));
        tracing::info!(
            table,
            job_id = id,
            kind = kind.as_str(),
            trigger = trigger.as_str(),
            reason,
            epoch,
            fire_ms,
            "job started"
        );
        self.metrics.count_start(kind.as_str(), &reason);
        Ok(JobHandle {
            jobs: Arc::clone(self),
            id,
            table: table.to_string(),
            kind,
            epoch,
            started: Instant::now(),
            cancel,
            fence,
            heartbeat,
        })
    }

    /// Runs `work` in the background, tracked for shutdown, and finishes the job with its outcome.
    pub fn spawn<F>(self: &Arc<Self>, handle: JobHandle, work: F)
    where
        F: Future<Output = JobOutcome> + Send + 'static,
    {
        self.tracker.spawn(async move {
            let outcome = work.await;
            handle.finish(outcome).await;
        });
    }

    /// Runs `work` to completion in the caller's task (CLI one-shots, tests).
    pub async fn run<F>(self: &Arc<Self>, handle: JobHandle, work: F) -> JobOutcome
    where
        F: Future<Output = JobOutcome>,
    {
        let outcome = work.await;
        handle.finish(outcome.clone()).await;
        outcome
    }

    /// Marks jobs of dead processes (`running`, no live lease) as failed and returns how many.
    pub async fn fail_abandoned(&self) -> Result<u64, StoreError> {
        let n = self.store.fail_running_jobs(ABANDONED).await?;
        if n > 0 {
            tracing::warn!(jobs = n, "jobs of a stopped process marked failed");
        }
        Ok(n)
    }

    /// How often the daemon looks for abandoned jobs: a dead job is failed within about one and
    /// a half lease lengths of its last renewal.
    pub fn sweep_interval(&self) -> Duration {
        self.lease / 2
    }

    /// Waits for background jobs, at most `grace`; true when all finished.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}

/// Renews `fence`'s lease every third of `lease` until aborted. Finding it lost — the renewal
/// matched no row (taken over, or expired: a lapsed lease is never revived), or the store did
/// not answer for a whole lease — cancels the job through its fence.
async fn heartbeat(store: Store, fence: Fence, lease: Duration) {
    let Some(held) = fence.lease().cloned() else {
        return;
    };
    let mut last_renewed = Instant::now();
    loop {
        tokio::time::sleep(lease / 3).await;
        let asked = Instant::now();
        match store
            .renew_lock(&held.table, &held.job_id, held.epoch, millis(lease))
            .await
        {
            Ok(true) => {
                fence.renewed(asked);
                last_renewed = asked;
            }
            Ok(false) => {
                let why = match store.lease(&held.table).await {
                    Ok(view) => fence::judge(view.as_ref(), &held, 0).err(),
                    Err(_) => None,
                };
                fence.lose(why.unwrap_or_else(|| "its renewal was refused".to_string()));
                return;
            }
            Err(e) => {
                tracing::warn!(table = held.table, job_id = held.job_id, error = %e, "lease renewal failed");
                if last_renewed.elapsed() >= lease {
                    fence.lose(format!(
                        "not renewed for {} s: the state store did not answer ({e})",
                        lease.as_secs()
                    ));
                    return;
                }
            }
        }
    }
}

/// The outcome of a job whose lease was lost: failed with the lease error, or partial when some
/// of its work had committed (under the lease) before. A job that finished everything keeps its
/// outcome: each of its commits passed the fence.
fn with_lease_error(outcome: JobOutcome, lost: Option<FenceError>) -> JobOutcome {
    let Some(lost) = lost.filter(|_| outcome.status != JobStatus::Succeeded) else {
        return outcome;
    };
    let lease_error = lost.to_string();
    let error = match outcome.error {
        Some(other) if !other.contains(&lease_error) => format!("{lease_error}; {other}"),
        _ => lease_error,
    };
    let status = match outcome.status {
        JobStatus::Partial => JobStatus::Partial,
        _ => JobStatus::Failed,
    };
    JobOutcome {
        status,
        error: Some(error),
        detail: outcome.detail,
    }
}

/// A running job: holds the table's lock until [`JobHandle::finish`].
#[derive(Debug)]
pub struct JobHandle {
    jobs: Arc<Jobs>,
    pub id: String,
    pub table: String,
    pub kind: JobKind,
    epoch: i64,
    started: Instant,
    cancel: CancellationToken,
    fence: Fence,
    heartbeat: tokio::task::JoinHandle<()>,
}

/// A cheap handle for reporting a running job's progress from synchronous code.
#[derive(Debug, Clone)]
pub struct ProgressSink {
    store: Store,
    pub job_id: String,
}

impl ProgressSink {
    /// Records `detail` in the background (never blocks the caller; see
    /// [`Store::update_progress`] for why a late write is harmless).
    pub fn report(&self, detail: serde_json::Value) {
        let (store, id) = (self.store.clone(), self.job_id.clone());
        tokio::spawn(async move {
            if let Err(e) = store.update_progress(&id, &detail).await {
                tracing::debug!(job_id = id, error = %e, "recording progress failed");
            }
        });
    }
}

impl JobHandle {
    /// The job's token: cancelled on shutdown and when its lease is lost.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// The fence every commit and deletion of this job checks.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    pub fn progress_sink(&self) -> ProgressSink {
        ProgressSink {
            store: self.jobs.store.clone(),
            job_id: self.id.clone(),
        }
    }

    /// Stores progress while the job runs.
    pub async fn progress(&self, detail: &serde_json::Value) {
        if let Err(e) = self.jobs.store.update_progress(&self.id, detail).await {
            tracing::warn!(job_id = self.id, error = %e, "recording progress failed");
        }
    }

    /// Records the outcome, updates metrics and releases the lock.
    pub async fn finish(self, outcome: JobOutcome) {
        self.heartbeat.abort();
        self.fence.recheck().await;
        let outcome = with_lease_error(outcome, self.fence.lost());
        let jobs = &self.jobs;
        let elapsed = self.started.elapsed().as_secs_f64();
        let kind = self.kind.as_str();
        let status = outcome.status.as_str();
        if let Err(e) = jobs
            .store
            .update_job(
                &self.id,
                status,
                Some(now_ms()),
                &outcome.detail,
                outcome.error.as_deref(),
            )
            .await
        {
            tracing::error!(job_id = self.id, error = %e, "recording job outcome failed");
        }
        jobs.metrics
            .jobs_total
            .with_label_values(&[kind, status])
            .inc();
        jobs.metrics
            .job_duration_seconds
            .with_label_values(&[kind])
            .observe(elapsed);
        if matches!(outcome.status, JobStatus::Succeeded | JobStatus::Skipped) {
            jobs.metrics
                .last_success_timestamp_seconds
                .with_label_values(&[&self.table, kind])
                .set(chrono::Utc::now().timestamp() as f64);
        }
        if let Err(e) = jobs.store.unlock(&self.table, &self.id, self.epoch).await {
            tracing::warn!(job_id = self.id, error = %e, "releasing lock failed; it expires by itself");
        }
        jobs.running
            .lock()
            .expect("not poisoned")
            .remove(&self.table);
        match &outcome.error {
            Some(err) => {
                tracing::warn!(table = self.table, job_id = self.id, kind, status, seconds = elapsed, error = %err, "job finished")
            }
            None => tracing::info!(
                table = self.table,
                job_id = self.id,
                kind,
                status,
                seconds = elapsed,
                "job finished"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn jobs_with(lease: Duration) -> (Arc<Jobs>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = Store::connect(&url).await.unwrap();
        let jobs = Jobs::new(store, Metrics::new(), lease, CancellationToken::new());
        (jobs, dir)
    }

    async fn jobs() -> (Arc<Jobs>, tempfile::TempDir) {
        jobs_with(DEFAULT_LEASE).await
    }

    #[tokio::test]
    async fn one_job_per_table() {
        let (jobs, _d) = jobs().await;
        let h = jobs
            .begin("m.t", JobKind::Compaction, Trigger::Manual)
            .await
            .unwrap();
        let busy = jobs
            .begin("m.t", JobKind::Expire, Trigger::Schedule)
            .await
            .unwrap_err();
        assert!(
            matches!(&busy, StartError::Busy { job_id, .. } if *job_id == h.id),
            "{busy}"
        );
        // Another table is independent.
        let other = jobs
            .begin("m.u", JobKind::Expire, Trigger::Schedule)
            .await
            .unwrap();
        let id = h.id.clone();
        jobs.run(h, async { JobOutcome::ok(serde_json::json!({"files": 3})) })
            .await;
        other
            .finish(JobOutcome::failed("boom", serde_json::json!({})))
            .await;
        let rec = jobs.store().job(&id).await.unwrap().unwrap();
        assert_eq!(rec.status, "succeeded");
        assert_eq!(rec.detail["files"], 3);
        assert!(rec.finished_ms.is_some());
        // The lock is free again.
        let again = jobs
            .begin("m.t", JobKind::Expire, Trigger::Manual)
            .await
            .unwrap();
        again.finish(JobOutcome::ok(serde_json::json!({}))).await;
        let text = jobs.metrics.render();
        assert!(text.contains("icemaint_jobs_total{kind=\"compaction\",outcome=\"succeeded\"} 1"));
        assert!(text.contains("icemaint_jobs_total{kind=\"expire\",outcome=\"failed\"} 1"));
    }

    #[tokio::test]
    async fn another_process_holding_the_lease_blocks() {
        let (jobs, _d) = jobs().await;
        jobs.store()
            .try_lock("m.t", "other-process", "their-job", 60_000)
            .await
            .unwrap()
            .unwrap();
        let err = jobs
            .begin("m.t", JobKind::Compaction, Trigger::Manual)
            .await
            .unwrap_err();
        assert!(matches!(err, StartError::Busy { job_id, .. } if job_id == "their-job"));
        assert!(jobs.running_on("m.t").is_none());
    }

    #[tokio::test]
    async fn spawned_jobs_drain() {
        let (jobs, _d) = jobs().await;
        let h = jobs
            .begin("m.t", JobKind::Compaction, Trigger::Manual)
            .await
            .unwrap();
        let id = h.id.clone();
        jobs.spawn(h, async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            JobOutcome::ok(serde_json::json!({}))
        });
        assert!(jobs.drain(Duration::from_secs(5)).await);
        assert_eq!(
            jobs.store().job(&id).await.unwrap().unwrap().status,
            "succeeded"
        );
    }

    #[tokio::test]
    async fn a_lost_lease_cancels_the_job_and_its_fence_refuses() {
        // Long enough that a renewal delayed by a loaded machine still lands in time (renewed
        // every third of it); the sleep below outlasts it so only renewals can keep it ours.
        let (jobs, _d) = jobs_with(Duration::from_secs(3)).await;
        let h = jobs
            .begin_from(
                "m.t",
                JobKind::Compaction,
                Origin {
                    fire_ms: Some(1_000),
                    id: Some("queued-id".into()),
                    ..Origin::of(Trigger::Schedule)
                },
            )
            .await
            .unwrap();
        let (cancel, fence, id) = (h.cancel_token(), h.fence(), h.id.clone());
        assert_eq!(id, "queued-id", "a queued job keeps its id");
        let rec = jobs.store().job(&id).await.unwrap().unwrap();
        assert_eq!(
            (rec.fire_ms, rec.reason.as_deref()),
            (Some(1_000), Some("schedule"))
        );
        let epoch = fence.lease().unwrap().epoch;
        fence.before_commit().await.expect("held");
        // Renewals keep it ours for longer than the lease.
        tokio::time::sleep(Duration::from_millis(3_500)).await;
        fence.before_commit().await.expect("renewed");
        assert!(!cancel.is_cancelled());

        // Another replica takes the table over (as after this process paused past its lease).
        jobs.store().unlock("m.t", &id, epoch).await.unwrap();
        let theirs = jobs
            .store()
            .try_lock("m.t", "other", "theirs", 60_000)
            .await;
        assert_eq!(theirs.unwrap(), Ok(epoch + 1));
        tokio::time::timeout(Duration::from_secs(5), cancel.cancelled())
            .await
            .expect("the heartbeat cancels the job");
        let err = fence.before_commit().await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("lease on m.t lost: taken over by job theirs"),
            "{err}"
        );
        assert!(fence.before_delete().await.is_err());

        // The operation stopped on the cancellation; the job ends failed with the lease error
        // and leaves the new holder's lease alone.
        let work = async { JobOutcome::failed("compaction cancelled", serde_json::json!({})) };
        jobs.run(h, work).await;
        let rec = jobs.store().job(&id).await.unwrap().unwrap();
        assert_eq!(rec.status, "failed");
        assert_eq!(rec.fire_ms, Some(1_000));
        let error = rec.error.unwrap();
        assert!(
            error.starts_with("lease on m.t lost: taken over"),
            "{error}"
        );
        assert!(error.ends_with("; compaction cancelled"), "{error}");
        let lease = jobs.store().lease("m.t").await.unwrap().unwrap();
        assert_eq!((lease.job_id.as_str(), lease.epoch), ("theirs", epoch + 1));
    }

    #[test]
    fn a_lost_lease_turns_unfinished_outcomes_into_failures() {
        let lost = Some(FenceError::Lost {
            table: "m.t".into(),
            reason: "expired".into(),
        });
        let json = serde_json::json!({});
        let skipped = JobOutcome {
            status: JobStatus::Skipped,
            detail: json.clone(),
            error: None,
        };
        let out = with_lease_error(skipped, lost.clone());
        assert_eq!(out.status, JobStatus::Failed);
        assert_eq!(out.error.as_deref(), Some("lease on m.t lost: expired"));
        let partial = JobOutcome {
            status: JobStatus::Partial,
            detail: json.clone(),
            error: Some("group 2 failed".into()),
        };
        let out = with_lease_error(partial, lost.clone());
        assert_eq!(out.status, JobStatus::Partial);
        assert_eq!(
            out.error.as_deref(),
            Some("lease on m.t lost: expired; group 2 failed")
        );
        // Everything committed before the loss: nothing to report.
        let done = with_lease_error(JobOutcome::ok(json.clone()), lost);
        assert_eq!((done.status, done.error), (JobStatus::Succeeded, None));
        let failed = with_lease_error(JobOutcome::failed("x", json), None);
        assert_eq!(failed.error.as_deref(), Some("x"));
    }
}
