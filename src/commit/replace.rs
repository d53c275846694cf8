//! Compaction's commit: replace data files with rewritten ones in one `replace` snapshot (Java
//! `BaseRewriteFiles` with `validateFromSnapshot(start)` and `use-starting-sequence-number`).
//!
//! On each attempt, on the table as it is now:
//! 1. `main`'s history since the starting snapshot is walked (the start must be an ancestor);
//! 2. every path to delete must still be live (else "missing required files to delete");
//! 3. no delete file added after the start may apply to a replaced file (position deletes always
//!    conflict; equality deletes do not when the new files keep the starting snapshot's data
//!    sequence number, the default, because they stay subject to them — Java's rule for this
//!    mode; with `use_starting_sequence_number` off they do);
//! 4. manifests: the new files in a new manifest under the spec they were written in (ADDED, data
//!    sequence number = starting snapshot's, or the new snapshot's), each data manifest holding a replaced file rewritten with that entry DELETED and
//!    the rest EXISTING, every other manifest (concurrent appends, delete manifests) carried as is,
//!    manifests left without live files dropped (Java's `shouldKeep`);
//! 5. with `remove_dangling_deletes` (Spark's `remove-dangling-deletes`), delete files that can no
//!    longer apply to any data file of the snapshot being committed are marked DELETED in the same
//!    snapshot. Dangling is decided per attempt on exactly the manifests being committed, after
//!    the replacement: per (spec, partition) the smallest data sequence number of a live data
//!    file; a position delete below it, an equality delete at or below it, or any delete in a
//!    partition without live data, applies to nothing (Java's rule in
//!    `RemoveDanglingDeletesSparkAction`). A delete file of an unpartitioned spec is compared with
//!    every live data file, since it may apply across partitions. A concurrent writer that adds
//!    older-sequence data (another compaction) changes the manifests, so the next attempt sees it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use iceberg::spec::{
    DataContentType, DataFile, Manifest, ManifestContentType, ManifestFile, Operation,
    PartitionSpecRef, PrimitiveLiteral, SnapshotRef, Struct, TableMetadata,
};
use iceberg::table::Table;
use iceberg::{Catalog, TableIdent};

use super::producer::{BuiltSnapshot, SnapshotChange, SnapshotProducer, commit_change};
use super::retry::RetryPolicy;
use super::summary::{SummaryDelta, build_summary};
use super::validate::{self, AddedDelete, ConflictIndex, ReplacedFile};
use super::{CommitOutcome, ReplaceError};
use crate::catalog::CommitBackend;
use crate::fence::Fence;

/// Manifests read at the same time while scanning a snapshot.
const MANIFEST_READ_CONCURRENCY: usize = 8;

/// Replace data files with rewritten ones (compaction's output for one or more file groups).
#[derive(Debug, Clone)]
pub struct ReplaceDataFiles {
    /// The snapshot the rewrite read from: validation covers everything committed after it, and
    /// the new files get its data sequence number.
    pub starting_snapshot_id: i64,
    /// Data files replaced, with their paths exactly as the manifests spell them.
    pub delete_paths: Vec<String>,
    /// New data files (content `data`, written under [`Self::output_spec_id`]).
    pub add: Vec<DataFile>,
    /// Extra snapshot summary entries, e.g. `icemaint.job-id`.
    pub summary_properties: HashMap<String, String>,
    /// Also remove delete files that apply to no live data file after the replacement.
    pub remove_dangling_deletes: bool,
    /// Spark's `use-starting-sequence-number` (default true): the new files get the starting
    /// snapshot's data sequence number, so equality deletes committed during the rewrite still
    /// apply to them. With false they get the new snapshot's, and such a delete is a conflict
    /// (it would no longer apply to the rows it was meant for).
    pub use_starting_sequence_number: bool,
    /// The partition spec the new files were written in (Spark's `output-spec-id`); `None`: the
    /// table's default spec. Their manifest is written under it, so readers prune them with its
    /// transforms. (iceberg-rust's `DataFile` does not expose the spec it was written for.)
    pub output_spec_id: Option<i32>,
}

