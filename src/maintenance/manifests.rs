//! Manifest rewrite (Spark's `rewrite_manifests`): when a snapshot carries many manifests, or
//! several small ones, their live entries are rewritten into fewer manifests clustered by
//! partition and committed as a `replace` snapshot with no data change, through the same snapshot
//! producer, commit backends and retries as compaction ([`crate::commit`]).
//!
//! Entries keep their original snapshot id and sequence numbers (they become EXISTING), so
//! readers apply deletes exactly as before. Delete manifests are carried over untouched.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use iceberg::spec::{Manifest, ManifestContentType, ManifestEntry, ManifestFile, Operation};
use iceberg::table::Table;
use serde::Serialize;

use crate::catalog::{CatalogHandle, CommitBackend};
use crate::commit::summary::{SummaryDelta, build_summary};
use crate::commit::{
    BuiltSnapshot, ReplaceError, RetryPolicy, SnapshotChange, SnapshotProducer, commit_change,
};
use crate::fence::Fence;

/// Java's default for `commit.manifest.target-size-bytes`.
pub const DEFAULT_TARGET_SIZE_BYTES: u64 = 8 * 1024 * 1024;
const MANIFEST_READ_CONCURRENCY: usize = 8;

/// Settings of one manifest rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ManifestSettings {
    /// Rewrite when the snapshot has more data manifests than this.
    pub min_manifests: usize,
    /// Target size of the new manifests (and what counts as small).
    pub target_size_bytes: u64,
}

impl ManifestSettings {
    /// The policy's values, else the table's `commit.manifest.target-size-bytes`, else 8 MiB.
    pub fn resolve(
        min_manifests: usize,
        target: Option<u64>,
        table_props: &HashMap<String, String>,
    ) -> Self {
        let target_size_bytes = target
            .or_else(|| {
                table_props
                    .get("commit.manifest.target-size-bytes")
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(DEFAULT_TARGET_SIZE_BYTES);
        Self {
            min_manifests,
            target_size_bytes,
        }
    }
}

/// A data manifest as the pure decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestFacts {
    pub spec_id: i32,
    pub length: u64,
}

/// Which partition specs' data manifests to rewrite (pure): all of them when there are more
/// manifests than `min_manifests`, otherwise those specs with at least two small manifests.
pub fn specs_to_rewrite(manifests: &[ManifestFacts], s: &ManifestSettings) -> Vec<i32> {
    let mut small: BTreeMap<i32, usize> = BTreeMap::new();
    let mut all: BTreeMap<i32, usize> = BTreeMap::new();
    for m in manifests {
        *all.entry(m.spec_id).or_default() += 1;
        if m.length < s.target_size_bytes {
            *small.entry(m.spec_id).or_default() += 1;
        }
    }
    if manifests.len() > s.min_manifests {
        return all
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(k, _)| k)
            .collect();
    }
    small
        .into_iter()
        .filter(|(_, n)| *n >= 2)
        .map(|(k, _)| k)
        .collect()
}

/// How many entries go in one new manifest, from the average entry size of the old ones.
pub fn entries_per_manifest(total_length: u64, total_entries: u64, target: u64) -> usize {
    if total_entries == 0 {
        return 1;
    }
    let per_entry = (total_length / total_entries).max(1);
    ((target / per_entry).max(1)) as usize
}

/// The change: rewrite the chosen specs' data manifests.
#[derive(Debug)]
struct RewriteManifestsOp {
    settings: ManifestSettings,
    summary_properties: HashMap<String, String>,
}

fn live_data(m: &ManifestFile) -> bool {
    m.content == ManifestContentType::Data && (m.has_added_files() || m.has_existing_files())
}

#[async_trait::async_trait]
impl SnapshotChange for RewriteManifestsOp {
    fn describe(&self) -> String {
        "rewrite manifests".to_string()
    }

