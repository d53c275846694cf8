//! Binpack compaction: pure planning ([`plan`]), Spark-compatible options ([`options`]) and their
//! `where` filter ([`filter`]), and the I/O that reads file groups and writes them back
//! ([`rewrite`]). This module runs a whole compaction: [`prepare`] loads the table and plans it,
//! [`execute`] rewrites the groups concurrently and commits them as `replace` snapshots through
//! [`crate::commit`].
//!
//! Commits follow Spark: without partial progress every group lands in one snapshot or none does
//! (a refused commit fails the run and its files are deleted); with `partial-progress.enabled`
//! groups are committed in up to `partial-progress.max-commits` batches as they finish, and when
//! validation refuses a batch of several groups (a concurrent delete touched one of them), its
//! groups are committed one by one so that only the conflicting ones are dropped.

pub mod changed;
pub mod filter;
pub mod hot;
pub mod memory;
pub mod options;
pub mod plan;
pub mod rewrite;
pub mod simulate;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use iceberg::spec::DataFile;
use iceberg::table::Table;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::catalog::{CatalogError, CatalogHandle, CommitBackend, ident_name};
use crate::commit::{ReplaceDataFiles, ReplaceError, RetryPolicy, commit_replace};
use crate::crashpoint::{self, CrashPoint};
use crate::fence::Fence;
use crate::telemetry::Metrics;
use options::{CompactionOptions, OptionError};
use plan::{FileGroup, Plan, PlanSettings};
use rewrite::{Candidates, RewriteError, RewriteSettings};

/// Why a compaction could not run.
#[derive(Debug, thiserror::Error)]
pub enum CompactionError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Options(Vec<OptionError>),
    // The inner errors of `Filter` and `Rewrite` are part of the message and deliberately not
    // `#[source]`: the CLI prints the whole cause chain, which would repeat them.
    #[error("option 'where': {0}")]
    Filter(filter::FilterError),
    #[error("table {table}: {reason}")]
    Unsupported { table: String, reason: String },
    #[error("rewrite failed: {0}")]
    Rewrite(RewriteError),
    #[error("compaction cancelled by shutdown (or a lost lease) before committing")]
    Cancelled,
}

impl From<filter::FilterError> for CompactionError {
    fn from(e: filter::FilterError) -> Self {
        CompactionError::Filter(e)
    }
}

impl From<RewriteError> for CompactionError {
    fn from(e: RewriteError) -> Self {
        CompactionError::Rewrite(e)
    }
}

