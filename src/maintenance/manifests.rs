//! Manifest rewrite (Spark's `rewrite_manifests`): when a snapshot carries many manifests, or
//! several small ones, their live entries are rewritten into fewer manifests clustered by
//! partition and committed as a `replace` snapshot with no data change, through the same snapshot
//! producer, commit backends and retries as compaction ([`crate::commit`]).
//!
//! Entries keep their original snapshot id and sequence numbers (they become EXISTING), so
//! readers apply deletes exactly as before. Delete manifests are carried over untouched, as
//! Java's `RewriteManifestsSparkAction` does: it rewrites data manifests only.
//!
//! Entries are grouped by the (partition spec, schema) of the manifest they came from and written
//! under that manifest's spec and the table's schema of that id, so specs are never mixed. Within
//! a group, partitions are laid out in value order ([`compare_partitions`], nulls first) and cut
//! into manifests of about the target size.
//!
//! Inputs are decoded a slice of Avro blocks at a time ([`read`]), never a whole manifest. When
//! the chosen manifests hold at most [`spill::IN_MEMORY_ENTRIES`] live entries, they are read
//! once and held, sorted by partition value and cut into outputs (the layout below, no spill).
//! Above that, memory is bounded by design, not by the number of entries, and the inputs are
//! read twice whatever their size. iceberg-rust's `ManifestWriter` holds its entries until it is written, so
//! a writer per output manifest would hold every entry. Instead:
//! - pass 1 reads the chosen manifests and counts live entries per partition, which fixes where
//!   each partition's entries start in the value-ordered layout and so which output manifest each
//!   entry goes to;
//! - pass 2 reads them again and routes each entry to its output ([`spill`]): per-output buffers,
//!   spilled as small temporary manifests (chunks) to a local temporary directory when they grow
//!   past [`spill::SPILL_CHUNK_ENTRIES`] or hold more than [`spill::SPILL_HELD_ENTRIES`] together;
//!   an output whose entries have all arrived is written from its chunks and buffer as soon as
//!   the input being routed is dropped, its entries sorted by partition value.
//!
//! Held at once: a count per partition, loaded input manifests of at most
//! [`MANIFEST_ENTRY_BUDGET`] entries (or one larger manifest) and the buffered entries, then
//! (the input dropped) the buffered entries and one output manifest's entries (about the target
//! size). The chunks hold at most a copy of the chosen entries on local disk; they are deleted
//! as their output is written, and their directory is removed when the rewrite ends, fails or is
//! cancelled. Nothing temporary is written to the table location.

pub mod read;
mod spill;

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use iceberg::io::FileIO;
use iceberg::spec::{
    Literal, ManifestContentType, ManifestEntryRef, ManifestFile, Operation, PartitionSpec,
    SchemaRef, Struct,
};
use iceberg::table::Table;
use serde::Serialize;

use crate::catalog::{CatalogHandle, CommitBackend};
use crate::commit::summary::{SummaryDelta, build_summary};
use crate::commit::{
    BuiltSnapshot, ReplaceError, RetryPolicy, SnapshotChange, SnapshotProducer, commit_change,
};
use crate::fence::Fence;
use read::{EntrySlices, RawManifest, SLICE_ENTRIES};
use spill::{Routed, Spill, SpillOptions};

/// Java's default for `commit.manifest.target-size-bytes`.
pub const DEFAULT_TARGET_SIZE_BYTES: u64 = 8 * 1024 * 1024;
/// Input manifests loaded at once while reading, at most.
pub const MANIFEST_READ_CONCURRENCY: usize = 4;
/// Decoded input entries held at once while reading, at most (one larger manifest is read alone):
/// a decoded entry with column metrics weighs ~1-2 KiB, and four 100 000-entry manifests loaded
/// together made most of a million-entry rewrite's 1.5 GiB peak.
pub const MANIFEST_ENTRY_BUDGET: u64 = 32_768;

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