    async fn build(
        &self,
        producer: &mut SnapshotProducer<'_>,
    ) -> Result<BuiltSnapshot, ReplaceError> {
        let table = producer.table();
        let md = table.metadata();
        let snapshot = md.current_snapshot().ok_or(ReplaceError::EmptyChange)?;
        let list = table.manifest_list_reader(snapshot).load().await?;
        let facts: Vec<ManifestFacts> = list
            .entries()
            .iter()
            .filter(|m| live_data(m))
            .map(|m| ManifestFacts {
                spec_id: m.partition_spec_id,
                length: m.manifest_length.max(0) as u64,
            })
            .collect();
        let specs = specs_to_rewrite(&facts, &self.settings);
        if specs.is_empty() {
            return Err(ReplaceError::EmptyChange);
        }
        let (chosen, kept): (Vec<ManifestFile>, Vec<ManifestFile>) = list
            .entries()
            .iter()
            .filter(|m| m.content != ManifestContentType::Data || live_data(m))
            .cloned()
            .partition(|m| live_data(m) && specs.contains(&m.partition_spec_id));
        let loaded = load_manifests(table, &chosen).await?;

        let mut manifests = kept.clone();
        let mut created = 0usize;
        let mut entries_total = 0usize;
        for spec_id in &specs {
            let group: Vec<&(ManifestFile, Manifest)> = loaded
                .iter()
                .filter(|(m, _)| m.partition_spec_id == *spec_id)
                .collect();
            let (written, entries) = self.rewrite_spec(producer, &group).await?;
            entries_total += entries;
            created += written.len();
            manifests.extend(written);
        }
        let mut user = self.summary_properties.clone();
        user.insert("manifests-created".into(), created.to_string());
        user.insert("manifests-replaced".into(), chosen.len().to_string());
        user.insert("manifests-kept".into(), kept.len().to_string());
        user.insert("entries-processed".into(), entries_total.to_string());
        let summary = build_summary(
            &SummaryDelta::default(),
            Some(&snapshot.summary().additional_properties),
            &user,
        );
        Ok(BuiltSnapshot {
            operation: Operation::Replace,
            manifests,
            summary,
        })
    }
}

impl RewriteManifestsOp {
    /// Rewrites the live entries of `group` (the chosen manifests of one partition spec) into
    /// new manifests of about the target size, clustered by partition. Returns the new manifests
    /// and the number of entries they hold.
    async fn rewrite_spec(
        &self,
        producer: &mut SnapshotProducer<'_>,
        group: &[&(ManifestFile, Manifest)],
    ) -> Result<(Vec<ManifestFile>, usize), ReplaceError> {
        let Some((_, first)) = group.first() else {
            return Ok((Vec::new(), 0));
        };
        let schema = first.metadata().schema().clone();
        let spec = first.metadata().partition_spec().clone();
        let total_length: u64 = group.iter().map(|(m, _)| m.manifest_length as u64).sum();
        // (partition key, entry, snapshot id of the manifest for entries that lack one)
        let mut entries: Vec<(String, ManifestEntry, i64)> = Vec::new();
        for (m, manifest) in group {
            for e in manifest.entries().iter().filter(|e| e.is_alive()) {
                let entry: ManifestEntry = Arc::unwrap_or_clone(e.clone());
                let key = format!("{:?}", entry.data_file().partition());
                entries.push((key, entry, m.added_snapshot_id));
            }
        }
        // Cluster by partition so readers prune whole manifests.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let per = entries_per_manifest(
            total_length,
            entries.len() as u64,
            self.settings.target_size_bytes,
        );
        let mut written = Vec::new();
        for chunk in entries.chunks(per) {
            let mut writer = producer.new_manifest_writer(
                ManifestContentType::Data,
                schema.clone(),
                spec.clone(),
            )?;
            for (_, entry, manifest_snapshot) in chunk {
                let seq = entry.sequence_number.ok_or_else(|| {
                    ReplaceError::InvalidChange(format!(
                        "an entry for {} has no data sequence number",
                        entry.file_path()
                    ))
                })?;
                let file_seq = entry.file_sequence_number.or(Some(seq));
                let snapshot_id = entry.snapshot_id.unwrap_or(*manifest_snapshot);
                writer.add_existing_file(entry.data_file().clone(), snapshot_id, seq, file_seq)?;
            }
            written.push(writer.write_manifest_file().await?);
        }
        Ok((written, entries.len()))
    }
}

/// Reads `manifests`, a few at a time, keeping their order.
async fn load_manifests(
    table: &Table,
    manifests: &[ManifestFile],
) -> Result<Vec<(ManifestFile, Manifest)>, iceberg::Error> {
    let io = table.file_io().clone();
    futures::stream::iter(manifests.iter().cloned().map(|m| {
        let io = io.clone();
        async move {
            let manifest = m.load_manifest(&io).await?;
            Ok::<_, iceberg::Error>((m, manifest))
        }
    }))
    .buffered(MANIFEST_READ_CONCURRENCY)
    .try_collect()
    .await
}

