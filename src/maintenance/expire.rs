//! Snapshot expiry (Spark's `expire_snapshots`): commit the removal of old snapshots with
//! iceberg's `expire_snapshots` action, then delete the files only the removed snapshots reached.
//!
//! What iceberg-rust 0.10.1's action does: it picks the snapshots to remove (per branch:
//! `min-snapshots-to-keep` / `max-snapshot-age-ms` of the ref, else `retain-last` / `older-than`,
//! else the table's `history.expire.*`), drops branches and tags older than their
//! `max-ref-age-ms` (never `main`), keeps tagged snapshots, removes the statistics entries of
//! removed snapshots, refuses `gc.enabled=false`, and commits with the requirements "same table
//! uuid" and "`main` unchanged". It deletes no file. This module adds the rest:
//!
//! - Which files become unreachable is computed, never guessed: (files reachable from the
//!   snapshots before) minus (files reachable from every snapshot after the commit), by
//!   [`plan_deletions`], a pure function over plain data. Only manifest lists and manifests that
//!   no remaining snapshot uses, and the live files of those manifests that no remaining manifest
//!   lists as live, are deleted. Paths are compared in canonical form (`s3a://` = `s3://`,
//!   `file:/x` = `file:///x`), so one file written under two spellings is one file.
//! - The "after" side is the metadata the catalog returned for our commit, so snapshots a
//!   concurrent writer added are protected too.
//! - Statistics files of removed snapshots, and old `*.metadata.json` files when
//!   `write.metadata.delete-after-commit.enabled` is set but the writer left them behind
//!   ([`metadata_files_to_delete`] over the logs, [`stale_metadata`] over the metadata directory).
//! - Nothing is deleted when the commit failed or its outcome is unknown.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use iceberg::spec::{ManifestFile, SnapshotRef, TableMetadata};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{
    Catalog, Error as IcebergError, ErrorKind, Namespace, NamespaceIdent, TableCommit,
    TableCreation, TableIdent,
};
use serde::Serialize;

use super::files::{
    self, DeleteFailure, FencedRemover, FileIoRemover, FileKind, FileRef, ManifestReach,
    SnapshotReach, Totals, WalkError, canonical,
};
use crate::catalog::fenced::FencedCatalog;
use crate::catalog::{CatalogError, CatalogHandle, CommitError};
use crate::crashpoint::{self, CrashPoint};
use crate::fence::{Fence, FenceError};
use crate::telemetry::Metrics;

/// How many manifests are read at once.
const READ_CONCURRENCY: usize = 8;
/// The most snapshot ids a report lists.
const MAX_LISTED_IDS: usize = 1000;
/// The most missing files a report lists.
const MAX_LISTED_MISSING: usize = 20;
/// The most unlogged old metadata files read (for their table uuid) per run.
const MAX_METADATA_READS: usize = 200;

