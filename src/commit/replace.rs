//! Compaction's commit: replace data files with rewritten ones in one `replace` snapshot (Java
//! `BaseRewriteFiles` with `validateFromSnapshot(start)` and `use-starting-sequence-number`).
//!
//! On each attempt, on the table as it is now:
//! 1. `main`'s history since the starting snapshot is walked (the start must be an ancestor);
//! 2. every path to delete must still be live (else "missing required files to delete");
//! 3. no delete file added after the start may apply to a replaced file (position deletes always
//!    conflict; equality deletes do not, because the new files keep the starting snapshot's data
//!    sequence number and so stay subject to them — Java's rule for this mode);
//! 4. manifests: the new files in a new manifest (ADDED, data sequence number = starting
//!    snapshot's), each data manifest holding a replaced file rewritten with that entry DELETED and
//!    the rest EXISTING, every other manifest (concurrent appends, delete manifests) carried as is,
//!    manifests left without live files dropped (Java's `shouldKeep`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use iceberg::spec::{DataContentType, DataFile, ManifestContentType, ManifestFile, Operation};
use iceberg::table::Table;
use iceberg::{Catalog, TableIdent};

use super::producer::{BuiltSnapshot, SnapshotChange, SnapshotProducer, commit_change};
use super::retry::RetryPolicy;
use super::summary::{SummaryDelta, build_summary};
use super::validate::{self, AddedDelete, ConflictIndex, ReplacedFile};
use super::{CommitOutcome, ReplaceError};
use crate::catalog::CommitBackend;

/// Manifests read at the same time while scanning a snapshot.
const MANIFEST_READ_CONCURRENCY: usize = 8;

/// Replace data files with rewritten ones (compaction's output for one or more file groups).
#[derive(Debug, Clone, Default)]
pub struct ReplaceDataFiles {
    /// The snapshot the rewrite read from: validation covers everything committed after it, and
    /// the new files get its data sequence number.
    pub starting_snapshot_id: i64,
    /// Data files replaced, with their paths exactly as the manifests spell them.
    pub delete_paths: Vec<String>,
    /// New data files (content `data`, written under the table's default partition spec).
    pub add: Vec<DataFile>,
    /// Extra snapshot summary entries, e.g. `icemaint.job-id`.
    pub summary_properties: HashMap<String, String>,
}

/// Commits `change` as one `replace` snapshot on `main`; see the module documentation for the
/// rules and [`commit_change`] for retries and failure handling.
pub async fn commit_replace(
    catalog: &dyn Catalog,
    backend: &dyn CommitBackend,
    ident: &TableIdent,
    change: &ReplaceDataFiles,
    retry: &RetryPolicy,
) -> Result<CommitOutcome, ReplaceError> {
    let op = ReplaceOp::new(change)?;
    commit_change(catalog, backend, ident, &op, retry).await
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
    Rewrite(ManifestFile),
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
        let starting_seq = md
            .snapshot_by_id(start)
            .map(|s| s.sequence_number())
            .ok_or_else(|| {
                ReplaceError::Validation(format!(
                    "starting snapshot {start} has expired; its sequence number is unknown"
                ))
            })?;

        let partition_arity = md.default_partition_type().fields().len();
        if let Some(f) = self
            .change
            .add
            .iter()
            .find(|f| f.partition().fields().len() != partition_arity)
        {
            return Err(ReplaceError::InvalidChange(format!(
                "file to add {} has a partition tuple of {} fields; the default partition spec {} has {}",
                f.file_path(),
                f.partition().fields().len(),
                md.default_partition_spec_id(),
                partition_arity
            )));
        }

        let manifest_list = table.manifest_list_reader(parent).load().await?;
        let (plans, found) = self
            .scan_data_manifests(table, manifest_list.entries())
            .await?;

        let live: HashSet<String> = found.keys().cloned().collect();
        let missing = validate::missing_paths(&self.delete_paths, &live);
        if !missing.is_empty() {
            return Err(ReplaceError::Validation(validate::missing_files_message(
                &missing,
            )));
        }
        let replaced: Vec<ReplacedFile> = self
            .delete_paths
            .iter()
            .filter_map(|p| found.get(p).cloned())
            .collect();
        check_new_deletes(table, &history, starting_seq, &replaced).await?;

        tracing::debug!(
            table = %table.identifier(),
            snapshots_since_start = history.len(),
            manifests_rewritten = plans.iter().filter(|p| matches!(p, Plan::Rewrite(_))).count(),
            manifests_carried = plans.iter().filter(|p| matches!(p, Plan::Carry(_))).count(),
            "replace validated"
        );

        // Everything is valid: write the new snapshot's manifests.
        let mut delta = SummaryDelta::default();
        let mut manifests = Vec::new();
        if !self.change.add.is_empty() {
            let spec = md.default_partition_spec();
            let mut writer = producer.new_manifest_writer(
                ManifestContentType::Data,
                md.current_schema().clone(),
                spec.as_ref().clone(),
            )?;
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
                // new snapshot.
                writer.add_file(f.clone(), starting_seq)?;
            }
            manifests.push(writer.write_manifest_file().await?);
        }
        for plan in plans {
            match plan {
                Plan::Carry(m) => manifests.push(m),
                Plan::Rewrite(m) => {
                    manifests.push(self.rewrite_manifest(producer, &m, &mut delta).await?);
                }
            }
        }
        manifests.extend(
            manifest_list
                .entries()
                .iter()
                .filter(|m| m.content == ManifestContentType::Deletes && has_live_files(m))
                .cloned(),
        );

        let summary = build_summary(
            &delta,
            Some(&parent.summary().additional_properties),
            &self.change.summary_properties,
        );
        Ok(BuiltSnapshot {
            operation: Operation::Replace,
            manifests,
            summary,
        })
    }
}