impl Default for ReplaceDataFiles {
    fn default() -> Self {
        Self {
            starting_snapshot_id: 0,
            delete_paths: Vec::new(),
            add: Vec::new(),
            summary_properties: HashMap::new(),
            remove_dangling_deletes: false,
            use_starting_sequence_number: true,
            output_spec_id: None,
        }
    }
}

/// Commits `change` as one `replace` snapshot on `main`; see the module documentation for the
/// rules and [`commit_change`] for retries, fencing and failure handling.
pub async fn commit_replace(
    catalog: &dyn Catalog,
    backend: &dyn CommitBackend,
    ident: &TableIdent,
    change: &ReplaceDataFiles,
    retry: &RetryPolicy,
    fence: &Fence,
) -> Result<CommitOutcome, ReplaceError> {
    let op = ReplaceOp::new(change)?;
    commit_change(catalog, backend, ident, &op, retry, fence).await
}

/// The change, checked and indexed once for all attempts.
#[derive(Debug)]
struct ReplaceOp<'a> {
    change: &'a ReplaceDataFiles,
    /// `delete_paths` without duplicates, in request order.
    delete_paths: Vec<String>,
    delete_set: HashSet<String>,
    added_paths: HashSet<String>,
}

impl<'a> ReplaceOp<'a> {
    fn new(change: &'a ReplaceDataFiles) -> Result<Self, ReplaceError> {
        let (delete_paths, added_paths) = check_change(change)?;
        Ok(Self {
            change,
            delete_set: delete_paths.iter().cloned().collect(),
            delete_paths,
            added_paths,
        })
    }
}

/// Input checks that need no table (Java `BaseRewriteFiles.verifyInputAndOutputFiles` plus
/// icemaint's own): returns the de-duplicated delete paths and the set of added paths.
pub(crate) fn check_change(
    change: &ReplaceDataFiles,
) -> Result<(Vec<String>, HashSet<String>), ReplaceError> {
    if change.delete_paths.is_empty() {
        return Err(if change.add.is_empty() {
            ReplaceError::EmptyChange
        } else {
            ReplaceError::InvalidChange(
                "data files to add must be empty because there's no data file to be rewritten"
                    .to_string(),
            )
        });
    }
    let mut seen = HashSet::new();
    let delete_paths: Vec<String> = change
        .delete_paths
        .iter()
        .filter(|p| seen.insert(p.as_str()))
        .cloned()
        .collect();
    let mut added_paths = HashSet::new();
    for f in &change.add {
        if f.content_type() != DataContentType::Data {
            return Err(ReplaceError::InvalidChange(format!(
                "file to add {} has content {:?}; only data files can be added",
                f.file_path(),
                f.content_type()
            )));
        }
        if !added_paths.insert(f.file_path().to_string()) {
            return Err(ReplaceError::InvalidChange(format!(
                "file to add {} is listed twice",
                f.file_path()
            )));
        }
        if seen.contains(f.file_path()) {
            return Err(ReplaceError::InvalidChange(format!(
                "file {} is both replaced and added",
                f.file_path()
            )));
        }
    }
    Ok((delete_paths, added_paths))
}

/// What to do with one of the parent's manifests.
#[derive(Debug)]
enum Plan {
    Carry(ManifestFile),
    /// With the manifest as the validation decoded it, when it fit [`KEPT_ENTRY_BUDGET`], so
    /// the rewrite does not fetch and decode it a second time.
    Rewrite(ManifestFile, Option<Manifest>),
}

/// Entries of decoded manifests the validation keeps for their rewrite, at most (a decoded entry
/// with column metrics weighs ~1-2 KiB). Compactions rewrite a few manifests of a few thousand
/// entries; a larger rewrite reads the rest again rather than holding them all.
const KEPT_ENTRY_BUDGET: usize = 32_768;

/// The live data files the new snapshot will have: the smallest data sequence number per
/// (partition spec, partition) and over all of them, and the paths of those that existed before
/// (position deletes name the files they apply to; new files have no deletes yet).
#[derive(Debug, Default)]
struct LiveSequences {
    by_partition: HashMap<(i32, Struct), i64>,
    overall: Option<i64>,
    paths: HashSet<String>,
}