/// Errors expiring snapshots.
#[derive(Debug, thiserror::Error)]
pub enum ExpireError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(
        "table {0} has gc.enabled=false: its files may be shared with other tables, so snapshots are not expired"
    )]
    GcDisabled(String),
    #[error("retain-last must be at least 1")]
    RetainLastZero,
    #[error("planning the expiry of {table}: {message}")]
    Plan { table: String, message: String },
    #[error("{0}")]
    Walk(#[from] WalkError),
    #[error("expiring snapshots of {table}: {source}; nothing was deleted")]
    Commit {
        table: String,
        #[source]
        source: CommitError,
    },
    #[error(transparent)]
    Fenced(#[from] FenceError),
}

impl ExpireError {
    pub fn is_retryable(&self) -> bool {
        match self {
            ExpireError::Catalog(e) => e.is_retryable(),
            ExpireError::Walk(e) => e.is_retryable(),
            ExpireError::Commit { source, .. } => source.is_retryable(),
            ExpireError::Fenced(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// A manifest the reachability computation needed but was not given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("manifest {0} was not read; refusing to guess what it references")]
pub struct MissingManifest(pub String);

/// Options of one expiry run (Spark's names in the policy, API and CLI).
#[derive(Debug, Clone, Default)]
pub struct ExpireOptions {
    /// Expire snapshots older than this; `None`: `history.expire.max-snapshot-age-ms` (5 days).
    pub older_than: Option<Duration>,
    /// Keep at least this many ancestors of each branch; `None`:
    /// `history.expire.min-snapshots-to-keep` (1).
    pub retain_last: Option<u32>,
    pub max_concurrent_deletes: usize,
    /// Plan and report, commit and delete nothing.
    pub dry_run: bool,
}

/// What an expiry did (or, for a dry run, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExpireReport {
    pub table: String,
    pub dry_run: bool,
    /// The cutoff used (ms since the epoch); `None` when the table's default applied.
    pub expire_older_than_ms: Option<i64>,
    pub retain_last: Option<u32>,
    pub snapshots_before: usize,
    pub snapshots_after: usize,
    pub snapshots_expired: usize,
    pub expired_snapshot_ids: Vec<i64>,
    pub refs_removed: Vec<String>,
    pub metadata_location: Option<String>,
    /// Files the plan found unreachable, by kind (bytes where the metadata knows the size).
    pub planned: BTreeMap<FileKind, Totals>,
    /// Files actually deleted, by kind.
    pub deleted: BTreeMap<FileKind, Totals>,
    pub files_deleted: u64,
    pub bytes_deleted: u64,
    pub already_gone: u64,
    pub delete_failures: u64,
    pub delete_errors: Vec<DeleteFailure>,
    /// Why no file was deleted although the commit landed (e.g. a manifest could not be read).
    pub cleanup_error: Option<String>,
    /// Manifest lists and manifests of expired snapshots that no longer existed: what only they
    /// referenced is left to orphan removal.
    pub missing_files: usize,
    pub missing_examples: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Pure reachability
// ---------------------------------------------------------------------------------------------

/// Manifest lists and manifests that only `expired` snapshots use (pure).
pub fn unreachable_manifests(
    expired: &[SnapshotReach],
    retained: &[SnapshotReach],
) -> (Vec<String>, Vec<String>) {
    let kept_lists: HashSet<String> = retained
        .iter()
        .map(|s| canonical(&s.manifest_list))
        .collect();
    let kept_manifests: HashSet<String> = retained
        .iter()
        .flat_map(|s| s.manifests.iter().map(|m| canonical(m)))
        .collect();
    let mut seen = HashSet::new();
    let mut lists = Vec::new();
    for s in expired {
        let c = canonical(&s.manifest_list);
        if !s.manifest_list.is_empty() && !kept_lists.contains(&c) && seen.insert(c) {
            lists.push(s.manifest_list.clone());
        }
    }
    let mut manifests = Vec::new();
    for m in expired.iter().flat_map(|s| s.manifests.iter()) {
        let c = canonical(m);
        if !kept_manifests.contains(&c) && seen.insert(c) {
            manifests.push(m.clone());
        }
    }
    (lists, manifests)
}

/// The files that become unreachable when `expired` snapshots go and `retained` ones stay: their
/// manifest lists and manifests no retained snapshot uses, and the data and delete files live in
/// those manifests that no retained manifest lists as live (pure).
///
/// `manifests` must hold every manifest only the expired snapshots use and, when those have live
/// files, every manifest of the retained snapshots; a missing one is an error, never a guess.
pub fn plan_deletions(
    expired: &[SnapshotReach],
    retained: &[SnapshotReach],
    manifests: &HashMap<String, ManifestReach>,
) -> Result<Vec<FileRef>, MissingManifest> {
    let (lists, gone_manifests) = unreachable_manifests(expired, retained);
    let mut out: Vec<FileRef> = lists
        .into_iter()
        .map(|path| FileRef {
            path,
            kind: FileKind::ManifestList,
            size: None,
        })
        .collect();
    // Candidates: live files of the manifests that go, keyed by canonical path.
    let mut candidates: BTreeMap<String, FileRef> = BTreeMap::new();
    for path in &gone_manifests {
        let m = manifests
            .get(path)
            .ok_or_else(|| MissingManifest(path.clone()))?;
        out.push(FileRef {
            path: path.clone(),
            kind: FileKind::Manifest,
            size: Some(m.length),
        });
        for f in &m.live {
            candidates
                .entry(canonical(&f.path))
                .or_insert_with(|| f.clone());
        }
    }
    if !candidates.is_empty() {
        let mut seen = HashSet::new();
        for path in retained.iter().flat_map(|s| s.manifests.iter()) {
            if !seen.insert(path.as_str()) {
                continue;
            }
            let m = manifests
                .get(path)
                .ok_or_else(|| MissingManifest(path.clone()))?;
            for f in &m.live {
                candidates.remove(&canonical(&f.path));
            }
        }
    }
    out.extend(candidates.into_values());
    Ok(out)
}

/// A table's metadata files as its metadata names them: the current one and the log, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataFiles {
    pub current: Option<String>,
    pub log: Vec<String>,
}

impl MetadataFiles {
    pub fn of(table: &Table) -> Self {
        Self {
            current: table.metadata_location().map(str::to_string),
            log: table
                .metadata()
                .metadata_log()
                .iter()
                .map(|l| l.metadata_file.clone())
                .collect(),
        }
    }
}

/// Old metadata files to delete when `write.metadata.delete-after-commit.enabled` is set (pure):
/// those in the log `before` that are no longer in the log `after`, and the oldest entries of
/// `after`'s log beyond `previous_versions_max`. The current file and the newest
/// `previous_versions_max` log entries are always kept.
pub fn metadata_files_to_delete(
    before: &MetadataFiles,
    after: &MetadataFiles,
    previous_versions_max: usize,
) -> Vec<String> {
    let keep: HashSet<String> = after
        .current
        .iter()
        .chain(
            after
                .log
                .iter()
                .skip(after.log.len().saturating_sub(previous_versions_max)),
        )
        .map(|p| canonical(p))
        .collect();
    let mut seen = HashSet::new();
    before
        .log
        .iter()
        .chain(before.current.iter())
        .chain(after.log.iter())
        .filter(|p| {
            let c = canonical(p);
            !keep.contains(&c) && seen.insert(c)
        })
        .cloned()
        .collect()
}

/// Statistics and partition-statistics files `before` has and `after` no longer has (pure).
pub fn statistics_to_delete(before: &TableMetadata, after: &TableMetadata) -> Vec<FileRef> {
    let kept: HashSet<String> = after
        .statistics_iter()
        .map(|s| canonical(&s.statistics_path))
        .chain(
            after
                .partition_statistics_iter()
                .map(|s| canonical(&s.statistics_path)),
        )
        .collect();
    let mut seen = HashSet::new();
    before
        .statistics_iter()
        .map(|s| (s.statistics_path.clone(), s.file_size_in_bytes))
        .chain(
            before
                .partition_statistics_iter()
                .map(|s| (s.statistics_path.clone(), s.file_size_in_bytes)),
        )
        .filter(|(p, _)| {
            let c = canonical(p);
            !kept.contains(&c) && seen.insert(c)
        })
        .map(|(path, size)| FileRef {
            path,
            kind: FileKind::Statistics,
            size: u64::try_from(size).ok(),
        })
        .collect()
}

fn totals(files: &[FileRef]) -> BTreeMap<FileKind, Totals> {
    let mut out: BTreeMap<FileKind, Totals> = BTreeMap::new();
    for f in files {
        let t = out.entry(f.kind).or_default();
        t.files += 1;
        t.bytes += f.size.unwrap_or(0);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Planning without committing
// ---------------------------------------------------------------------------------------------

/// A catalog holding one table in memory: `update_table` applies the commit to it and keeps
/// nothing. Lets iceberg's own `expire_snapshots` action plan a dry run (and lets tests run it
/// on generated metadata) without touching the real catalog.
#[derive(Debug)]
pub struct PlanOnlyCatalog {
    table: Table,
}

impl PlanOnlyCatalog {
    /// Wraps `table`. Its metadata location is replaced by a well-formed in-memory name when it
    /// does not follow the `NNNNN-uuid.metadata.json` pattern iceberg needs to name the next one.
    pub fn new(table: Table) -> Self {
        let ok = table
            .metadata_location()
            .is_some_and(|l| iceberg::MetadataLocation::from_str(l).is_ok());
        let table = if ok {
            table
        } else {
            let loc = format!(
                "{}/metadata/00000-{}.metadata.json",
                table.metadata().location().trim_end_matches('/'),
                uuid::Uuid::new_v4()
            );
            // Only planning uses this copy, so a fresh handle on the current runtime will do.
            match Table::builder()
                .metadata(table.metadata_ref())
                .metadata_location(loc)
                .identifier(table.identifier().clone())
                .file_io(table.file_io().clone())
                .runtime(iceberg::Runtime::current())
                .build()
            {
                Ok(t) => t,
                Err(_) => table,
            }
        };
        Self { table }
    }
}

fn unsupported<T>() -> iceberg::Result<T> {
    Err(IcebergError::new(
        ErrorKind::FeatureUnsupported,
        "plan-only catalog holds one table",
    ))
}

#[async_trait::async_trait]
impl Catalog for PlanOnlyCatalog {
    async fn list_namespaces(
        &self,
        _parent: Option<&NamespaceIdent>,
    ) -> iceberg::Result<Vec<NamespaceIdent>> {
        Ok(vec![self.table.identifier().namespace().clone()])
    }
    async fn create_namespace(
        &self,
        _namespace: &NamespaceIdent,
        _properties: HashMap<String, String>,
    ) -> iceberg::Result<Namespace> {
        unsupported()
    }
    async fn get_namespace(&self, _namespace: &NamespaceIdent) -> iceberg::Result<Namespace> {
        unsupported()
    }
    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> iceberg::Result<bool> {
        Ok(namespace == self.table.identifier().namespace())
    }
    async fn update_namespace(
        &self,
        _namespace: &NamespaceIdent,
        _properties: HashMap<String, String>,
    ) -> iceberg::Result<()> {
        unsupported()
    }
    async fn drop_namespace(&self, _namespace: &NamespaceIdent) -> iceberg::Result<()> {
        unsupported()
    }
    async fn list_tables(&self, _namespace: &NamespaceIdent) -> iceberg::Result<Vec<TableIdent>> {
        Ok(vec![self.table.identifier().clone()])
    }
    async fn create_table(
        &self,
        _namespace: &NamespaceIdent,
        _creation: TableCreation,
    ) -> iceberg::Result<Table> {
        unsupported()
    }
    async fn load_table(&self, table: &TableIdent) -> iceberg::Result<Table> {
        if table == self.table.identifier() {
            Ok(self.table.clone())
        } else {
            Err(IcebergError::new(
                ErrorKind::TableNotFound,
                format!("no table {table}"),
            ))
        }
    }
    async fn drop_table(&self, _table: &TableIdent) -> iceberg::Result<()> {
        unsupported()
    }
    async fn purge_table(&self, _table: &TableIdent) -> iceberg::Result<()> {
        unsupported()
    }
    async fn table_exists(&self, table: &TableIdent) -> iceberg::Result<bool> {
        Ok(table == self.table.identifier())
    }
    async fn rename_table(&self, _src: &TableIdent, _dest: &TableIdent) -> iceberg::Result<()> {
        unsupported()
    }
    async fn register_table(
        &self,
        _table: &TableIdent,
        _metadata_location: String,
    ) -> iceberg::Result<Table> {
        unsupported()
    }
    async fn update_table(&self, commit: TableCommit) -> iceberg::Result<Table> {
        commit.apply(self.table.clone())
    }
}

/// The expire transaction for `table` with `opts` (`cutoff_ms` already computed).
fn transaction(
    table: &Table,
    cutoff_ms: Option<i64>,
    retain_last: Option<u32>,
) -> iceberg::Result<Transaction> {
    let tx = Transaction::new(table);
    let mut action = tx.expire_snapshots();
    if let Some(ms) = cutoff_ms {
        action = action.expire_older_than_ms(ms);
    }
    if let Some(n) = retain_last {
        action = action.retain_last(n as usize);
    }
    action.apply(tx)
}

/// Runs iceberg's expire action against an in-memory copy of `table` and returns the metadata
/// it would commit.
pub async fn plan_expiry(
    table: &Table,
    cutoff_ms: Option<i64>,
    retain_last: Option<u32>,
) -> iceberg::Result<Table> {
    let catalog = PlanOnlyCatalog::new(table.clone());
    let tx = transaction(&catalog.table, cutoff_ms, retain_last)?;
    tx.commit(&catalog).await
}

/// Names of the branches and tags in `metadata` (iceberg 0.10.1 has no public accessor).
pub fn ref_names(metadata: &TableMetadata) -> Vec<String> {
    let mut names: Vec<String> = serde_json::to_value(metadata)
        .ok()
        .and_then(|v| {
            v.get("refs")
                .and_then(|r| r.as_object())
                .map(|o| o.keys().cloned().collect())
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn snapshot_ids(t: &Table) -> HashSet<i64> {
    t.metadata().snapshots().map(|s| s.snapshot_id()).collect()
}

/// How a commit error is to be read: a definite refusal, or an unknown outcome.
pub fn classify_commit_error(e: &IcebergError) -> CommitError {
    let message = e.to_string().lines().next().unwrap_or_default().to_string();
    match e.kind() {
        // A SQL catalog whose database stayed locked by another writer through every retry: the
        // compare-and-swap did not apply (see `catalog::sql::BusyRetryCatalog`), so this is a
        // definite failure, not an unknown outcome.
        _ if crate::catalog::sql::is_busy_error(e) => CommitError::Failed(format!(
            "catalog database locked by another writer, not applied: {message}"
        )),
        ErrorKind::CatalogCommitConflicts => CommitError::Conflict(message),
        ErrorKind::TableNotFound => CommitError::NotFound(message),
        // Requirement checks and validation answer DataInvalid / PreconditionFailed: the catalog
        // looked at the change and said no.
        ErrorKind::DataInvalid | ErrorKind::PreconditionFailed | ErrorKind::FeatureUnsupported => {
            CommitError::Failed(message)
        }
        // 5xx, timeouts, connection resets: the change may or may not have landed.
        _ => CommitError::StateUnknown(message),
    }
}

fn gc_enabled(table: &Table) -> bool {
    table
        .metadata()
        .properties()
        .get("gc.enabled")
        .is_none_or(|v| !v.eq_ignore_ascii_case("false"))
}

// ---------------------------------------------------------------------------------------------
// The job
// ---------------------------------------------------------------------------------------------

/// Expires snapshots of `name` and deletes the files that became unreachable; `fence` proves
/// the job's lease before the commit and before each deletion.
pub async fn expire_table(
    catalog: &CatalogHandle,
    name: &str,
    opts: &ExpireOptions,
    metrics: &Metrics,
    fence: &Fence,
) -> Result<ExpireReport, ExpireError> {
    if opts.retain_last == Some(0) {
        return Err(ExpireError::RetainLastZero);
    }
    let run = ExpireRun {
        catalog,
        name,
        opts,
        metrics,
        fence,
    };
    let before = catalog.load(name).await?;
    if !gc_enabled(&before) {
        return Err(ExpireError::GcDisabled(name.to_string()));
    }
    let cutoff_ms = cutoff_ms(opts.older_than);
    let planned = plan_expiry(&before, cutoff_ms, opts.retain_last)
        .await
        .map_err(|e| run.plan_error(e))?;
    let before_ids = snapshot_ids(&before);
    let planned_ids = snapshot_ids(&planned);
    let mut report = ExpireReport {
        table: name.to_string(),
        dry_run: opts.dry_run,
        expire_older_than_ms: cutoff_ms,
        retain_last: opts.retain_last,
        snapshots_before: before_ids.len(),
        ..Default::default()
    };
    let before_refs = ref_names(before.metadata());

    // Read what the snapshots about to go reference *before* committing: a table whose manifests
    // cannot be read keeps its history rather than losing it without the cleanup.
    let to_expire: Vec<SnapshotRef> = before
        .metadata()
        .snapshots()
        .filter(|s| !planned_ids.contains(&s.snapshot_id()))
        .cloned()
        .collect();
    let (expired_reach, mut manifests, missing) = read_expiring(&before, &to_expire).await?;
    report.missing_files = missing.len();
    report.missing_examples = missing.into_iter().take(MAX_LISTED_MISSING).collect();

    let nothing_to_commit = to_expire.is_empty() && ref_names(planned.metadata()) == before_refs;
    let after = if opts.dry_run {
        planned
    } else if nothing_to_commit {
        // No commit, so the real metadata log stays as it is: clean up against it, not against
        // the planned copy (whose log already dropped its oldest entry).
        before.clone()
    } else {
        run.commit(&before, cutoff_ms).await?
    };
    let expired_set = run.record_expired(&mut report, &before_ids, before_refs, &after);

    // A concurrent expiry may have removed snapshots we did not read: their files stay (orphan
    // removal finds them); only what we read is planned.
    let expired_reach: Vec<SnapshotReach> = expired_reach
        .into_iter()
        .filter(|s| expired_set.contains(&s.snapshot_id))
        .collect();

    let plan = match plan_cleanup(
        &before,
        &after,
        &expired_reach,
        &mut manifests,
        &super::orphans::storage_properties(&after, &catalog.config.properties),
    )
    .await
    {
        Ok(plan) => plan,
        Err(e) => {
            tracing::warn!(table = name, error = %e, "cleanup after expiry skipped");
            report.cleanup_error = Some(e.to_string());
            return Ok(report);
        }
    };
    report.planned = totals(&plan);
    if opts.dry_run || plan.is_empty() {
        return Ok(report);
    }
    run.delete_unreachable(&mut report, &after, plan).await;
    Ok(report)
}

/// The cutoff for `older_than` (ms since the epoch); `None` leaves the table's default.
fn cutoff_ms(older_than: Option<Duration>) -> Option<i64> {
    older_than.map(|d| {
        chrono::Utc::now()
            .timestamp_millis()
            .saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    })
}

/// The inputs of one [`expire_table`] run.
struct ExpireRun<'a> {
    catalog: &'a CatalogHandle,
    name: &'a str,
    opts: &'a ExpireOptions,
    metrics: &'a Metrics,
    fence: &'a Fence,
}

impl ExpireRun<'_> {
    /// An error of iceberg's expire action, reduced to its first line.
    fn plan_error(&self, e: IcebergError) -> ExpireError {
        ExpireError::Plan {
            table: self.name.to_string(),
            message: e.to_string().lines().next().unwrap_or_default().to_string(),
        }
    }

    /// Commits the expiry on `before`; an error when the commit did not land or its outcome is
    /// unknown (then nothing may be deleted).
    async fn commit(&self, before: &Table, cutoff_ms: Option<i64>) -> Result<Table, ExpireError> {
        let tx = transaction(before, cutoff_ms, self.opts.retain_last)
            .map_err(|e| self.plan_error(e))?;
        // iceberg-rust retries a conflicting commit by itself: the fence is proven before each
        // try, so a job that lost its lease sends nothing more.
        let fenced = FencedCatalog::new(self.catalog.catalog.as_ref(), self.fence);
        match tx.commit(&fenced).await {
            Ok(t) => {
                crashpoint::reached(CrashPoint::ExpireAfterCommit);
                // iceberg-rust's REST `update_table` builds the returned table's FileIO without
                // the LoadTable `config` (vended credentials): keep the one that read the table.
                Ok(with_file_io_of(before, t))
            }
            Err(_) if fenced.refused().is_some() => {
                Err(fenced.refused().expect("just checked").into())
            }
            Err(e) => {
                let source = classify_commit_error(&e);
                tracing::warn!(table = self.name, error = %source, "expire commit did not land; deleting nothing");
                Err(ExpireError::Commit {
                    table: self.name.to_string(),
                    source,
                })
            }
        }
    }

    /// Records which snapshots (of `before_ids`) and refs (of `before_refs`) `after` no longer
    /// has, in `report` and, unless a dry run, in the metrics; returns the expired snapshot ids.
    fn record_expired(
        &self,
        report: &mut ExpireReport,
        before_ids: &HashSet<i64>,
        before_refs: Vec<String>,
        after: &Table,
    ) -> HashSet<i64> {
        let after_ids = snapshot_ids(after);
        let mut expired_ids: Vec<i64> = before_ids.difference(&after_ids).copied().collect();
        expired_ids.sort_unstable();
        report.snapshots_after = after_ids.len();
        report.snapshots_expired = expired_ids.len();
        report.expired_snapshot_ids = expired_ids.iter().take(MAX_LISTED_IDS).copied().collect();
        let after_refs: HashSet<String> = ref_names(after.metadata()).into_iter().collect();
        report.refs_removed = before_refs
            .into_iter()
            .filter(|r| !after_refs.contains(r))
            .collect();
        if !self.opts.dry_run {
            report.metadata_location = after.metadata_location().map(str::to_string);
            self.metrics
                .snapshots_expired_total
                .with_label_values(&[self.name])
                .inc_by(expired_ids.len() as u64);
        }
        tracing::info!(
            table = self.name,
            expired = expired_ids.len(),
            remaining = after_ids.len(),
            dry_run = self.opts.dry_run,
            "snapshots expired"
        );
        expired_ids.into_iter().collect()
    }

    /// Deletes the files of `plan` that no snapshot committed since `after` reaches, and records
    /// the outcome in `report` (a failure to re-read the table as its `cleanup_error`).
    async fn delete_unreachable(
        &self,
        report: &mut ExpireReport,
        after: &Table,
        plan: Vec<FileRef>,
    ) {
        // Snapshots committed since ours (built on what we kept) must keep what they reach:
        // re-read the table right before deleting and drop anything a new snapshot reaches from
        // the plan.
        let plan = match self.catalog.load(self.name).await {
            Ok(latest) => match protect_new_snapshots(&latest, after, plan).await {
                Ok(plan) => plan,
                Err(e) => {
                    report.cleanup_error = Some(e.to_string());
                    return;
                }
            },
            Err(e) => {
                report.cleanup_error = Some(format!("re-reading the table before deleting: {e}"));
                return;
            }
        };
        let remover =
            FencedRemover::wrap(Arc::new(FileIoRemover(after.file_io().clone())), self.fence);
        let deleted = files::delete_and_publish(
            remover,
            plan,
            self.opts.max_concurrent_deletes,
            self.metrics,
        )
        .await;
        report.files_deleted = deleted.files();
        report.bytes_deleted = deleted.bytes();
        report.deleted = deleted.deleted;
        report.already_gone = deleted.already_gone;
        report.delete_failures = deleted.failed;
        report.delete_errors = deleted.failures;
    }
}

/// `committed` with `before`'s FileIO (as loaded, with the table's storage properties).
fn with_file_io_of(before: &Table, committed: Table) -> Table {
    let Some(location) = committed.metadata_location().map(str::to_string) else {
        return committed;
    };
    crate::catalog::table_after_commit(before, committed.metadata_ref().as_ref().clone(), location)
        .unwrap_or(committed)
}

/// Removes from `plan` every file that a snapshot of `latest` which `after` does not have
/// reaches (its manifest list, manifests and their live files).
async fn protect_new_snapshots(
    latest: &Table,
    after: &Table,
    mut plan: Vec<FileRef>,
) -> Result<Vec<FileRef>, WalkError> {
    let known = snapshot_ids(after);
    let new: Vec<SnapshotRef> = latest
        .metadata()
        .snapshots()
        .filter(|s| !known.contains(&s.snapshot_id()))
        .cloned()
        .collect();
    // Whatever the latest metadata names directly is kept whatever else happened.
    let md = latest.metadata();
    let named: HashSet<String> = latest
        .metadata_location()
        .into_iter()
        .map(str::to_string)
        .chain(md.metadata_log().iter().map(|l| l.metadata_file.clone()))
        .chain(md.statistics_iter().map(|s| s.statistics_path.clone()))
        .chain(
            md.partition_statistics_iter()
                .map(|s| s.statistics_path.clone()),
        )
        .chain(md.snapshots().map(|s| s.manifest_list().to_string()))
        .map(|p| canonical(&p))
        .collect();
    plan.retain(|f| !named.contains(&canonical(&f.path)));
    if new.is_empty() {
        return Ok(plan);
    }
    let (reach, files) = read_lists(latest, &new).await?;
    let manifests = files::load_manifests(
        latest.file_io(),
        distinct(files, &HashMap::new()),
        READ_CONCURRENCY,
    )
    .await?;
    let mut reached: HashSet<String> = HashSet::new();
    for r in &reach {
        reached.insert(canonical(&r.manifest_list));
        reached.extend(r.manifests.iter().map(|m| canonical(m)));
    }
    for m in manifests.values() {
        reached.extend(m.live.iter().map(|f| canonical(&f.path)));
    }
    let before = plan.len();
    plan.retain(|f| !reached.contains(&canonical(&f.path)));
    tracing::info!(
        table = %latest.identifier(),
        new_snapshots = new.len(),
        protected = before - plan.len(),
        "snapshots committed during the expiry keep what they reach"
    );
    Ok(plan)
}

/// Errors of the cleanup phase (after the commit).
#[derive(Debug, thiserror::Error)]
enum CleanupError {
    #[error("{0}")]
    Walk(#[from] WalkError),
    #[error("{0}")]
    Missing(#[from] MissingManifest),
}

/// Everything to delete after `before` became `after`.
async fn plan_cleanup(
    before: &Table,
    after: &Table,
    expired: &[SnapshotReach],
    manifests: &mut HashMap<String, ManifestReach>,
    catalog_props: &BTreeMap<String, String>,
) -> Result<Vec<FileRef>, CleanupError> {
    let mut plan = Vec::new();
    if !expired.is_empty() {
        let retained_snapshots: Vec<SnapshotRef> = after.metadata().snapshots().cloned().collect();
        let (retained, retained_files) = read_lists(after, &retained_snapshots).await?;
        let (_, gone) = unreachable_manifests(expired, &retained);
        let has_candidates = gone
            .iter()
            .any(|m| manifests.get(m).is_some_and(|r| !r.live.is_empty()));
        if has_candidates {
            let missing = distinct(retained_files, manifests);
            let loaded = files::load_manifests(after.file_io(), missing, READ_CONCURRENCY).await?;
            manifests.extend(loaded);
        }
        plan = plan_deletions(expired, &retained, manifests)?;
    }
    plan.extend(statistics_to_delete(before.metadata(), after.metadata()));
    plan.extend(old_metadata_files(before, after, catalog_props).await);
    Ok(plan)
}

/// Reads what the snapshots about to be expired reference: their manifest lists and manifests.
/// A manifest list or manifest that no longer exists is returned in the third element, and every
/// snapshot using it is left out of the cleanup (what only those snapshots reference stays for
/// orphan removal: nothing is deleted on a guess); any other read error fails the run.
async fn read_expiring(
    table: &Table,
    snapshots: &[SnapshotRef],
) -> Result<
    (
        Vec<SnapshotReach>,
        HashMap<String, ManifestReach>,
        Vec<String>,
    ),
    WalkError,
> {
    use futures::{StreamExt, TryStreamExt};
    let io = table.file_io();
    let gone = |path: String| async move { matches!(io.exists(&path).await, Ok(false)) };
    let lists: Vec<Result<(SnapshotReach, Vec<ManifestFile>), String>> =
        futures::stream::iter(snapshots.to_vec())
            .map(|s| async move {
                match files::snapshot_reach(table, &s).await {
                    Ok(r) => Ok(Ok(r)),
                    Err(_) if gone(s.manifest_list().to_string()).await => {
                        Ok(Err(s.manifest_list().to_string()))
                    }
                    Err(e2) => Err(e2),
                }
            })
            .buffer_unordered(READ_CONCURRENCY)
            .try_collect()
            .await?;
    let mut missing = Vec::new();
    let mut reach = Vec::new();
    let mut manifest_files = Vec::new();
    for l in lists {
        match l {
            Ok((r, m)) => {
                reach.push(r);
                manifest_files.extend(m);
            }
            Err(path) => missing.push(path),
        }
    }
    let loaded: Vec<Result<HashMap<String, ManifestReach>, String>> =
        futures::stream::iter(distinct(manifest_files, &HashMap::new()))
            .map(|mf| async move {
                let path = mf.manifest_path.clone();
                match files::load_manifests(io, vec![mf], 1).await {
                    Ok(m) => Ok(Ok(m)),
                    Err(_) if gone(path.clone()).await => Ok(Err(path)),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(READ_CONCURRENCY)
            .try_collect()
            .await?;
    let mut manifests = HashMap::new();
    let mut missing_manifests = HashSet::new();
    for m in loaded {
        match m {
            Ok(m) => manifests.extend(m),
            Err(path) => {
                missing_manifests.insert(path.clone());
                missing.push(path);
            }
        }
    }
    reach.retain(|r| !r.manifests.iter().any(|m| missing_manifests.contains(m)));
    missing.sort();
    if !missing.is_empty() {
        tracing::warn!(
            table = %table.identifier(),
            missing = missing.len(),
            example = missing[0],
            "files of expiring snapshots are already gone; what only they referenced is left to orphan removal"
        );
    }
    Ok((reach, manifests, missing))
}

/// Manifest lists of `snapshots` (of `table`), read `READ_CONCURRENCY` at a time.
async fn read_lists(
    table: &Table,
    snapshots: &[SnapshotRef],
) -> Result<(Vec<SnapshotReach>, Vec<ManifestFile>), WalkError> {
    use futures::{StreamExt, TryStreamExt};
    let read: Vec<(SnapshotReach, Vec<ManifestFile>)> = futures::stream::iter(snapshots.to_vec())
        .map(|s| async move { files::snapshot_reach(table, &s).await })
        .buffer_unordered(READ_CONCURRENCY)
        .try_collect()
        .await?;
    let mut reach = Vec::with_capacity(read.len());
    let mut all = Vec::new();
    for (r, m) in read {
        reach.push(r);
        all.extend(m);
    }
    Ok((reach, all))
}

/// `files` without duplicates and without those already in `loaded`.
fn distinct(
    files: Vec<ManifestFile>,
    loaded: &HashMap<String, ManifestReach>,
) -> Vec<ManifestFile> {
    let mut seen = HashSet::new();
    files
        .into_iter()
        .filter(|m| !loaded.contains_key(&m.manifest_path) && seen.insert(m.manifest_path.clone()))
        .collect()
}

/// Old metadata files to delete, when the table asks for it
/// (`write.metadata.delete-after-commit.enabled`) and its writers did not do it: the log entries
/// our commit dropped, entries beyond `write.metadata.previous-versions-max`, and
/// `*.metadata.json` files in the metadata directory that [`stale_metadata`] proves are old
/// versions of this table.
async fn old_metadata_files(
    before: &Table,
    after: &Table,
    catalog_props: &BTreeMap<String, String>,
) -> Vec<FileRef> {
    let props = after.metadata().properties();
    let enabled = props
        .get("write.metadata.delete-after-commit.enabled")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !enabled {
        return Vec::new();
    }
    let max = props
        .get("write.metadata.previous-versions-max")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(100)
        .max(1);
    let b = MetadataFiles::of(before);
    let a = MetadataFiles::of(after);
    let mut out = metadata_files_to_delete(&b, &a, max);
    let keep: HashSet<String> = a
        .current
        .iter()
        .chain(a.log.iter().skip(a.log.len().saturating_sub(max)))
        .map(|p| canonical(p))
        .collect();
    let logged: HashSet<String> = b
        .log
        .iter()
        .chain(b.current.iter())
        .chain(a.log.iter())
        .map(|p| canonical(p))
        .collect();
    let dir = props
        .get("write.metadata.path")
        .map(|p| p.trim_end_matches('/').to_string())
        .unwrap_or_else(|| {
            format!(
                "{}/metadata",
                after.metadata().location().trim_end_matches('/')
            )
        });
    let listed = match list_metadata(after, &dir, &keep, &logged, catalog_props).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(dir, error = %e, "metadata directory not listed; only the log is cleaned");
            Vec::new()
        }
    };
    let uuid = after.metadata().uuid().to_string();
    let mut seen: HashSet<String> = out.iter().map(|p| canonical(p)).collect();
    for p in stale_metadata(&listed, &keep, &logged, &uuid) {
        if seen.insert(canonical(&p)) {
            out.push(p);
        }
    }
    out.into_iter()
        .map(|path| FileRef {
            path,
            kind: FileKind::Metadata,
            size: None,
        })
        .collect()
}

/// A `*.metadata.json` file found in a table's metadata directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedMetadata {
    pub path: String,
    /// The version its name starts with (`00042-<uuid>.metadata.json`, `v42.metadata.json`).
    pub version: Option<u64>,
    /// Its `table-uuid`, when it was read.
    pub table_uuid: Option<String>,
}

/// The version number in a metadata file name, if it has one.
pub fn metadata_version(path: &str) -> Option<u64> {
    let name = path.rsplit('/').next()?;
    let stem = name.strip_suffix(".metadata.json")?;
    let digits = match stem.split_once('-') {
        Some((v, _)) => v,
        None => stem.strip_prefix('v')?,
    };
    digits.parse().ok()
}

/// Listed metadata files that are old versions of this table (pure): not kept, and either named
/// in a metadata log we saw (`logged`), or written for this table (`table_uuid`) under a version
/// below the oldest kept one. Such a version was committed and has since left the log, or was a
/// commit attempt that lost its race: writers only commit on top of the current version, and an
/// in-flight commit's file always carries a version above it.
pub fn stale_metadata(
    listed: &[ListedMetadata],
    keep: &HashSet<String>,
    logged: &HashSet<String>,
    table_uuid: &str,
) -> Vec<String> {
    let oldest_kept = keep.iter().filter_map(|p| metadata_version(p)).min();
    listed
        .iter()
        .filter(|f| {
            let c = canonical(&f.path);
            if keep.contains(&c) {
                return false;
            }
            logged.contains(&c)
                || (f.table_uuid.as_deref() == Some(table_uuid)
                    && matches!((f.version, oldest_kept), (Some(v), Some(k)) if v < k))
        })
        .map(|f| f.path.clone())
        .collect()
}

/// Lists `*.metadata.json` directly in `dir` and reads the `table-uuid` of those that only the
/// version rule of [`stale_metadata`] could delete (oldest first, at most
/// `MAX_METADATA_READS` per run).
async fn list_metadata(
    table: &Table,
    dir: &str,
    keep: &HashSet<String>,
    logged: &HashSet<String>,
    catalog_props: &BTreeMap<String, String>,
) -> Result<Vec<ListedMetadata>, super::orphans::OrphansError> {
    use super::orphans::{ObjectUri, OrphansError, Storage};
    use futures::StreamExt;
    let root =
        ObjectUri::parse(dir).ok_or_else(|| OrphansError::UnsupportedLocation(dir.into()))?;
    let storage = Storage::for_location(&root, catalog_props)?;
    let prefix = format!("{}/", root.key);
    let mut listed = Vec::new();
    let mut stream = storage.list(&root);
    while let Some(item) = stream.next().await {
        let item = item?;
        let Some(name) = item.uri.key.strip_prefix(&prefix) else {
            continue;
        };
        if name.contains('/') || name.starts_with('.') || !name.ends_with(".metadata.json") {
            continue;
        }
        let path = item.uri.uri();
        listed.push(ListedMetadata {
            version: metadata_version(&path),
            path,
            table_uuid: None,
        });
    }
    let oldest_kept = keep.iter().filter_map(|p| metadata_version(p)).min();
    let mut to_read: Vec<&mut ListedMetadata> = listed
        .iter_mut()
        .filter(|f| {
            let c = canonical(&f.path);
            !keep.contains(&c)
                && !logged.contains(&c)
                && matches!((f.version, oldest_kept), (Some(v), Some(k)) if v < k)
        })
        .collect();
    to_read.sort_by_key(|f| f.version);
    for f in to_read.into_iter().take(MAX_METADATA_READS) {
        let Ok(input) = table.file_io().new_input(&f.path) else {
            continue;
        };
        let Ok(bytes) = input.read().await else {
            continue;
        };
        f.table_uuid = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("table-uuid")?.as_str().map(str::to_string));
    }
    Ok(listed)
}

#[cfg(test)]
mod tests;