impl CompactionError {
    /// Bad input from the user (options, filter): a 400 in the API, a one-line error in the CLI.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            CompactionError::Options(_) | CompactionError::Filter(_)
        )
    }

    pub fn is_retryable(&self) -> bool {
        match self {
            CompactionError::Catalog(e) => e.is_retryable(),
            CompactionError::Rewrite(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// A loaded and planned table, ready to execute or to show as a dry run.
#[derive(Debug)]
pub struct Prepared {
    pub table_name: String,
    pub table: Table,
    pub options: CompactionOptions,
    pub output_spec_id: i32,
    pub plan: Plan,
    candidates: Option<Candidates>,
    /// The watermark this run leaves for the next one's incremental planning (see
    /// [`changed`]), under `hot-partition-age` only.
    watermark: Option<Watermark>,
}

/// What a compaction records in its `replace` snapshot's summary for the next one.
#[derive(Debug, Clone)]
struct Watermark {
    cold_through_ms: i64,
    planned_at_ms: i64,
    plan_key: String,
}

/// The dry-run view of a plan (`--dry-run`, `POST .../plan`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlanView<'a> {
    pub table: &'a str,
    #[schema(required)]
    pub snapshot_id: Option<i64>,
    pub output_spec_id: i32,
    #[schema(value_type = Object)]
    pub options: &'a CompactionOptions,
    #[schema(value_type = Object)]
    pub plan: &'a Plan,
}

impl Prepared {
    pub fn view(&self) -> PlanView<'_> {
        PlanView {
            table: &self.table_name,
            snapshot_id: self.candidates.as_ref().map(|c| c.snapshot_id),
            output_spec_id: self.output_spec_id,
            options: &self.options,
            plan: &self.plan,
        }
    }
}

/// Options resolved against one loaded table.
struct Resolved {
    options: CompactionOptions,
    output_spec_id: i32,
    filter: Option<iceberg::expr::Predicate>,
}

/// Resolves the options (the policy's, then `overrides`, then the table's defaults) against
/// `table`: values, the `where` filter bound to the current schema, and `output-spec-id`.
fn resolve_for_table(
    table: &Table,
    policy_options: &BTreeMap<String, String>,
    overrides: &BTreeMap<String, String>,
) -> Result<Resolved, CompactionError> {
    let md = table.metadata();
    let mut merged = policy_options.clone();
    merged.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
    let options = options::resolve(&merged, md.properties()).map_err(CompactionError::Options)?;
    let spec_ids: Vec<i32> = md.partition_specs_iter().map(|s| s.spec_id()).collect();
    let output_spec_id = options
        .resolve_output_spec_id(md.default_partition_spec_id(), &spec_ids)
        .map_err(|e| CompactionError::Options(vec![e]))?;
    let filter = match &options.where_filter {
        Some(w) => Some(filter::parse_where(w, md.current_schema())?),
        None => None,
    };
    Ok(Resolved {
        options,
        output_spec_id,
        filter,
    })
}

/// Checks a compaction request against the table without planning it (no manifest is read):
/// what [`prepare`] would reject as bad input (option values, defaults from table properties, the
/// `where` filter's columns, `output-spec-id`) or a missing table. The CLI and the API call it
/// before recording a job, so bad input is an immediate error (exit code, 400) rather than a
/// failed job.
pub async fn check_request(
    catalog: &CatalogHandle,
    table_name: &str,
    policy_options: &BTreeMap<String, String>,
    overrides: &BTreeMap<String, String>,
) -> Result<CompactionOptions, CompactionError> {
    let table = catalog.load(table_name).await?;
    Ok(resolve_for_table(&table, policy_options, overrides)?.options)
}

/// Loads `table`, resolves the options (the policy's, then `overrides`, then table defaults) and
/// plans the current snapshot. No file is written.
pub async fn prepare(
    catalog: &CatalogHandle,
    table_name: &str,
    policy_options: &BTreeMap<String, String>,
    overrides: &BTreeMap<String, String>,
) -> Result<Prepared, CompactionError> {
    let table = catalog.load(table_name).await?;
    let md = table.metadata();
    let Resolved {
        options,
        output_spec_id,
        filter,
    } = resolve_for_table(&table, policy_options, overrides)?;
    let now = now_ms();
    let mut settings = PlanSettings::new(&options, output_spec_id)
        .with_current_spec(
            md.default_partition_spec_id(),
            rewrite::current_null_partition(md),
        )
        .with_hot_cutoff(&options, now);
    let watermark = settings.hot_cutoff_ms.map(|cold_through_ms| Watermark {
        cold_through_ms,
        planned_at_ms: now,
        plan_key: changed::plan_key(&options),
    });
    if let Some(w) = &watermark
        && let Some((cold_through, planned_at)) = last_watermark(md, &w.plan_key)
    {
        settings.changed_since_ms = Some(cold_through);
        settings.settled_before_ms = settings.settled_before_ms.max(planned_at);
    }
    let (plan, candidates) = match md.current_snapshot() {
        None => (plan::plan(&[], &settings), None),
        Some(s) => {
            let c = rewrite::collect_candidates(&table, s.snapshot_id(), filter).await?;
            (plan::plan(&c.files, &settings), Some(c))
        }
    };
    Ok(Prepared {
        table_name: table_name.to_string(),
        table,
        options,
        output_spec_id,
        plan,
        candidates,
        watermark,
    })
}

/// The watermark of the table's last icemaint compaction on the current branch, when it planned
/// with the same options (see [`changed`]): its cold-through and planning instants. `None`: plan
/// every partition.
fn last_watermark(md: &iceberg::spec::TableMetadata, plan_key: &str) -> Option<(i64, Option<i64>)> {
    let mut snapshot = md.current_snapshot().cloned();
    while let Some(s) = snapshot {
        let props = &s.summary().additional_properties;
        if props.contains_key("icemaint.job-id") {
            if props.get(changed::PLAN_KEY).map(String::as_str) != Some(plan_key) {
                return None;
            }
            let cold_through = props.get(changed::COLD_THROUGH_MS)?.parse().ok()?;
            let planned_at = props
                .get(changed::PLANNED_AT_MS)
                .and_then(|v| v.parse().ok());
            return Some((cold_through, planned_at));
        }
        snapshot = s
            .parent_snapshot_id()
            .and_then(|p| md.snapshot_by_id(p).cloned());
    }
    None
}

/// The wall clock in ms since the epoch: `hot-partition-age` is measured against the snapshots'
/// commit timestamps, which are wall-clock times too.
fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// What a compaction did (the job's result).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub table: String,
    pub starting_snapshot_id: Option<i64>,
    pub groups_planned: usize,
    /// Hot partitions (`hot-partition-age`) only fragment-merged or left alone.
    pub hot_partitions_skipped: usize,
    /// Partitions not planned: unchanged since the last compaction (incremental planning).
    pub unchanged_partitions: usize,
    pub groups_rewritten: usize,
    pub groups_committed: usize,
    pub groups_failed: usize,
    /// Groups refused by commit validation (a concurrent delete or removal touched them).
    pub conflicts: usize,
    pub files_read: u64,
    pub bytes_read: u64,
    pub files_written: u64,
    pub bytes_written: u64,
    pub snapshot_ids: Vec<i64>,
    /// Dangling delete files removed (`remove-dangling-deletes`).
    pub delete_files_removed: u64,
    pub commit_attempts: u32,
    pub errors: Vec<String>,
    pub seconds: f64,
}