/// What a manifest rewrite did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ManifestsReport {
    pub data_manifests_before: usize,
    pub manifests_replaced: usize,
    pub manifests_created: usize,
    pub snapshot_id: Option<i64>,
    pub commit_attempts: u32,
}

/// Counts the current snapshot's live data manifests (for reports and "nothing to do").
pub async fn data_manifest_facts(table: &Table) -> Result<Vec<ManifestFacts>, iceberg::Error> {
    let Some(snapshot) = table.metadata().current_snapshot() else {
        return Ok(vec![]);
    };
    let list = table.manifest_list_reader(snapshot).load().await?;
    Ok(list
        .entries()
        .iter()
        .filter(|m| live_data(m))
        .map(|m| ManifestFacts {
            spec_id: m.partition_spec_id,
            length: m.manifest_length.max(0) as u64,
        })
        .collect())
}

/// Rewrites `table`'s manifests when [`specs_to_rewrite`] says so; `Ok(None)` when there is
/// nothing to do.
pub async fn rewrite_manifests(
    catalog: &CatalogHandle,
    backend: &dyn CommitBackend,
    table: &Table,
    settings: ManifestSettings,
    job_id: &str,
    fence: &Fence,
) -> Result<Option<ManifestsReport>, ReplaceError> {
    let facts = data_manifest_facts(table).await?;
    if specs_to_rewrite(&facts, &settings).is_empty() {
        return Ok(None);
    }
    let op = RewriteManifestsOp {
        settings,
        summary_properties: HashMap::from([("icemaint.job-id".to_string(), job_id.to_string())]),
    };
    let retry = RetryPolicy::from_table_properties(table.metadata().properties());
    let outcome = match commit_change(
        catalog.catalog.as_ref(),
        backend,
        table.identifier(),
        &op,
        &retry,
        fence,
    )
    .await
    {
        Ok(o) => o,
        // The table changed under us so that nothing is left to do.
        Err(ReplaceError::EmptyChange) => return Ok(None),
        Err(e) => return Err(e),
    };
    let num = |k: &str| {
        outcome
            .summary
            .get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(Some(ManifestsReport {
        data_manifests_before: facts.len(),
        manifests_replaced: num("manifests-replaced"),
        manifests_created: num("manifests-created"),
        snapshot_id: Some(outcome.snapshot_id),
        commit_attempts: outcome.attempts,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(spec_id: i32, length: u64) -> ManifestFacts {
        ManifestFacts { spec_id, length }
    }

    #[test]
    fn which_specs_are_rewritten() {
        let s = ManifestSettings {
            min_manifests: 3,
            target_size_bytes: 100,
        };
        // Two small manifests of spec 0: rewrite spec 0.
        assert_eq!(specs_to_rewrite(&[m(0, 10), m(0, 20)], &s), vec![0]);
        // One small manifest per spec: nothing to gain.
        assert!(specs_to_rewrite(&[m(0, 10), m(1, 20)], &s).is_empty());
        // Big manifests under the count threshold: nothing.
        assert!(specs_to_rewrite(&[m(0, 500), m(0, 600)], &s).is_empty());
        // Over the count threshold: every spec with more than one manifest.
        assert_eq!(
            specs_to_rewrite(&[m(0, 500), m(0, 600), m(0, 700), m(1, 800)], &s),
            vec![0]
        );
        assert!(specs_to_rewrite(&[], &s).is_empty());
    }

    #[test]
    fn entries_per_manifest_from_average_size() {
        assert_eq!(entries_per_manifest(10_000, 100, 1_000), 10);
        assert_eq!(entries_per_manifest(10_000, 100, 50), 1);
        assert_eq!(entries_per_manifest(0, 0, 50), 1);
        assert_eq!(
            entries_per_manifest(1_000_000, 1_000, DEFAULT_TARGET_SIZE_BYTES),
            8388
        );
    }

    #[test]
    fn settings_follow_policy_then_table() {
        let props = HashMap::from([(
            "commit.manifest.target-size-bytes".to_string(),
            "1000".to_string(),
        )]);
        assert_eq!(
            ManifestSettings::resolve(5, None, &props).target_size_bytes,
            1000
        );
        assert_eq!(
            ManifestSettings::resolve(5, Some(7), &props).target_size_bytes,
            7
        );
        assert_eq!(
            ManifestSettings::resolve(5, None, &HashMap::new()).target_size_bytes,
            DEFAULT_TARGET_SIZE_BYTES
        );
    }
}