impl LiveSequences {
    fn add(&mut self, spec_id: i32, partition: &Struct, seq: i64) {
        self.by_partition
            .entry((spec_id, partition.clone()))
            .and_modify(|s| *s = (*s).min(seq))
            .or_insert(seq);
        self.overall = Some(self.overall.map_or(seq, |s| s.min(seq)));
    }

    fn add_existing(&mut self, spec_id: i32, partition: &Struct, seq: i64, path: &str) {
        self.add(spec_id, partition, seq);
        self.paths.insert(path.to_string());
    }

    /// Whether a delete file can apply to none of the live data files: Java's sequence number
    /// rule, and for a position delete file that names the one data file it applies to
    /// (`referenced`), that file being gone (Java does the same for deletion vectors).
    fn is_dangling(
        &self,
        spec_id: i32,
        unpartitioned: bool,
        partition: &Struct,
        content: DataContentType,
        delete_seq: i64,
        referenced: Option<&str>,
    ) -> bool {
        if content == DataContentType::PositionDeletes
            && referenced.is_some_and(|p| !self.paths.contains(p))
        {
            return true;
        }
        let min = if unpartitioned {
            self.overall
        } else {
            self.by_partition
                .get(&(spec_id, partition.clone()))
                .copied()
        };
        match (min, content) {
            (None, _) => true,
            // Position deletes apply to data files with data sequence number <= theirs.
            (Some(min), DataContentType::PositionDeletes) => delete_seq < min,
            // Equality deletes apply to data files with data sequence number < theirs.
            (Some(min), DataContentType::EqualityDeletes) => delete_seq <= min,
            (Some(_), DataContentType::Data) => false,
        }
    }
}

#[async_trait::async_trait]
impl SnapshotChange for ReplaceOp<'_> {
    fn describe(&self) -> String {
        format!(
            "replace {} data files with {} (starting snapshot {})",
            self.delete_paths.len(),
            self.change.add.len(),
            self.change.starting_snapshot_id
        )
    }

    async fn build(
        &self,
        producer: &mut SnapshotProducer<'_>,
    ) -> Result<BuiltSnapshot, ReplaceError> {
        let table = producer.table();
        let md = table.metadata();
        let start = self.start_point(md)?;
        self.check_added_partitions(md)?;

        let manifest_list = table.manifest_list_reader(start.parent).load().await?;
        let (plans, found, live_seqs) = self
            .scan_data_manifests(table, manifest_list.entries())
            .await?;
        let replaced = self.replaced_files(&found)?;
        let use_starting = self.change.use_starting_sequence_number;
        check_new_deletes(table, &start.history, start.seq, &replaced, use_starting).await?;
        // The data sequence number the new files will read as.
        let added_seq = if use_starting {
            start.seq
        } else {
            producer.sequence_number()
        };

        tracing::debug!(
            table = %table.identifier(),
            snapshots_since_start = start.history.len(),
            manifests_rewritten = plans.iter().filter(|p| matches!(p, Plan::Rewrite(..))).count(),
            manifests_carried = plans.iter().filter(|p| matches!(p, Plan::Carry(_))).count(),
            "replace validated"
        );

        let (delete_plans, dangling) = self
            .plan_delete_manifests(table, manifest_list.entries(), live_seqs, added_seq)
            .await?;

        // Everything is valid: write the new snapshot's manifests.
        let mut delta = SummaryDelta::default();
        let mut manifests = Vec::new();
        if !self.change.add.is_empty() {
            manifests.push(
                self.write_added_manifest(producer, start.seq, &mut delta)
                    .await?,
            );
        }
        let replaced_path = |p: &str| self.delete_set.contains(p);
        manifests.extend(apply_plans(producer, plans, &replaced_path, &mut delta).await?);
        let dangling_path = |p: &str| dangling.contains(p);
        manifests.extend(apply_plans(producer, delete_plans, &dangling_path, &mut delta).await?);
        if !dangling.is_empty() {
            tracing::info!(
                table = %table.identifier(),
                delete_files = dangling.len(),
                "removing dangling delete files"
            );
        }

        let summary = build_summary(
            &delta,
            Some(&start.parent.summary().additional_properties),
            &self.change.summary_properties,
        );
        Ok(BuiltSnapshot {
            operation: Operation::Replace,
            manifests,
            summary,
        })
    }
}