/// Dependencies of [`execute`].
pub struct Env<'a> {
    pub catalog: &'a CatalogHandle,
    pub backend: Arc<dyn CommitBackend>,
    pub metrics: &'a Metrics,
    /// Stops new groups from starting; a commit already sent is never cut off.
    pub cancel: CancellationToken,
    /// Checked right before each commit: a job that lost its table's lease commits nothing.
    pub fence: &'a Fence,
    pub job_id: String,
    /// Called after each group and commit with the report so far.
    pub progress: Box<dyn Fn(&Report) + Send + Sync + 'a>,
}

/// How the groups are committed.
struct CommitSettings {
    retry: RetryPolicy,
    /// Spark's `remove-dangling-deletes`: each replace snapshot also drops the delete files that
    /// no longer apply to any live data file.
    remove_dangling_deletes: bool,
    /// Spark's `use-starting-sequence-number`.
    use_starting_sequence_number: bool,
    /// Partial progress: a batch refused by validation is retried group by group. Without it
    /// the one commit is all or nothing, as in Spark.
    split_refused_batches: bool,
    /// The spec the groups are written in (`output-spec-id`): their manifest is written under it.
    output_spec_id: i32,
    /// Recorded in the snapshot summary for the next run's incremental planning.
    watermark: Option<Watermark>,
}

/// A rewritten group waiting for its commit.
struct Rewritten {
    group: FileGroup,
    files: Vec<DataFile>,
}

/// What a group task returns: `None` when it did not start because of cancellation.
type GroupResult = Option<Result<Vec<DataFile>, RewriteError>>;