impl ReplaceOp<'_> {
    /// Reads the parent's data manifests and decides, per manifest, whether it is carried as is,
    /// rewritten (it holds a replaced file) or dropped (no live files). Only the decision is kept,
    /// not the manifests' contents, so memory stays bounded by the read concurrency.
    async fn scan_data_manifests(
        &self,
        table: &Table,
        manifests: &[ManifestFile],
    ) -> Result<(Vec<Plan>, HashMap<String, ReplacedFile>), ReplaceError> {
        let io = table.file_io().clone();
        let data: Vec<ManifestFile> = manifests
            .iter()
            .filter(|m| m.content == ManifestContentType::Data && has_live_files(m))
            .cloned()
            .collect();
        let mut scans = futures::stream::iter(data.into_iter().map(|m| {
            let io = io.clone();
            async move {
                let manifest = m.load_manifest(&io).await?;
                Ok::<_, iceberg::Error>((m, manifest))
            }
        }))
        .buffered(MANIFEST_READ_CONCURRENCY);

        let mut plans = Vec::new();
        let mut found: HashMap<String, ReplacedFile> = HashMap::new();
        while let Some((m, manifest)) = scans.try_next().await? {
            let mut hit = false;
            for e in manifest.entries().iter().filter(|e| e.is_alive()) {
                let path = e.file_path();
                if self.added_paths.contains(path) {
                    return Err(ReplaceError::InvalidChange(format!(
                        "file to add {path} is already in the table"
                    )));
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
                Plan::Rewrite(m)
            } else {
                Plan::Carry(m)
            });
        }
        Ok((plans, found))
    }

    /// Writes a copy of `m` owned by the new snapshot: replaced entries DELETED, the other live
    /// entries EXISTING, both with their original snapshot id and sequence numbers; entries that
    /// were already DELETED are dropped (they belong to the snapshot that deleted them).
    async fn rewrite_manifest(
        &self,
        producer: &mut SnapshotProducer<'_>,
        m: &ManifestFile,
        delta: &mut SummaryDelta,
    ) -> Result<ManifestFile, ReplaceError> {
        let manifest = m.load_manifest(producer.table().file_io()).await?;
        let (entries, meta) = manifest.into_parts();
        let mut writer = producer.new_manifest_writer(
            ManifestContentType::Data,
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
            if self.delete_set.contains(entry.file_path()) {
                let f = entry.data_file();
                delta.remove_data_file(
                    m.partition_spec_id,
                    f.partition(),
                    f.record_count(),
                    f.file_size_in_bytes(),
                );
                writer.add_delete_file(entry.data_file, seq, file_seq)?;
            } else {
                let snapshot_id = entry.snapshot_id.unwrap_or(m.added_snapshot_id);
                writer.add_existing_file(entry.data_file, snapshot_id, seq, file_seq)?;
            }
        }
        Ok(writer.write_manifest_file().await?)
    }
}

/// Java's `shouldKeep`: a manifest without added or existing files only records deletions made by
/// the snapshot that wrote it, and is not carried into later snapshots.
fn has_live_files(m: &ManifestFile) -> bool {
    m.has_added_files() || m.has_existing_files()
}

/// Fails when a delete file added after the starting snapshot applies to a replaced file (Java
/// `validateNoNewDeletesForDataFiles` with `ignoreEqualityDeletes`, since icemaint always keeps the
/// starting sequence number). Like Java it looks only at delete manifests written by the new
/// snapshots themselves; unlike Java (which checks `overwrite` and `delete` snapshots) it checks
/// every operation except `replace`, which costs nothing on well-formed tables and also catches a
/// writer that mislabels a row delta.
async fn check_new_deletes(
    table: &Table,
    history: &[i64],
    starting_seq: i64,
    replaced: &[ReplacedFile],
) -> Result<(), ReplaceError> {
    if replaced.is_empty() || history.is_empty() {
        return Ok(());
    }
    let md = table.metadata();
    let io = table.file_io();
    let index = ConflictIndex::new(replaced, starting_seq, true);
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