/// Orders partition tuples by value, field by field, nulls first: the clustering order of the new
/// manifests. Text order would put day 10 before day 9.
pub fn compare_partitions(a: &Struct, b: &Struct) -> Ordering {
    for (x, y) in a.iter().zip(b.iter()) {
        let o = match (x, y) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(x), Some(y)) => compare_literals(x, y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.fields().len().cmp(&b.fields().len())
}

fn compare_literals(a: &Literal, b: &Literal) -> Ordering {
    match (a, b) {
        // One spec field has one type, so both sides are the same variant and compare by value
        // (floats by total order, binary and fixed bytes unsigned, as Java does).
        (Literal::Primitive(x), Literal::Primitive(y)) => {
            x.partial_cmp(y).unwrap_or(Ordering::Equal)
        }
        // Partition values are primitive; anything else only needs a stable order.
        _ => format!("{a:?}").cmp(&format!("{b:?}")),
    }
}

/// A partition tuple ordered by value ([`compare_partitions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionKey(pub Struct);

impl Ord for PartitionKey {
    fn cmp(&self, other: &Self) -> Ordering {
        compare_partitions(&self.0, &other.0)
    }
}

impl PartialOrd for PartitionKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Lays the partitions out in value order: turns each partition's entry count into the position
/// of its first entry, and returns the total.
pub fn partition_starts(counts: &mut BTreeMap<PartitionKey, u64>) -> u64 {
    let mut next = 0;
    for n in counts.values_mut() {
        let count = *n;
        *n = next;
        next += count;
    }
    next
}

/// Splits the snapshot's manifests into the ones to rewrite (live data manifests of `specs`) and
/// the ones carried over as they are. Delete manifests are always carried over, never rewritten
/// or dropped, as in Java's `RewriteManifestsSparkAction`; data manifests without live entries
/// are dropped, since they contribute nothing.
pub fn split_manifests(
    list: &[ManifestFile],
    specs: &[i32],
) -> (Vec<ManifestFile>, Vec<ManifestFile>) {
    list.iter()
        .filter(|m| m.content != ManifestContentType::Data || live_data(m))
        .cloned()
        .partition(|m| live_data(m) && specs.contains(&m.partition_spec_id))
}

/// The chosen manifests of one (spec id, schema id) and where their entries go.
struct GroupPlan {
    spec: PartitionSpec,
    schema: SchemaRef,
    manifests: Vec<ManifestFile>,
    /// Position of each partition's first entry in the value-ordered layout.
    starts: BTreeMap<PartitionKey, u64>,
    entries: u64,
    /// Entries per output manifest.
    per: u64,
}

/// The change: rewrite the chosen specs' data manifests.
#[derive(Debug)]
struct RewriteManifestsOp {
    settings: ManifestSettings,
    summary_properties: HashMap<String, String>,
    /// Where pass 2 spills and how much it holds.
    spill: SpillOptions,
    /// Loads the input manifests; the table's `FileIO` when `None` (tests count loads here).
    loader: Option<Arc<dyn LoadManifest>>,
}

/// Loads an input manifest: the seam through which every read of the inputs goes.
#[async_trait::async_trait]
trait LoadManifest: Send + Sync + std::fmt::Debug {
    /// The manifest's entries, decoded a slice at a time as they are asked for.
    async fn load(&self, m: &ManifestFile) -> Result<EntrySlices, iceberg::Error>;
}

#[async_trait::async_trait]
impl LoadManifest for FileIO {
    async fn load(&self, m: &ManifestFile) -> Result<EntrySlices, iceberg::Error> {
        if m.key_metadata.is_some() {
            // Encrypted: iceberg decrypts and decodes it whole.
            return Ok(EntrySlices::decoded(
                m.clone(),
                m.load_manifest(self).await?,
            ));
        }
        let bytes: RawManifest = Box::new(self.new_input(&m.manifest_path)?.read().await?);
        Ok(EntrySlices::new(m.clone(), bytes, SLICE_ENTRIES)?)
    }
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
        let (chosen, kept) = split_manifests(list.entries(), &specs);
        let loader: Arc<dyn LoadManifest> = match &self.loader {
            Some(loader) => Arc::clone(loader),
            None => Arc::new(table.file_io().clone()),
        };
        let target = self.settings.target_size_bytes;
        let mut manifests = kept.clone();
        let mut created = 0usize;
        let mut entries_total = 0u64;
        if fits_in_memory(&chosen, self.spill.in_memory) {
            let groups = read_groups(table, &loader, &chosen).await?;
            for group in groups {
                entries_total += group.entries.len() as u64;
                let written = write_held_group(producer, group, target).await?;
                created += written.len();
                manifests.extend(written);
            }
        } else {
            let plans = plan_groups(table, &loader, &chosen, target).await?;
            for plan in &plans {
                let written = write_group(producer, &loader, plan, &self.spill).await?;
                entries_total += plan.entries;
                created += written.len();
                manifests.extend(written);
            }
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

/// Whether the live entries of `chosen` are at most `budget` (all counts known): then they are
/// read once and held, and no pass counts them and nothing is spilled.
fn fits_in_memory(chosen: &[ManifestFile], budget: u64) -> bool {
    let mut total = 0u64;
    for m in chosen {
        match (m.added_files_count, m.existing_files_count) {
            (Some(a), Some(e)) => total += u64::from(a) + u64::from(e),
            _ => return false,
        }
    }
    total <= budget
}

/// The entries of one (spec id, schema id), held in memory.
struct HeldGroup {
    spec: PartitionSpec,
    schema: SchemaRef,
    /// Bytes of the group's input manifests (for the entries per output).
    length: u64,
    entries: Vec<Routed>,
}

/// The table's schema of a manifest's id; the manifest's own copy if the table lost it.
fn group_schema(table: &Table, meta: &iceberg::spec::ManifestMetadata) -> SchemaRef {
    table
        .metadata()
        .schema_by_id(meta.schema_id())
        .cloned()
        .unwrap_or_else(|| meta.schema().clone())
}

/// Reads `chosen` once and holds their live entries, grouped by (spec id, schema id) in the order
/// read.
async fn read_groups(
    table: &Table,
    loader: &Arc<dyn LoadManifest>,
    chosen: &[ManifestFile],
) -> Result<Vec<HeldGroup>, ReplaceError> {
    let mut groups: BTreeMap<(i32, i32), HeldGroup> = BTreeMap::new();
    let mut reads = std::pin::pin!(read_manifests(loader, chosen.to_vec()));
    while let Some(read) = reads.next().await {
        let (m, mut slices) = read?;
        let meta = slices.metadata();
        let group = groups
            .entry((m.partition_spec_id, meta.schema_id()))
            .or_insert_with(|| HeldGroup {
                spec: meta.partition_spec().clone(),
                schema: group_schema(table, meta),
                length: 0,
                entries: Vec::new(),
            });
        group.length += m.manifest_length.max(0) as u64;
        while let Some(slice) = slices.next_slice().map_err(iceberg::Error::from)? {
            for e in slice.into_iter().filter(|e| e.is_alive()) {
                group.entries.push(Routed::new(e, m.added_snapshot_id)?);
            }
        }
    }
    Ok(groups.into_values().collect())
}

/// Writes a held group: its entries in partition value order (read order within a partition),
/// cut into outputs of the size [`entries_per_manifest`] gives: the layout the two passes make.
async fn write_held_group(
    producer: &mut SnapshotProducer<'_>,
    mut group: HeldGroup,
    target: u64,
) -> Result<Vec<ManifestFile>, ReplaceError> {
    let count = group.entries.len() as u64;
    let per = entries_per_manifest(group.length, count, target);
    sort_by_partition(&mut group.entries);
    let mut entries = group.entries.into_iter();
    let mut written = Vec::new();
    loop {
        let output: Vec<Routed> = entries.by_ref().take(per).collect();
        if output.is_empty() {
            return Ok(written);
        }
        written.push(write_output(producer, &group.schema, &group.spec, output).await?);
    }
}

/// Pass 1: reads `chosen`, groups the manifests by (spec id, schema id) and counts the live
/// entries of each partition. Holds counts, not entries.
async fn plan_groups(
    table: &Table,
    loader: &Arc<dyn LoadManifest>,
    chosen: &[ManifestFile],
    target: u64,
) -> Result<Vec<GroupPlan>, ReplaceError> {
    struct Acc {
        plan: GroupPlan,
        length: u64,
    }
    let mut groups: BTreeMap<(i32, i32), Acc> = BTreeMap::new();
    let mut reads = std::pin::pin!(read_manifests(loader, chosen.to_vec()));
    while let Some(read) = reads.next().await {
        let (m, mut slices) = read?;
        let meta = slices.metadata().clone();
        let schema_id = meta.schema_id();
        let acc = groups
            .entry((m.partition_spec_id, schema_id))
            .or_insert_with(|| Acc {
                plan: GroupPlan {
                    spec: meta.partition_spec().clone(),
                    schema: group_schema(table, &meta),
                    manifests: Vec::new(),
                    starts: BTreeMap::new(),
                    entries: 0,
                    per: 1,
                },
                length: 0,
            });
        acc.length += m.manifest_length.max(0) as u64;
        while let Some(entries) = slices.next_slice().map_err(iceberg::Error::from)? {
            for e in entries.iter().filter(|e| e.is_alive()) {
                *acc.plan
                    .starts
                    .entry(PartitionKey(e.data_file().partition().clone()))
                    .or_default() += 1;
            }
        }
        acc.plan.manifests.push(m);
    }
    Ok(groups
        .into_values()
        .map(|mut acc| {
            acc.plan.entries = partition_starts(&mut acc.plan.starts);
            acc.plan.per = entries_per_manifest(acc.length, acc.plan.entries, target) as u64;
            acc.plan
        })
        .collect())
}

/// Pass 2: reads the group's manifests once more and routes each live entry to its output
/// manifest through the [`Spill`]; each output is written as soon as its last entry arrives.
/// Reads go in the same order as in pass 1, so the k-th entry of a partition has the position the
/// counts gave it and lands in exactly one output. Returns the outputs in layout order.
async fn write_group(
    producer: &mut SnapshotProducer<'_>,
    loader: &Arc<dyn LoadManifest>,
    plan: &GroupPlan,
    options: &SpillOptions,
) -> Result<Vec<ManifestFile>, ReplaceError> {
    let (schema, spec) = (plan.schema.clone(), plan.spec.clone());
    let mut spill = Spill::new(options.clone(), schema, spec, plan.entries, plan.per);
    let mut written: Vec<(u64, ManifestFile)> = Vec::new();
    let mut next = plan.starts.clone();
    let mut reads = std::pin::pin!(read_manifests(loader, plan.manifests.clone()));
    let mut ready = Vec::new();
    while let Some(read) = reads.next().await {
        let (m, mut slices) = read?;
        while let Some(slice) = slices.next_slice().map_err(iceberg::Error::from)? {
            for e in slice.into_iter().filter(|e| e.is_alive()) {
                let index = output_index(plan, &mut next, &e, &m)?;
                if spill
                    .push(index, Routed::new(e, m.added_snapshot_id)?)
                    .await?
                {
                    ready.push(index);
                }
            }
            // The decoded slice goes before the outputs it completed are loaded and written.
            for index in ready.drain(..) {
                let entries = spill.take(index).await?;
                let output = write_output(producer, &plan.schema, &plan.spec, entries).await?;
                written.push((index, output));
            }
        }
    }
    spill.finish()?;
    written.sort_by_key(|(index, _)| *index);
    Ok(written.into_iter().map(|(_, m)| m).collect())
}

/// The output manifest of entry `e` of manifest `m`: `next` holds, per partition, the layout
/// position of its next entry (starting from [`GroupPlan::starts`]).
fn output_index(
    plan: &GroupPlan,
    next: &mut BTreeMap<PartitionKey, u64>,
    e: &ManifestEntryRef,
    m: &ManifestFile,
) -> Result<u64, ReplaceError> {
    let position = next
        .get_mut(&PartitionKey(e.data_file().partition().clone()))
        .ok_or_else(|| {
            ReplaceError::InvalidChange(format!(
                "manifest {} changed while it was rewritten",
                m.manifest_path
            ))
        })?;
    let index = *position / plan.per;
    *position += 1;
    Ok(index)
}

/// Sorts an output's entries by partition value. The sort is stable, so within a partition the
/// entries keep the order they were read in.
fn sort_by_partition(entries: &mut [Routed]) {
    entries.sort_by(|a, b| {
        compare_partitions(
            a.entry.data_file().partition(),
            b.entry.data_file().partition(),
        )
    });
}

/// Writes one output manifest under `schema` and `spec` holding `entries` (EXISTING, ids kept), in
/// partition value order.
async fn write_output(
    producer: &mut SnapshotProducer<'_>,
    schema: &SchemaRef,
    spec: &PartitionSpec,
    mut entries: Vec<Routed>,
) -> Result<ManifestFile, ReplaceError> {
    sort_by_partition(&mut entries);
    let mut writer =
        producer.new_manifest_writer(ManifestContentType::Data, schema.clone(), spec.clone())?;
    for entry in entries {
        entry.add_to(&mut writer)?;
    }
    Ok(writer.write_manifest_file().await?)
}

/// Reads `manifests` in order, as many at once as [`read_concurrency`] allows.
fn read_manifests(
    loader: &Arc<dyn LoadManifest>,
    manifests: Vec<ManifestFile>,
) -> impl Stream<Item = Result<(ManifestFile, EntrySlices), iceberg::Error>> + use<> {
    let concurrency = read_concurrency(&manifests);
    let loader = Arc::clone(loader);
    futures::stream::iter(manifests.into_iter().map(move |m| {
        let loader = Arc::clone(&loader);
        async move {
            let manifest = loader.load(&m).await?;
            Ok::<_, iceberg::Error>((m, manifest))
        }
    }))
    .buffered(concurrency)
}

/// How many of `manifests` to load at once: as many of the largest as fit
/// [`MANIFEST_ENTRY_BUDGET`], between 1 and [`MANIFEST_READ_CONCURRENCY`]. A manifest whose
/// counts the list does not give is taken as over the budget.
pub fn read_concurrency(manifests: &[ManifestFile]) -> usize {
    let largest = manifests
        .iter()
        .map(|m| {
            match (
                m.added_files_count,
                m.existing_files_count,
                m.deleted_files_count,
            ) {
                (Some(a), Some(e), Some(d)) => u64::from(a) + u64::from(e) + u64::from(d),
                _ => MANIFEST_ENTRY_BUDGET,
            }
        })
        .max()
        .unwrap_or(1)
        .max(1);
    ((MANIFEST_ENTRY_BUDGET / largest) as usize).clamp(1, MANIFEST_READ_CONCURRENCY)
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
        spill: SpillOptions::default(),
        loader: None,
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

    fn part(values: &[Option<Literal>]) -> Struct {
        values.iter().cloned().collect()
    }

    #[test]
    fn partitions_order_by_value_not_text() {
        let day = |d: i32| part(&[Some(Literal::date(d))]);
        // Text order puts "10" before "9"; value order does not.
        assert!(format!("{:?}", day(10)) < format!("{:?}", day(9)));
        assert_eq!(compare_partitions(&day(9), &day(10)), Ordering::Less);
        assert_eq!(compare_partitions(&day(10), &day(10)), Ordering::Equal);
        // Nulls first, then field by field.
        let null = part(&[None]);
        assert_eq!(compare_partitions(&null, &day(-5)), Ordering::Less);
        let two = |a: i64, b: &str| part(&[Some(Literal::long(a)), Some(Literal::string(b))]);
        assert_eq!(
            compare_partitions(&two(9, "b"), &two(10, "a")),
            Ordering::Less
        );
        assert_eq!(
            compare_partitions(&two(10, "a"), &two(10, "b")),
            Ordering::Less
        );
        assert_eq!(
            compare_partitions(&part(&[Some(Literal::long(1)), None]), &two(1, "")),
            Ordering::Less
        );
        let mut keys: Vec<PartitionKey> = [10, 9, 100, 2]
            .into_iter()
            .map(|d| PartitionKey(day(d)))
            .collect();
        keys.push(PartitionKey(null.clone()));
        keys.sort();
        let sorted: Vec<PartitionKey> = [None, Some(2), Some(9), Some(10), Some(100)]
            .into_iter()
            .map(|d| PartitionKey(d.map_or(null.clone(), day)))
            .collect();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn partitions_are_laid_out_in_value_order() {
        let day = |d: i32| PartitionKey(part(&[Some(Literal::date(d))]));
        let mut counts = BTreeMap::from([(day(10), 3), (day(9), 2), (day(100), 1)]);
        assert_eq!(partition_starts(&mut counts), 6);
        assert_eq!(
            counts.into_iter().collect::<Vec<_>>(),
            vec![(day(9), 0), (day(10), 2), (day(100), 5)]
        );
    }

    fn manifest(path: &str, content: ManifestContentType, spec_id: i32, live: u32) -> ManifestFile {
        ManifestFile {
            manifest_path: path.to_string(),
            manifest_length: 100,
            partition_spec_id: spec_id,
            content,
            sequence_number: 1,
            min_sequence_number: 1,
            added_snapshot_id: 1,
            added_files_count: Some(live),
            existing_files_count: Some(0),
            deleted_files_count: Some(1),
            added_rows_count: None,
            existing_rows_count: None,
            deleted_rows_count: None,
            partitions: None,
            key_metadata: None,
            first_row_id: None,
        }
    }

    #[test]
    fn delete_manifests_are_kept_as_they_are() {
        use ManifestContentType::{Data, Deletes};
        let list = vec![
            manifest("d0a", Data, 0, 1),
            manifest("del0", Deletes, 0, 1),
            manifest("d0b", Data, 0, 2),
            manifest("d1", Data, 1, 1),
            // Delete manifests without live entries are carried over too: never dropped.
            manifest("del-empty", Deletes, 0, 0),
            manifest("d0-empty", Data, 0, 0),
        ];
        let paths = |ms: &[ManifestFile]| {
            ms.iter()
                .map(|m| m.manifest_path.clone())
                .collect::<Vec<_>>()
        };
        let (chosen, kept) = split_manifests(&list, &[0]);
        assert_eq!(paths(&chosen), ["d0a", "d0b"]);
        assert_eq!(paths(&kept), ["del0", "d1", "del-empty"]);
        // Even when every spec is rewritten, delete manifests stay and are never chosen.
        let (chosen, kept) = split_manifests(&list, &[0, 1]);
        assert_eq!(paths(&chosen), ["d0a", "d0b", "d1"]);
        assert_eq!(paths(&kept), ["del0", "del-empty"]);
        assert!(kept.iter().all(|m| list.contains(m)));
    }

    /// Data manifests of the current snapshot with the partition (`part`) of each entry, and the
    /// paths of its delete manifests.
    async fn layout(table: &Table) -> (Vec<Vec<i32>>, Vec<String>) {
        let snap = table.metadata().current_snapshot().unwrap();
        let list = table.manifest_list_reader(snap).load().await.unwrap();
        let (mut data, mut deletes) = (Vec::new(), Vec::new());
        for m in list.entries() {
            if m.content == ManifestContentType::Deletes {
                deletes.push(m.manifest_path.clone());
                continue;
            }
            let manifest = m.load_manifest(table.file_io()).await.unwrap();
            let parts = manifest.entries().iter().filter(|e| e.is_alive()).map(|e| {
                match &e.data_file().partition()[0] {
                    Some(Literal::Primitive(iceberg::spec::PrimitiveLiteral::Int(p))) => *p,
                    other => panic!("unexpected partition {other:?}"),
                }
            });
            data.push(parts.collect());
        }
        (data, deletes)
    }

    #[tokio::test]
    async fn rewrite_with_one_entry_per_output_keeps_every_entry_in_value_order() {
        use crate::commit::tests::{Env, add_deletes, rows, write_equality_delete};
        let env = Env::new().await;
        // One manifest per append; partitions whose text order is not their value order.
        let parts = [10, 9, 100, 2, 10, 9, 30, 2, 1, 10];
        let mut written = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let id = i as i64;
            written.push((id, format!("r{i}")));
            let file = env.write(*part, &[(id, &format!("r{i}"))]).await;
            env.append(vec![file]).await;
        }
        let delete = write_equality_delete(&env.table().await, 9, &[1]).await;
        add_deletes(&env, vec![delete]).await;
        let before = env.table().await;
        let (_, deletes_before) = layout(&before).await;
        let rows_before = rows(&before).await;
        assert_eq!(rows_before.len(), parts.len() - 1);

        // One entry per output manifest: ten outputs, each complete as soon as it is routed.
        let op = RewriteManifestsOp {
            settings: ManifestSettings {
                min_manifests: 0,
                target_size_bytes: 1,
            },
            summary_properties: HashMap::new(),
            spill: SpillOptions::default(),
            loader: None,
        };
        let outcome = env.commit(&op).await.unwrap();
        assert_eq!(outcome.summary["manifests-replaced"], "10");
        assert_eq!(outcome.summary["manifests-created"], "10");
        let after = env.table().await;
        let (data, deletes) = layout(&after).await;
        let mut sorted = parts.to_vec();
        sorted.sort();
        assert_eq!(data, sorted.iter().map(|p| vec![*p]).collect::<Vec<_>>());
        assert_eq!(deletes, deletes_before, "delete manifests are carried over");
        assert_eq!(rows(&after).await, rows_before);
    }

    #[tokio::test]
    async fn manifests_of_each_spec_are_rewritten_under_their_own_spec() {
        use crate::commit::tests::Env;
        use iceberg::spec::{DataContentType, DataFileBuilder, DataFileFormat};
        let env = Env::new().await;
        for part in [3, 1, 2] {
            let file = env.write(part, &[(i64::from(part), "x")]).await;
            env.append(vec![file]).await;
        }
        // Evolve to an unpartitioned spec (id 1) and append under it.
        let updates = vec![
            iceberg::TableUpdate::AddSpec {
                spec: iceberg::spec::UnboundPartitionSpec::builder()
                    .with_spec_id(1)
                    .build(),
            },
            iceberg::TableUpdate::SetDefaultSpec { spec_id: -1 },
        ];
        let base = env.table().await;
        env.backend.commit(&base, vec![], updates).await.unwrap();
        for i in 0..2 {
            let file = DataFileBuilder::default()
                .content(DataContentType::Data)
                .file_path(format!(
                    "{}/data/unpartitioned-{i}.parquet",
                    base.metadata().location()
                ))
                .file_format(DataFileFormat::Parquet)
                .partition(Struct::empty())
                .partition_spec_id(1)
                .record_count(1)
                .file_size_in_bytes(10)
                .build()
                .unwrap();
            env.append(vec![file]).await;
        }
        let op = RewriteManifestsOp {
            settings: ManifestSettings {
                min_manifests: 0,
                target_size_bytes: DEFAULT_TARGET_SIZE_BYTES,
            },
            summary_properties: HashMap::new(),
            spill: SpillOptions::default(),
            loader: None,
        };
        let outcome = env.commit(&op).await.unwrap();
        assert_eq!(outcome.summary["manifests-replaced"], "5");
        let table = env.table().await;
        let snap = table.metadata().current_snapshot().unwrap();
        let list = table.manifest_list_reader(snap).load().await.unwrap();
        let mut seen = Vec::new();
        for m in list.entries() {
            let manifest = m.load_manifest(table.file_io()).await.unwrap();
            let spec = manifest.metadata().partition_spec();
            // Written under the spec of the manifests the entries came from.
            assert_eq!(spec.spec_id(), m.partition_spec_id);
            assert_eq!(
                spec.fields().len(),
                if m.partition_spec_id == 0 { 1 } else { 0 }
            );
            for e in manifest.entries() {
                assert_eq!(
                    e.data_file().partition().fields().len(),
                    spec.fields().len()
                );
            }
            seen.push((m.partition_spec_id, manifest.entries().len()));
        }
        seen.sort();
        assert_eq!(seen, vec![(0, 3), (1, 2)]);
    }

    /// Loads input manifests through the table's `FileIO`, recording each load; fails or never
    /// finishes the n-th load (1-based) when told to.
    #[derive(Debug)]
    struct RecordingLoader {
        io: FileIO,
        loads: std::sync::Mutex<Vec<String>>,
        fail_at: Option<usize>,
        hang_at: Option<usize>,
    }

    impl RecordingLoader {
        fn new(table: &Table) -> Self {
            Self {
                io: table.file_io().clone(),
                loads: Default::default(),
                fail_at: None,
                hang_at: None,
            }
        }

        fn loads_per_path(&self) -> BTreeMap<String, usize> {
            let mut per = BTreeMap::new();
            for path in self.loads.lock().unwrap().iter() {
                *per.entry(path.clone()).or_default() += 1;
            }
            per
        }
    }

    #[async_trait::async_trait]
    impl LoadManifest for RecordingLoader {
        async fn load(&self, m: &ManifestFile) -> Result<EntrySlices, iceberg::Error> {
            let n = {
                let mut loads = self.loads.lock().unwrap();
                loads.push(m.manifest_path.clone());
                loads.len()
            };
            if Some(n) == self.fail_at {
                let kind = iceberg::ErrorKind::DataInvalid;
                return Err(iceberg::Error::new(kind, "injected read failure"));
            }
            if Some(n) == self.hang_at {
                std::future::pending::<()>().await;
            }
            LoadManifest::load(&self.io, m).await
        }
    }

    /// (partition, path, snapshot id, data and file sequence numbers) of a live entry.
    type EntryIds = (i32, String, Option<i64>, Option<i64>, Option<i64>);

    /// The live entries of each data manifest of the current snapshot.
    async fn entry_ids(table: &Table) -> Vec<Vec<EntryIds>> {
        let snap = table.metadata().current_snapshot().unwrap();
        let list = table.manifest_list_reader(snap).load().await.unwrap();
        let mut out = Vec::new();
        for m in list.entries() {
            if m.content != ManifestContentType::Data {
                continue;
            }
            let manifest = m.load_manifest(table.file_io()).await.unwrap();
            let ids = manifest.entries().iter().filter(|e| e.is_alive()).map(|e| {
                let part = match &e.data_file().partition()[0] {
                    Some(Literal::Primitive(iceberg::spec::PrimitiveLiteral::Int(p))) => *p,
                    other => panic!("unexpected partition {other:?}"),
                };
                let path = e.file_path().to_string();
                (
                    part,
                    path,
                    e.snapshot_id,
                    e.sequence_number,
                    e.file_sequence_number,
                )
            });
            out.push(ids.collect());
        }
        out
    }

    /// Eight appends (eight manifests) of three files each, partitions spread over all of them;
    /// returns the rewrite settings that make outputs of three entries each (eight outputs).
    async fn spread_table(env: &crate::commit::tests::Env) -> ManifestSettings {
        use iceberg::spec::{DataContentType, DataFileBuilder, DataFileFormat};
        let location = env.table().await.metadata().location().to_string();
        for i in 0..8 {
            let files = (0..3)
                .map(|j| {
                    let part = (i * 7 + j * 3) % 10;
                    DataFileBuilder::default()
                        .content(DataContentType::Data)
                        .file_path(format!("{location}/data/f{i}-{j}.parquet"))
                        .file_format(DataFileFormat::Parquet)
                        .partition(part_of(part))
                        .partition_spec_id(0)
                        .record_count(1)
                        .file_size_in_bytes(10)
                        .build()
                        .unwrap()
                })
                .collect();
            env.append(files).await;
        }
        let facts = data_manifest_facts(&env.table().await).await.unwrap();
        let length: u64 = facts.iter().map(|f| f.length).sum();
        ManifestSettings {
            min_manifests: 0,
            target_size_bytes: length / 24 * 3,
        }
    }

    fn part_of(p: i32) -> Struct {
        Struct::from_iter([Some(Literal::int(p))])
    }

    /// Files under `dir`, recursively.
    fn files_under(dir: &std::path::Path) -> std::collections::BTreeSet<std::path::PathBuf> {
        let mut out = std::collections::BTreeSet::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    out.insert(path);
                }
            }
        }
        out
    }

    fn table_dir(table: &Table) -> std::path::PathBuf {
        let location = table.metadata().location();
        location.strip_prefix("file://").unwrap_or(location).into()
    }

    #[tokio::test]
    async fn many_outputs_read_each_input_twice_spill_and_keep_every_entry() {
        use crate::commit::tests::Env;
        let env = Env::new().await;
        let settings = spread_table(&env).await;
        let before = env.table().await;
        let ids_before = entry_ids(&before).await;
        assert_eq!(ids_before.len(), 8);
        let loader = Arc::new(RecordingLoader::new(&before));
        let spill_parent = tempfile::tempdir().unwrap();
        // Buffers of at most two entries, three held in all: nearly every entry is spilled.
        let op = RewriteManifestsOp {
            settings,
            summary_properties: HashMap::new(),
            spill: SpillOptions {
                held: 3,
                chunk: 2,
                parent: Some(spill_parent.path().to_path_buf()),
                in_memory: 0,
            },
            loader: Some(loader.clone()),
        };
        let outcome = env.commit(&op).await.unwrap();
        assert_eq!(outcome.summary["manifests-replaced"], "8");
        assert_eq!(outcome.summary["manifests-created"], "8");
        assert_eq!(outcome.summary["entries-processed"], "24");

        // Each input is read twice (counts, then routing), however many outputs there are.
        let per_path = loader.loads_per_path();
        assert_eq!(per_path.len(), 8);
        assert!(per_path.values().all(|n| *n == 2), "{per_path:?}");

        let after = entry_ids(&env.table().await).await;
        assert_eq!(after.len(), 8);
        assert!(after.iter().all(|m| m.len() == 3), "{after:?}");
        // Value order within and across the outputs.
        let flat: Vec<EntryIds> = after.into_iter().flatten().collect();
        assert!(flat.windows(2).all(|w| w[0].0 <= w[1].0), "{flat:?}");
        // Every entry kept, with its snapshot id and sequence numbers.
        let mut kept = flat.clone();
        kept.sort();
        let mut expected: Vec<EntryIds> = ids_before.into_iter().flatten().collect();
        expected.sort();
        assert_eq!(kept, expected);
        assert!(files_under(spill_parent.path()).is_empty());
    }

    #[tokio::test]
    async fn spill_writes_chunks_and_returns_complete_outputs() {
        use iceberg::spec::{
            DataContentType, DataFileBuilder, DataFileFormat, ManifestEntry, ManifestStatus,
            NestedField, PrimitiveType, Schema, Transform, Type, UnboundPartitionSpec,
        };
        let schema = Arc::new(
            Schema::builder()
                .with_fields(vec![
                    NestedField::required(1, "part", Type::Primitive(PrimitiveType::Int)).into(),
                ])
                .build()
                .unwrap(),
        );
        let spec = UnboundPartitionSpec::builder()
            .add_partition_field(1, "part", Transform::Identity)
            .unwrap()
            .build()
            .bind(schema.clone())
            .unwrap();
        let parent = tempfile::tempdir().unwrap();
        let options = SpillOptions {
            held: 4,
            chunk: 3,
            parent: Some(parent.path().to_path_buf()),
            in_memory: 0,
        };
        // Twelve entries, outputs of five: 5, 5, 2. Output 0 gets partitions 3, 1, 2 interleaved.
        let routes = [0, 1, 0, 2, 1, 0, 1, 2, 0, 1, 0, 1];
        let mut spill = Spill::new(options, schema, spec, 12, 5);
        let mut done = Vec::new();
        for (i, index) in routes.into_iter().enumerate() {
            let file = DataFileBuilder::default()
                .content(DataContentType::Data)
                .file_path(format!("f{i}"))
                .file_format(DataFileFormat::Parquet)
                .partition(part_of(3 - (i % 3) as i32))
                .partition_spec_id(0)
                .record_count(1)
                .file_size_in_bytes(10)
                .build()
                .unwrap();
            let entry = ManifestEntry::builder()
                .status(ManifestStatus::Added)
                .snapshot_id(100 + i as i64)
                .sequence_number(i as i64)
                .data_file(file)
                .build();
            let routed = Routed::new(Arc::new(entry), 7).unwrap();
            if spill.push(index, routed).await.unwrap() {
                done.push((index, spill.take(index).await.unwrap()));
            }
        }
        spill.finish().unwrap();
        assert!(spill.chunks_written() >= 2, "{}", spill.chunks_written());
        // Outputs complete in the order their last entry arrives.
        assert_eq!(done.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [2, 0, 1]);
        let (_, out0) = &mut done[1];
        sort_by_partition(out0);
        let paths: Vec<(i32, &str, i64, i64, i64)> = out0
            .iter()
            .map(|r| {
                let p = match &r.entry.data_file().partition()[0] {
                    Some(Literal::Primitive(iceberg::spec::PrimitiveLiteral::Int(p))) => *p,
                    other => panic!("unexpected partition {other:?}"),
                };
                (p, r.entry.file_path(), r.snapshot_id, r.seq, r.file_seq)
            })
            .collect();
        // Entries 0, 2, 5, 8, 10 (partitions 3, 1, 1, 1, 2): by value, read order kept within.
        assert_eq!(
            paths,
            [
                (1, "f2", 102, 2, 2),
                (1, "f5", 105, 5, 5),
                (1, "f8", 108, 8, 8),
                (2, "f10", 110, 10, 10),
                (3, "f0", 100, 0, 0),
            ]
        );
        // Chunks are deleted as their output is written; the directory when the spill is dropped.
        drop(spill);
        assert!(files_under(parent.path()).is_empty());
    }

    #[tokio::test]
    async fn spill_and_outputs_are_removed_on_error_and_cancellation() {
        use crate::commit::tests::Env;
        let env = Env::new().await;
        let settings = spread_table(&env).await;
        let table = env.table().await;
        let table_files = files_under(&table_dir(&table));
        let spill_parent = tempfile::tempdir().unwrap();
        let spill = SpillOptions {
            held: 3,
            chunk: 2,
            parent: Some(spill_parent.path().to_path_buf()),
            in_memory: 0,
        };
        // Load 15 is in the routing pass (loads 9-16, four in flight): at least three manifests
        // (nine entries, over the three held) were routed, so chunks were written.
        for (fail_at, hang_at) in [(Some(15), None), (None, Some(15))] {
            let mut loader = RecordingLoader::new(&table);
            (loader.fail_at, loader.hang_at) = (fail_at, hang_at);
            let op = RewriteManifestsOp {
                settings,
                summary_properties: HashMap::new(),
                spill: spill.clone(),
                loader: Some(Arc::new(loader)),
            };
            let run = env.commit(&op);
            match tokio::time::timeout(std::time::Duration::from_secs(5), run).await {
                Ok(result) => {
                    let err = result.unwrap_err().to_string();
                    assert!(err.contains("injected read failure"), "{err}");
                    assert!(fail_at.is_some());
                    // The outputs already written were deleted with the failed attempt.
                    assert_eq!(files_under(&table_dir(&table)), table_files);
                }
                // Cancelled: the future was dropped in the middle of the routing. (Outputs
                // already written stay as orphans, as for any cancelled commit attempt.)
                Err(_) => assert!(hang_at.is_some()),
            }
            assert!(files_under(spill_parent.path()).is_empty());
        }
        let now = env.table().await;
        assert_eq!(
            now.metadata().current_snapshot_id(),
            table.metadata().current_snapshot_id()
        );
    }

    #[test]
    fn large_manifests_are_read_one_at_a_time() {
        use ManifestContentType::Data;
        let with = |counts: &[u32]| {
            counts
                .iter()
                .map(|n| manifest("m", Data, 0, *n))
                .collect::<Vec<_>>()
        };
        // Small manifests: the full concurrency.
        assert_eq!(
            read_concurrency(&with(&[10, 20, 30])),
            MANIFEST_READ_CONCURRENCY
        );
        assert_eq!(read_concurrency(&[]), MANIFEST_READ_CONCURRENCY);
        // The largest decides: two of 16 000 (plus the one deleted entry) fit, not three.
        assert_eq!(read_concurrency(&with(&[10, 16_000])), 2);
        // Over the budget: alone.
        assert_eq!(read_concurrency(&with(&[100_000, 5])), 1);
        // Counts missing from the list: alone.
        let mut unknown = with(&[5]);
        unknown[0].added_files_count = None;
        assert_eq!(read_concurrency(&unknown), 1);
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
