//! One job model and one per-table lock for every maintenance kind.
//!
//! A job is a row in the state store (`running` → `succeeded` / `failed` / `partial` / `skipped`)
//! and holds the table's maintenance lock for as long as it runs: in this process (a map) and
//! across processes (a lease row in the store, renewed while the job runs and taken over once
//! expired, so a crashed process never blocks a table for longer than the lease).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::task::TaskTracker;

use crate::store::{JobRecord, Store, StoreError};
use crate::telemetry::Metrics;

/// How long a lock lease lasts without renewal.
const LOCK_TTL: Duration = Duration::from_secs(60);

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
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Startup => "startup",
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
    owner: String,
    running: Mutex<HashMap<String, String>>,
    tracker: TaskTracker,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Jobs {
    pub fn new(store: Store, metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            store,
            metrics,
            owner: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            running: Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The job running on `table` in this process, if any.
    pub fn running_on(&self, table: &str) -> Option<String> {
        self.running
            .lock()
            .expect("not poisoned")
            .get(table)
            .cloned()
    }

    /// Records a new job and takes the table's lock, or says who holds it.
    pub async fn begin(
        self: &Arc<Self>,
        table: &str,
        kind: JobKind,
        trigger: Trigger,
    ) -> Result<JobHandle, StartError> {
        let id = uuid::Uuid::now_v7().to_string();
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
        let now = now_ms();
        match self
            .store
            .try_lock(
                table,
                &self.owner,
                &id,
                now,
                now + LOCK_TTL.as_millis() as i64,
            )
            .await
        {
            Ok(Ok(())) => {}
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
        }
        let record = JobRecord::running(&id, table, kind.as_str(), trigger.as_str(), now);
        if let Err(e) = self.store.insert_job(&record).await {
            let _ = self.store.unlock(table, &id).await;
            release_local();
            return Err(e.into());
        }
        let heartbeat = {
            let store = self.store.clone();
            let (table, id) = (table.to_string(), id.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(LOCK_TTL / 3).await;
                    let until = now_ms() + LOCK_TTL.as_millis() as i64;
                    match store.renew_lock(&table, &id, until).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::error!(table, job_id = id, "maintenance lock lost");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(table, job_id = id, error = %e, "lock renewal failed")
                        }
                    }
                }
            })
        };
        tracing::info!(
            table,
            job_id = id,
            kind = kind.as_str(),
            trigger = trigger.as_str(),
            "job started"
        );
        Ok(JobHandle {
            jobs: Arc::clone(self),
            id,
            table: table.to_string(),
            kind,
            started: Instant::now(),
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
        let n = self.store.fail_running_jobs(now_ms(), ABANDONED).await?;
        if n > 0 {
            tracing::warn!(jobs = n, "jobs of a stopped process marked failed");
        }
        Ok(n)
    }

    /// How often the daemon looks for abandoned jobs: a dead job is failed within about one and
    /// a half lease lengths of its last renewal.
    pub fn sweep_interval() -> Duration {
        LOCK_TTL / 2
    }

    /// Waits for background jobs, at most `grace`; true when all finished.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}

/// A running job: holds the table's lock until [`JobHandle::finish`].
#[derive(Debug)]
pub struct JobHandle {
    jobs: Arc<Jobs>,
    pub id: String,
    pub table: String,
    pub kind: JobKind,
    started: Instant,
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
        if let Err(e) = jobs.store.unlock(&self.table, &self.id).await {
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

    async fn jobs() -> (Arc<Jobs>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = Store::connect(&url).await.unwrap();
        (Jobs::new(store, Metrics::new()), dir)
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
        let now = now_ms();
        jobs.store()
            .try_lock("m.t", "other-process", "their-job", now, now + 60_000)
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
}