/// Rewrites and commits the plan. Returns the report even when some groups failed; an error
/// only when nothing could be attempted.
pub async fn execute(env: &Env<'_>, prepared: Prepared) -> Result<Report, CompactionError> {
    let started = Instant::now();
    let report = planned_report(env, &prepared);
    let Some(candidates) = prepared.candidates else {
        return Ok(report);
    };
    if prepared.plan.groups.is_empty() {
        return Ok(report);
    }
    check_format_version(&prepared.table, &report.table)?;

    let opts = &prepared.options;
    let mut run = Run {
        env,
        table: &prepared.table,
        candidates: &candidates,
        options: opts,
        commit: CommitSettings {
            retry: RetryPolicy::from_table_properties(prepared.table.metadata().properties()),
            remove_dangling_deletes: opts.remove_dangling_deletes,
            use_starting_sequence_number: opts.use_starting_sequence_number,
            split_refused_batches: opts.partial_progress_enabled,
            output_spec_id: prepared.output_spec_id,
            // Partial progress may commit only some groups: no watermark then.
            watermark: prepared
                .watermark
                .clone()
                .filter(|_| !opts.partial_progress_enabled),
        },
        batch_size: batch_size(opts, prepared.plan.groups.len()),
        report,
        pending: Vec::new(),
        partial_failures: 0,
    };

    let mut tasks = run.spawn_rewrites(&prepared.plan.groups, prepared.output_spec_id);
    while let Some(joined) = tasks.join_next().await {
        run.record_rewrite(joined);
        (env.progress)(&run.report);
        if run.pending.len() >= run.batch_size && !env.cancel.is_cancelled() {
            run.commit_pending_batch().await;
        }
    }
    run.finish(started).await
}

/// The report of a run before anything is rewritten; counts the planned groups in the metrics.
fn planned_report(env: &Env<'_>, prepared: &Prepared) -> Report {
    env.metrics
        .compaction_groups_total
        .with_label_values(&[&prepared.table_name, "planned"])
        .inc_by(prepared.plan.groups.len() as u64);
    env.metrics
        .compaction_hot_partitions_skipped_total
        .with_label_values(&[&prepared.table_name])
        .inc_by(prepared.plan.hot_partitions as u64);
    env.metrics.count_writer_appends(
        &prepared.table_name,
        &writer_appends(prepared.table.metadata()),
    );
    Report {
        table: prepared.table_name.clone(),
        starting_snapshot_id: prepared.candidates.as_ref().map(|c| c.snapshot_id),
        groups_planned: prepared.plan.groups.len(),
        hot_partitions_skipped: prepared.plan.hot_partitions,
        unchanged_partitions: prepared.plan.unchanged_partitions,
        ..Default::default()
    }
}

/// `(sequence number, added-files-size)` of the table's writer (non-`replace`) snapshots.
fn writer_appends(md: &iceberg::spec::TableMetadata) -> Vec<(i64, u64)> {
    md.snapshots()
        .filter(|s| s.summary().operation != iceberg::spec::Operation::Replace)
        .map(|s| {
            let added = s
                .summary()
                .additional_properties
                .get("added-files-size")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            (s.sequence_number(), added)
        })
        .collect()
}

/// Refuses tables whose format version replace snapshots cannot be committed to: v1 and v2 are
/// compacted as Spark does (v1 with v1 manifests, without sequence numbers), v3's row lineage
/// and deletion vectors are not written.
fn check_format_version(table: &Table, table_name: &str) -> Result<(), CompactionError> {
    let version = crate::catalog::format_version_number(table.metadata().format_version());
    if version > 2 {
        return Err(CompactionError::Unsupported {
            table: table_name.to_string(),
            reason: format!(
                "format version {version}: icemaint commits replace snapshots to v1 and v2 tables only"
            ),
        });
    }
    Ok(())
}

/// How many rewritten groups make one commit: all of them without partial progress, else
/// enough to stay within `partial-progress.max-commits`.
fn batch_size(opts: &CompactionOptions, groups: usize) -> usize {
    if opts.partial_progress_enabled {
        groups.div_ceil(opts.partial_progress_max_commits.max(1))
    } else {
        usize::MAX
    }
}

/// The state of one [`execute`] run once its groups are being rewritten.
struct Run<'r, 'e> {
    env: &'r Env<'e>,
    table: &'r Table,
    candidates: &'r Candidates,
    options: &'r CompactionOptions,
    commit: CommitSettings,
    /// Rewritten groups per commit.
    batch_size: usize,
    report: Report,
    /// Rewritten groups not committed yet.
    pending: Vec<Rewritten>,
    /// Batches that did not fully commit (partial progress).
    partial_failures: usize,
}