/// Where the rewrite started, seen from the table of one attempt.
struct StartPoint<'t> {
    /// `main`'s current snapshot: the new snapshot's parent.
    parent: &'t SnapshotRef,
    /// The snapshots committed on `main` since the start.
    history: Vec<i64>,
    /// The starting snapshot's sequence number.
    seq: i64,
}

impl ReplaceOp<'_> {
    /// Checks that the starting snapshot is still known and an ancestor of `main`'s current one.
    fn start_point<'t>(&self, md: &'t TableMetadata) -> Result<StartPoint<'t>, ReplaceError> {
        let start = self.change.starting_snapshot_id;
        let parent = md.current_snapshot().ok_or_else(|| {
            ReplaceError::Validation(format!(
                "table has no current snapshot; starting snapshot {start} is not an ancestor of main"
            ))
        })?;
        let history = validate::history_since(parent.snapshot_id(), start, |id| {
            md.snapshot_by_id(id).map(|s| s.parent_snapshot_id())
        })
        .map_err(ReplaceError::Validation)?;
        let seq = md
            .snapshot_by_id(start)
            .map(|s| s.sequence_number())
            .ok_or_else(|| {
                ReplaceError::Validation(format!(
                    "starting snapshot {start} has expired; its sequence number is unknown"
                ))
            })?;
        Ok(StartPoint {
            parent,
            history,
            seq,
        })
    }

    /// The spec the new files are written in: `output_spec_id`, else the default spec.
    fn output_spec<'t>(&self, md: &'t TableMetadata) -> Result<&'t PartitionSpecRef, ReplaceError> {
        match self.change.output_spec_id {
            None => Ok(md.default_partition_spec()),
            Some(id) => md.partition_spec_by_id(id).ok_or_else(|| {
                ReplaceError::InvalidChange(format!("the table has no partition spec with id {id}"))
            }),
        }
    }

    /// Checks that every file to add has a partition tuple of the output spec's arity.
    fn check_added_partitions(&self, md: &TableMetadata) -> Result<(), ReplaceError> {
        let spec = self.output_spec(md)?;
        let partition_arity = spec.fields().len();
        if let Some(f) = self
            .change
            .add
            .iter()
            .find(|f| f.partition().fields().len() != partition_arity)
        {
            return Err(ReplaceError::InvalidChange(format!(
                "file to add {} has a partition tuple of {} fields; partition spec {} has {}",
                f.file_path(),
                f.partition().fields().len(),
                spec.spec_id(),
                partition_arity
            )));
        }
        Ok(())
    }

    /// The files to replace as found live in the parent (in request order); an error naming
    /// those that are not.
    fn replaced_files(
        &self,
        found: &HashMap<String, ReplacedFile>,
    ) -> Result<Vec<ReplacedFile>, ReplaceError> {
        let live: HashSet<String> = found.keys().cloned().collect();
        let missing = validate::missing_paths(&self.delete_paths, &live);
        if !missing.is_empty() {
            return Err(ReplaceError::Validation(validate::missing_files_message(
                &missing,
            )));
        }
        Ok(self
            .delete_paths
            .iter()
            .filter_map(|p| found.get(p).cloned())
            .collect())
    }

    /// What to do with the parent's delete manifests: with `remove_dangling_deletes`, rewrite
    /// those holding delete files that apply to no live data file once the new files (at
    /// `added_seq`) are in, and return those files' paths; otherwise carry every live one.
    async fn plan_delete_manifests(
        &self,
        table: &Table,
        manifests: &[ManifestFile],
        mut live_seqs: LiveSequences,
        added_seq: i64,
    ) -> Result<(Vec<Plan>, HashSet<String>), ReplaceError> {
        if !self.change.remove_dangling_deletes {
            let carried = live_manifests(manifests, ManifestContentType::Deletes)
                .map(|m| Plan::Carry(m.clone()))
                .collect();
            return Ok((carried, HashSet::new()));
        }
        let output_spec = self.output_spec(table.metadata())?.spec_id();
        for f in &self.change.add {
            live_seqs.add(output_spec, f.partition(), added_seq);
        }
        self.scan_delete_manifests(table, manifests, &live_seqs)
            .await
    }

    /// Writes the manifest of the added files, owned by the new snapshot, and counts them in
    /// `delta`.
    async fn write_added_manifest(
        &self,
        producer: &mut SnapshotProducer<'_>,
        starting_seq: i64,
        delta: &mut SummaryDelta,
    ) -> Result<ManifestFile, ReplaceError> {
        let md = producer.table().metadata();
        let spec = self.output_spec(md)?;
        let mut writer = producer.new_manifest_writer(
            ManifestContentType::Data,
            md.current_schema().clone(),
            spec.as_ref().clone(),
        )?;
        let use_starting = self.change.use_starting_sequence_number;
        for f in &self.change.add {
            delta.add_data_file(
                spec.spec_id(),
                f.partition(),
                f.record_count(),
                f.file_size_in_bytes(),
            );
            // The starting snapshot's data sequence number: equality deletes committed after
            // the start must still apply to the rewritten rows, older ones must not (they
            // were applied while rewriting). The file sequence number is inherited from the
            // new snapshot; without `use-starting-sequence-number` the data sequence number
            // is too (a negative one is left unset).
            writer.add_file(f.clone(), if use_starting { starting_seq } else { -1 })?;
        }
        Ok(writer.write_manifest_file().await?)
    }

    /// Reads the parent's data manifests and decides, per manifest, whether it is carried as is,
    /// rewritten (it holds a replaced file) or dropped (no live files). Carried manifests' contents
    /// are dropped at once; those to rewrite are kept decoded up to [`KEPT_ENTRY_BUDGET`] entries
    /// in all, so memory stays bounded by the read concurrency plus that budget.
    async fn scan_data_manifests(
        &self,
        table: &Table,
        manifests: &[ManifestFile],
    ) -> Result<(Vec<Plan>, HashMap<String, ReplacedFile>, LiveSequences), ReplaceError> {
        let mut scans = load_live(table, manifests, ManifestContentType::Data);

        let mut plans = Vec::new();
        let mut found: HashMap<String, ReplacedFile> = HashMap::new();
        let mut live = LiveSequences::default();
        let mut kept_entries = 0usize;
        while let Some((m, manifest)) = scans.try_next().await? {
            let mut hit = false;
            for e in manifest.entries().iter().filter(|e| e.is_alive()) {
                let path = e.file_path();
                if self.added_paths.contains(path) {
                    return Err(ReplaceError::InvalidChange(format!(
                        "file to add {path} is already in the table"
                    )));
                }
                if self.change.remove_dangling_deletes && !self.delete_set.contains(path) {
                    let seq = e.sequence_number().unwrap_or(m.sequence_number);
                    live.add_existing(m.partition_spec_id, e.data_file().partition(), seq, path);
                }
                if self.delete_set.contains(path) {
                    hit = true;
                    found
                        .entry(path.to_string())
                        .or_insert_with(|| ReplacedFile {
                            path: path.to_string(),
                            spec_id: m.partition_spec_id,
                            partition: e.data_file().partition().clone(),
                        });
                }
            }
            plans.push(if hit {
                let entries = manifest.entries().len();
                let keep = kept_entries + entries <= KEPT_ENTRY_BUDGET;
                kept_entries += if keep { entries } else { 0 };
                Plan::Rewrite(m, keep.then_some(manifest))
            } else {
                Plan::Carry(m)
            });
        }
        Ok((plans, found, live))
    }

    /// Reads the parent's live delete manifests and decides, per manifest, whether it is carried
    /// as is or rewritten without its dangling delete files (returned as paths).
    async fn scan_delete_manifests(
        &self,
        table: &Table,
        manifests: &[ManifestFile],
        live: &LiveSequences,
    ) -> Result<(Vec<Plan>, HashSet<String>), ReplaceError> {
        let md = table.metadata();
        let mut scans = load_live(table, manifests, ManifestContentType::Deletes);
        let mut plans = Vec::new();
        let mut dangling = HashSet::new();
        while let Some((m, manifest)) = scans.try_next().await? {
            let unpartitioned = md
                .partition_spec_by_id(m.partition_spec_id)
                .map(|s| s.is_unpartitioned())
                .unwrap_or_else(|| manifest.metadata().partition_spec().is_unpartitioned());
            let mut hit = false;
            for e in manifest.entries().iter().filter(|e| e.is_alive()) {
                let f = e.data_file();
                let seq = e.sequence_number().unwrap_or(m.sequence_number);
                let referenced = referenced_data_file(f);
                if live.is_dangling(
                    m.partition_spec_id,
                    unpartitioned,
                    f.partition(),
                    f.content_type(),
                    seq,
                    referenced.as_deref(),
                ) {
                    hit = true;
                    dangling.insert(f.file_path().to_string());
                }
            }
            plans.push(if hit {
                Plan::Rewrite(m, None)
            } else {
                Plan::Carry(m)
            });
        }
        Ok((plans, dangling))
    }
}

/// The manifests `plans` leave: carried ones as they are, the others rewritten without the
/// entries whose path `removed` accepts.
async fn apply_plans(
    producer: &mut SnapshotProducer<'_>,
    plans: Vec<Plan>,
    removed: &(dyn Fn(&str) -> bool + Sync),
    delta: &mut SummaryDelta,
) -> Result<Vec<ManifestFile>, ReplaceError> {
    let mut manifests = Vec::with_capacity(plans.len());
    for plan in plans {
        match plan {
            Plan::Carry(m) => manifests.push(m),
            Plan::Rewrite(m, decoded) => {
                manifests.push(rewrite_manifest(producer, &m, decoded, removed, delta).await?)
            }
        }
    }
    Ok(manifests)
}

/// Writes a copy of `m` owned by the new snapshot: entries whose path `removed` accepts become
/// DELETED, the other live entries EXISTING, both with their original snapshot id and sequence
/// numbers; entries that were already DELETED are dropped (they belong to the snapshot that
/// deleted them). Works for data and delete manifests alike.
async fn rewrite_manifest(
    producer: &mut SnapshotProducer<'_>,
    m: &ManifestFile,
    decoded: Option<Manifest>,
    removed: &(dyn Fn(&str) -> bool + Sync),
    delta: &mut SummaryDelta,
) -> Result<ManifestFile, ReplaceError> {
    let manifest = match decoded {
        Some(manifest) => manifest,
        None => m.load_manifest(producer.table().file_io()).await?,
    };
    let (entries, meta) = manifest.into_parts();
    let mut writer = producer.new_manifest_writer(
        m.content,
        meta.schema().clone(),
        meta.partition_spec().clone(),
    )?;
    for entry in entries {
        if !entry.is_alive() {
            continue;
        }
        let entry = Arc::unwrap_or_clone(entry);
        let seq = entry.sequence_number.ok_or_else(|| {
            ReplaceError::InvalidChange(format!(
                "manifest {} has an entry without a data sequence number for {}",
                m.manifest_path,
                entry.file_path()
            ))
        })?;
        // Writers before the file sequence number existed left it out of EXISTING entries;
        // the data sequence number is the best lower bound and only informational.
        let file_seq = entry.file_sequence_number.or(Some(seq));
        if removed(entry.file_path()) {
            let f = entry.data_file();
            match f.content_type() {
                DataContentType::Data => delta.remove_data_file(
                    m.partition_spec_id,
                    f.partition(),
                    f.record_count(),
                    f.file_size_in_bytes(),
                ),
                kind => delta.remove_delete_file(
                    m.partition_spec_id,
                    f.partition(),
                    kind == DataContentType::EqualityDeletes,
                    f.record_count(),
                    f.file_size_in_bytes(),
                ),
            }
            writer.add_delete_file(entry.data_file, seq, file_seq)?;
        } else {
            let snapshot_id = entry.snapshot_id.unwrap_or(m.added_snapshot_id);
            writer.add_existing_file(entry.data_file, snapshot_id, seq, file_seq)?;
        }
    }
    Ok(writer.write_manifest_file().await?)
}