impl Run<'_, '_> {
    /// Starts one rewrite task per group, at most `max-concurrent-file-group-rewrites` at once
    /// and only as many as `max-rewrite-memory-bytes` holds ([`memory`]); a task that gets its
    /// turn after cancellation does nothing. A group's scan tasks are built when it gets its
    /// turn, so only the running groups' are in memory.
    fn spawn_rewrites(
        &self,
        groups: &[FileGroup],
        output_spec_id: i32,
    ) -> JoinSet<(FileGroup, GroupResult)> {
        let settings = Arc::new(RewriteSettings::from_options(self.options, output_spec_id));
        let slots = Arc::new(Semaphore::new(
            self.options.max_concurrent_file_group_rewrites.max(1),
        ));
        let budget_bytes = self.options.max_rewrite_memory_bytes;
        let budget = Arc::new(Semaphore::new(memory::budget_permits(budget_bytes) as usize));
        let row_group_bytes = memory::row_group_bytes(self.table.metadata().properties());
        let mut tasks: JoinSet<(FileGroup, GroupResult)> = JoinSet::new();
        for group in groups.iter().cloned() {
            let (source, table, settings, slots, budget, cancel) = (
                self.candidates.task_source(),
                self.table.clone(),
                Arc::clone(&settings),
                Arc::clone(&slots),
                Arc::clone(&budget),
                self.env.cancel.clone(),
            );
            let estimate = memory::group_estimate_bytes(group.input_bytes, row_group_bytes);
            let permits = memory::group_permits(estimate, budget_bytes);
            tasks.spawn(async move {
                // Slot first, then memory, in every task: memory is only ever held by a running
                // group, which frees both when it ends, so a waiting group cannot deadlock.
                let _slot = slots.acquire_owned().await.expect("never closed");
                let _memory = budget
                    .acquire_many_owned(permits)
                    .await
                    .expect("never closed");
                if cancel.is_cancelled() {
                    return (group, None);
                }
                let r = match source.tasks_for(&group) {
                    Ok(group_tasks) => {
                        rewrite::rewrite_planned_group(&table, &group, group_tasks, &settings).await
                    }
                    Err(e) => Err(e),
                };
                (group, Some(r))
            });
        }
        tasks
    }

    /// Records the outcome of one group task: a rewritten group joins `pending`, a failure goes
    /// to the report, a group skipped because of cancellation is dropped.
    fn record_rewrite(&mut self, joined: Result<(FileGroup, GroupResult), tokio::task::JoinError>) {
        let report = &mut self.report;
        let (group, result) = match joined {
            Ok(r) => r,
            Err(e) => {
                report.groups_failed += 1;
                report.errors.push(format!("group task failed: {e}"));
                return;
            }
        };
        let metrics = self.env.metrics;
        let label = [report.table.as_str()];
        match result {
            Some(Ok(files)) => {
                report.groups_rewritten += 1;
                metrics
                    .compaction_bytes_read_total
                    .with_label_values(&label)
                    .inc_by(group.input_bytes);
                metrics
                    .compaction_files_read_total
                    .with_label_values(&label)
                    .inc_by(group.files.len() as u64);
                self.pending.push(Rewritten { group, files });
            }
            None => {}
            Some(Err(e)) => {
                report.groups_failed += 1;
                report
                    .errors
                    .push(format!("group {} ({}): {e}", group.id, group.partition));
                metrics
                    .compaction_groups_total
                    .with_label_values(&[&report.table, "failed"])
                    .inc();
            }
        }
    }

    /// Commits the pending groups as one partial-progress batch; stops the run (through the
    /// cancellation token) after `partial-progress.max-failed-commits` failed batches.
    async fn commit_pending_batch(&mut self) {
        let batch = std::mem::take(&mut self.pending);
        if !self.commit_batch(batch).await {
            self.partial_failures += 1;
        }
        (self.env.progress)(&self.report);
        let opts = self.options;
        if self.partial_failures >= opts.partial_progress_max_failed_commits.max(1)
            && opts.partial_progress_enabled
        {
            self.report.errors.push(format!(
                "stopping after {} failed commits (partial-progress.max-failed-commits)",
                self.partial_failures
            ));
            self.env.cancel.cancel();
        }
    }