/// The `file_path` field of position delete files (reserved field id).
const DELETE_FILE_PATH_FIELD_ID: i32 = 2_147_483_546;

/// The one data file a position delete file applies to, when it says so: `referenced_data_file`,
/// or equal lower and upper `file_path` bounds (Java `ContentFileUtil.referencedDataFile`; a
/// truncated bound pair is never equal, the upper one is incremented).
fn referenced_data_file(f: &DataFile) -> Option<String> {
    if f.content_type() != DataContentType::PositionDeletes {
        return None;
    }
    if let Some(p) = f.referenced_data_file() {
        return Some(p);
    }
    let lower = f.lower_bounds().get(&DELETE_FILE_PATH_FIELD_ID)?;
    let upper = f.upper_bounds().get(&DELETE_FILE_PATH_FIELD_ID)?;
    match (lower.literal(), upper.literal()) {
        (PrimitiveLiteral::String(l), PrimitiveLiteral::String(u)) if l == u => Some(l.clone()),
        _ => None,
    }
}

/// The manifests of `content` that still hold live files.
fn live_manifests(
    manifests: &[ManifestFile],
    content: ManifestContentType,
) -> impl Iterator<Item = &ManifestFile> {
    manifests
        .iter()
        .filter(move |m| m.content == content && has_live_files(m))
}