    /// [`commit_batch`] with this run's table, candidates and settings.
    async fn commit_batch(&mut self, batch: Vec<Rewritten>) -> bool {
        commit_batch(
            self.env,
            self.table,
            self.candidates,
            batch,
            &self.commit,
            &mut self.report,
        )
        .await
    }

    /// Ends the run once every group task is done: after cancellation the pending groups' files
    /// are deleted, otherwise the pending groups are committed.
    async fn finish(mut self, started: Instant) -> Result<Report, CompactionError> {
        if self.env.cancel.is_cancelled() {
            // Shutdown (or too many failed commits) arrived while rewriting: nothing of the
            // unfinished work is committed and its files are removed.
            delete_written(self.table, self.pending.iter().flat_map(|r| &r.files)).await;
            self.report.seconds = started.elapsed().as_secs_f64();
            if self.report.groups_committed == 0 && self.report.groups_rewritten > 0 {
                return Err(CompactionError::Cancelled);
            }
            return Ok(self.report);
        }
        if !self.pending.is_empty() {
            let batch = std::mem::take(&mut self.pending);
            if self.options.partial_progress_enabled || self.report.groups_failed == 0 {
                self.commit_batch(batch).await;
            } else {
                self.abandon(batch).await;
            }
        }
        self.report.seconds = started.elapsed().as_secs_f64();
        (self.env.progress)(&self.report);
        Ok(self.report)
    }

    /// Without partial progress a run commits all its groups or none, as Spark's does: once a
    /// group failed to rewrite, the rewritten ones are not committed and their files are deleted.
    async fn abandon(&mut self, batch: Vec<Rewritten>) {
        let ids: Vec<String> = batch.iter().map(|r| r.group.id.to_string()).collect();
        self.report.groups_failed += batch.len();
        self.env
            .metrics
            .compaction_groups_total
            .with_label_values(&[&self.report.table, "failed"])
            .inc_by(batch.len() as u64);
        self.report.errors.push(format!(
            "groups {}: not committed: another group failed and partial-progress.enabled is false",
            ids.join(",")
        ));
        delete_written(self.table, batch.iter().flat_map(|r| &r.files)).await;
    }
}

/// Commits `batch` as one snapshot; with partial progress, when validation refuses it and it holds
/// several groups, retries them one by one so only the conflicting groups are dropped. Returns
/// false when some group did not commit.
async fn commit_batch(
    env: &Env<'_>,
    table: &Table,
    candidates: &Candidates,
    batch: Vec<Rewritten>,
    commit: &CommitSettings,
    report: &mut Report,
) -> bool {
    crashpoint::reached(CrashPoint::CompactionRewritten);
    match commit_groups(env, table, candidates, &batch, commit, report).await {
        Ok(()) => true,
        Err(ReplaceError::Validation(msg)) if batch.len() > 1 && commit.split_refused_batches => {
            tracing::warn!(table = report.table, groups = batch.len(), reason = %msg, "combined commit refused; committing groups one by one");
            let mut all = true;
            for one in batch {
                let single = [one];
                if let Err(e) = commit_groups(env, table, candidates, &single, commit, report).await
                {
                    all = false;
                    record_failure(env, table, &single, e, report).await;
                }
            }
            all
        }
        Err(e) => {
            record_failure(env, table, &batch, e, report).await;
            false
        }
    }
}

async fn commit_groups(
    env: &Env<'_>,
    table: &Table,
    candidates: &Candidates,
    groups: &[Rewritten],
    commit: &CommitSettings,
    report: &mut Report,
) -> Result<(), ReplaceError> {
    let change = ReplaceDataFiles {
        starting_snapshot_id: candidates.snapshot_id,
        delete_paths: groups
            .iter()
            .flat_map(|g| g.group.files.iter().map(|f| f.path.to_string()))
            .collect(),
        add: groups
            .iter()
            .flat_map(|g| g.files.iter().cloned())
            .collect(),
        summary_properties: summary_properties(env, commit),
        remove_dangling_deletes: commit.remove_dangling_deletes,
        use_starting_sequence_number: commit.use_starting_sequence_number,
        output_spec_id: Some(commit.output_spec_id),
    };
    let outcome = commit_replace(
        env.catalog.catalog.as_ref(),
        env.backend.as_ref(),
        table.identifier(),
        &change,
        &commit.retry,
        env.fence,
    )
    .await?;
    report.delete_files_removed += outcome
        .summary
        .get(crate::commit::summary::REMOVED_DELETE_FILES)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let label = [report.table.clone()];
    let written: u64 = change.add.iter().map(|f| f.file_size_in_bytes()).sum();
    report.groups_committed += groups.len();
    report.files_read += groups
        .iter()
        .map(|g| g.group.files.len() as u64)
        .sum::<u64>();
    report.bytes_read += groups.iter().map(|g| g.group.input_bytes).sum::<u64>();
    report.files_written += change.add.len() as u64;
    report.bytes_written += written;
    report.snapshot_ids.push(outcome.snapshot_id);
    report.commit_attempts += outcome.attempts;
    let m = env.metrics;
    m.compaction_bytes_written_total
        .with_label_values(&label)
        .inc_by(written);
    m.compaction_files_written_total
        .with_label_values(&label)
        .inc_by(change.add.len() as u64);
    m.compaction_groups_total
        .with_label_values(&[&report.table, "committed"])
        .inc_by(groups.len() as u64);
    if outcome.attempts > 1 {
        m.commit_retries_total
            .with_label_values(&label)
            .inc_by(u64::from(outcome.attempts - 1));
    }
    tracing::info!(
        table = report.table,
        snapshot_id = outcome.snapshot_id,
        groups = groups.len(),
        files_in = change.delete_paths.len(),
        files_out = change.add.len(),
        attempts = outcome.attempts,
        "replace snapshot committed"
    );
    Ok(())
}

/// `icemaint.job-id`, and the watermark for incremental planning when the run has one.
fn summary_properties(env: &Env<'_>, commit: &CommitSettings) -> HashMap<String, String> {
    let mut props = HashMap::from([("icemaint.job-id".to_string(), env.job_id.clone())]);
    if let Some(w) = &commit.watermark {
        props.insert(
            changed::COLD_THROUGH_MS.to_string(),
            w.cold_through_ms.to_string(),
        );
        props.insert(
            changed::PLANNED_AT_MS.to_string(),
            w.planned_at_ms.to_string(),
        );
        props.insert(changed::PLAN_KEY.to_string(), w.plan_key.clone());
    }
    props
}

async fn record_failure(
    env: &Env<'_>,
    table: &Table,
    groups: &[Rewritten],
    e: ReplaceError,
    report: &mut Report,
) {
    let outcome = if matches!(e, ReplaceError::Validation(_)) {
        report.conflicts += groups.len();
        env.metrics
            .commit_conflicts_total
            .with_label_values(&[&report.table])
            .inc_by(groups.len() as u64);
        "conflict"
    } else {
        report.groups_failed += groups.len();
        "failed"
    };
    env.metrics
        .compaction_groups_total
        .with_label_values(&[&report.table, outcome])
        .inc_by(groups.len() as u64);
    let ids: Vec<String> = groups.iter().map(|g| g.group.id.to_string()).collect();
    report.errors.push(format!("groups {}: {e}", ids.join(",")));
    tracing::warn!(table = report.table, groups = ?ids, error = %e, outcome, "groups not committed");
    if e.may_have_committed() {
        // The snapshot may be in the table: its files must stay.
        return;
    }
    delete_written(table, groups.iter().flat_map(|g| &g.files)).await;
}

/// Deletes files this compaction wrote and will not commit (best effort: leftovers are orphans).
async fn delete_written<'a>(table: &Table, files: impl Iterator<Item = &'a DataFile>) {
    for f in files {
        if let Err(e) = table.file_io().delete(f.file_path()).await {
            tracing::warn!(path = f.file_path(), error = %e, "could not delete uncommitted file");
        }
    }
}

/// The name of a loaded table.
pub fn table_name(table: &Table) -> String {
    ident_name(table.identifier())
}