/// The [`live_manifests`] of `content`, loaded [`MANIFEST_READ_CONCURRENCY`] at a time, in order.
fn load_live<'a>(
    table: &'a Table,
    manifests: &'a [ManifestFile],
    content: ManifestContentType,
) -> impl futures::Stream<Item = iceberg::Result<(ManifestFile, iceberg::spec::Manifest)>> + 'a {
    futures::stream::iter(
        live_manifests(manifests, content)
            .cloned()
            .map(move |m| async move {
                let manifest = m.load_manifest(table.file_io()).await?;
                Ok((m, manifest))
            }),
    )
    .buffered(MANIFEST_READ_CONCURRENCY)
}

/// Java's `shouldKeep`: a manifest without added or existing files only records deletions made by
/// the snapshot that wrote it, and is not carried into later snapshots.
fn has_live_files(m: &ManifestFile) -> bool {
    m.has_added_files() || m.has_existing_files()
}

/// Fails when a delete file added after the starting snapshot applies to a replaced file (Java
/// `validateNoNewDeletesForDataFiles`, with `ignoreEqualityDeletes` when the new files keep the
/// starting sequence number). Like Java it looks only at delete manifests written by the new
/// snapshots themselves; unlike Java (which checks `overwrite` and `delete` snapshots) it checks
/// every operation except `replace`, which costs nothing on well-formed tables and also catches a
/// writer that mislabels a row delta.
async fn check_new_deletes(
    table: &Table,
    history: &[i64],
    starting_seq: i64,
    replaced: &[ReplacedFile],
    ignore_equality_deletes: bool,
) -> Result<(), ReplaceError> {
    if replaced.is_empty() || history.is_empty() {
        return Ok(());
    }
    let md = table.metadata();
    let io = table.file_io();
    let index = ConflictIndex::new(replaced, starting_seq, ignore_equality_deletes);
    for &snapshot_id in history {
        let Some(snapshot) = md.snapshot_by_id(snapshot_id) else {
            continue;
        };
        if snapshot.summary().operation == Operation::Replace {
            continue;
        }
        let list = table.manifest_list_reader(snapshot).load().await?;
        for m in list.entries().iter().filter(|m| {
            m.content == ManifestContentType::Deletes
                && m.added_snapshot_id == snapshot_id
                && has_live_files(m)
        }) {
            let manifest = m.load_manifest(io).await?;
            let unpartitioned = md
                .partition_spec_by_id(m.partition_spec_id)
                .map(|s| s.is_unpartitioned())
                .unwrap_or_else(|| manifest.metadata().partition_spec().is_unpartitioned());
            for e in manifest.entries().iter().filter(|e| e.is_alive()) {
                let seq = e.sequence_number().unwrap_or(m.sequence_number);
                let delete = AddedDelete::from_data_file(
                    e.data_file(),
                    m.partition_spec_id,
                    unpartitioned,
                    seq,
                    snapshot_id,
                );
                if let Some(file) = index.conflict_for(&delete) {
                    return Err(ReplaceError::Validation(ConflictIndex::conflict_message(
                        file, &delete,
                    )));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod dangling_tests {
    use iceberg::spec::Literal;

    use super::*;

    fn part(v: i32) -> Struct {
        Struct::from_iter([Some(Literal::int(v))])
    }

    fn pos_delete(referenced: Option<&str>, bounds: Option<(&str, &str)>) -> DataFile {
        use iceberg::spec::{DataFileBuilder, DataFileFormat, Datum};
        let mut b = DataFileBuilder::default();
        b.content(DataContentType::PositionDeletes)
            .file_path("s3://b/t/data/pos.parquet".to_string())
            .file_format(DataFileFormat::Parquet)
            .partition(Struct::empty())
            .partition_spec_id(0)
            .record_count(1)
            .file_size_in_bytes(10)
            .referenced_data_file(referenced.map(str::to_string));
        if let Some((lo, hi)) = bounds {
            b.lower_bounds(HashMap::from([(
                DELETE_FILE_PATH_FIELD_ID,
                Datum::string(lo),
            )]))
            .upper_bounds(HashMap::from([(
                DELETE_FILE_PATH_FIELD_ID,
                Datum::string(hi),
            )]));
        }
        b.build().unwrap()
    }

    #[test]
    fn a_position_delete_names_its_file_by_field_or_equal_bounds() {
        let f = "s3://b/t/data/a.parquet";
        assert_eq!(
            referenced_data_file(&pos_delete(Some(f), None)).as_deref(),
            Some(f)
        );
        assert_eq!(
            referenced_data_file(&pos_delete(None, Some((f, f)))).as_deref(),
            Some(f)
        );
        // Two files, or truncated bounds (the upper one incremented): no single file.
        let g = "s3://b/t/data/b.parquet";
        assert_eq!(referenced_data_file(&pos_delete(None, Some((f, g)))), None);
        assert_eq!(
            referenced_data_file(&pos_delete(None, Some(("s3://b/t/d", "s3://b/t/e")))),
            None
        );
        assert_eq!(referenced_data_file(&pos_delete(None, None)), None);
    }

    #[test]
    fn dangling_follows_sequence_numbers_partitions_and_kinds() {
        use DataContentType::{EqualityDeletes as Eq, PositionDeletes as Pos};
        let mut live = LiveSequences::default();
        live.add_existing(0, &part(1), 7, "a");
        live.add_existing(0, &part(1), 5, "b"); // the smallest counts
        live.add(0, &part(2), 9); // a new file: no delete names it
        live.add_existing(1, &part(1), 3, "c"); // another spec, same tuple: its own key
        // (spec, unpartitioned, partition, kind, delete seq, dangling)
        let cases = [
            (0, false, 1, Pos, 4, true),
            (0, false, 1, Pos, 5, false), // may delete rows of the seq-5 file
            (0, false, 1, Eq, 5, true),   // applies only below its own seq
            (0, false, 1, Eq, 6, false),
            (0, false, 2, Eq, 9, true),
            (0, false, 2, Pos, 9, false),
            (0, false, 3, Pos, 100, true), // no live data in the partition
            (1, false, 1, Eq, 4, false),
            (1, false, 1, Eq, 3, true),
            // Unpartitioned deletes are compared with every live file (smallest: 3).
            (2, true, 0, Eq, 3, true),
            (2, true, 0, Eq, 4, false),
            (2, true, 0, Pos, 2, true),
            (2, true, 0, Pos, 3, false),
        ];
        for (i, (spec, unpart, p, kind, seq, want)) in cases.into_iter().enumerate() {
            let got = live.is_dangling(spec, unpart, &part(p), kind, seq, None);
            assert_eq!(
                got, want,
                "case {i}: spec {spec} part {p} {kind:?} seq {seq}"
            );
        }
        // A position delete naming its data file dangles once that file is gone, whatever the
        // sequence numbers; naming a live file, the sequence rule decides.
        assert!(live.is_dangling(0, false, &part(1), Pos, 9, Some("gone")));
        assert!(!live.is_dangling(0, false, &part(1), Pos, 9, Some("a")));
        assert!(live.is_dangling(0, false, &part(1), Pos, 4, Some("a")));
        // Equality deletes name no file.
        assert!(!live.is_dangling(0, false, &part(1), Eq, 6, Some("gone")));
        // A table without live data: every delete file is dangling.
        let empty = LiveSequences::default();
        assert!(empty.is_dangling(0, true, &Struct::empty(), Eq, 1, None));
        assert!(empty.is_dangling(0, false, &part(1), Pos, 1, None));
    }
}
