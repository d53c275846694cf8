//! Candidate collection: the live data files of a snapshot that a `where` filter selects, in
//! scan order, each as a compact [`CandidateFile`] for the planner, and the scan tasks of a
//! group's files built only when the group is rewritten ([`Candidates::tasks_for`]).
//!
//! icemaint walks the manifests itself ([`read_manifests`]: concurrently, bounded by entries)
//! and builds the tasks from that walk; iceberg's scan runs only for what the walk cannot decide
//! (a `where` filter's selection, and which delete files apply to which data file). See the
//! parent module's docs for the iceberg-rust 0.10.1 details this works around.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use iceberg::expr::Predicate;
use iceberg::metadata_columns::RESERVED_FIELD_ID_DELETE_FILE_PATH;
use iceberg::scan::{FileScanTask, FileScanTaskDeleteFile};
use iceberg::spec::{
    DEFAULT_SCHEMA_NAME_MAPPING, DataContentType, DataFile, DataFileFormat, Literal,
    ManifestContentType, NameMapping, PartitionSpec, PartitionSpecRef, PrimitiveLiteral, Schema,
    SchemaRef, Struct, TableMetadata,
};
use iceberg::table::Table;

use super::super::plan::{CandidateFile, FileGroup, SharedStr};
use super::{ENCRYPTION_KEY_ID, RewriteError, committed, property_error};
use crate::catalog::walk::{MANIFEST_ENTRY_BUDGET, manifest_weight};

/// How many manifests are read at once when walking a snapshot.
const MANIFEST_CONCURRENCY: usize = 8;

/// The live data files of a snapshot selected by the filter, ready for [`super::plan::plan`].
///
/// Per file only the [`CandidateFile`] is kept (~100 bytes and the path); its unfiltered scan
/// task is built when its group is rewritten ([`Candidates::tasks_for`]) from what the files
/// share: the snapshot's [`TaskTemplate`], the partition tuple of each distinct partition, and
/// the delete files of the few files that have any.
#[derive(Debug, Clone)]
pub struct Candidates {
    pub snapshot_id: i64,
    /// Selected files in scan order: the snapshot's manifest-list order, then entry order within
    /// each manifest (Java's order when it plans the manifests one after the other).
    pub files: Vec<CandidateFile>,
    /// Builds the selected files' scan tasks; shared, so a group's tasks can be built in the
    /// group's own rewrite task.
    source: Arc<TaskSource>,
    /// Live data files in the snapshot, selected or not.
    pub total_data_files: usize,
    /// Selected files that are not Parquet (Avro/ORC data files cannot be read by iceberg-rust):
    /// left out of `files`.
    pub skipped_non_parquet: Vec<String>,
}

impl Candidates {
    /// The scan tasks of a planned group, in the group's file order.
    pub fn tasks_for(&self, group: &FileGroup) -> Result<Vec<FileScanTask>, RewriteError> {
        self.source.tasks_for(group)
    }

    /// What [`Self::tasks_for`] builds the tasks from, to build them later without borrowing the
    /// candidates.
    pub fn task_source(&self) -> Arc<TaskSource> {
        Arc::clone(&self.source)
    }

    /// The unfiltered scan task of every selected file, by path. Builds them all at once: for
    /// tests and small tables; a rewrite takes one group's with [`Self::tasks_for`].
    pub fn tasks(&self) -> HashMap<String, FileScanTask> {
        self.files
            .iter()
            .map(|f| {
                let task = self
                    .source
                    .task(f)
                    .expect("every candidate has a partition");
                (task.data_file_path.clone(), task)
            })
            .collect()
    }
}

/// What the scan tasks of a snapshot's candidates are built from (see [`Candidates`]).
pub struct TaskSource {
    template: TaskTemplate,
    /// Each distinct `(spec, tuple)` among the candidates, by the address of its rendering:
    /// [`collect_candidates`] renders each tuple into its own allocation, shared by its files'
    /// [`CandidateFile::partition`] (two tuples that render alike still get two), so a file's
    /// tuple is found without a per-file index. The entry holds a clone of the rendering, which
    /// keeps the address from being reused.
    partitions: HashMap<usize, TaskPartition>,
    /// The delete files applying to a data file, for data files that have any.
    deletes: HashMap<SharedStr, Vec<FileScanTaskDeleteFile>>,
}

struct TaskPartition {
    rendered: SharedStr,
    spec: PartitionSpecRef,
    tuple: Struct,
}

impl std::fmt::Debug for TaskSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskSource")
            .field("partitions", &self.partitions.len())
            .field("files_with_deletes", &self.deletes.len())
            .finish_non_exhaustive()
    }
}

impl TaskSource {
    fn key(rendered: &SharedStr) -> usize {
        rendered.as_ptr() as usize
    }

    /// The scan tasks of a planned group, in the group's file order.
    pub fn tasks_for(&self, group: &FileGroup) -> Result<Vec<FileScanTask>, RewriteError> {
        group.files.iter().map(|f| self.task(f)).collect()
    }

    /// The task reading the whole of `file`, one of the candidates.
    fn task(&self, file: &CandidateFile) -> Result<FileScanTask, RewriteError> {
        let partition = self
            .partitions
            .get(&Self::key(&file.partition))
            .filter(|p| {
                SharedStr::same_allocation(&p.rendered, &file.partition)
                    && p.spec.spec_id() == file.spec_id
            })
            .ok_or_else(|| RewriteError::MissingTask(file.path.to_string()))?;
        let deletes = self.deletes.get(&file.path).cloned().unwrap_or_default();
        Ok(self.template.task(file, partition, deletes))
    }
}

pub(super) fn tasks_for(
    group: &FileGroup,
    tasks: &HashMap<String, FileScanTask>,
) -> Result<Vec<FileScanTask>, RewriteError> {
    group
        .paths()
        .map(|p| {
            tasks
                .get(p)
                .cloned()
                .ok_or_else(|| RewriteError::MissingTask(p.to_string()))
        })
        .collect()
}

/// What the manifests say about one live data file.
pub(super) struct DataMeta {
    pub(super) path: SharedStr,
    pub(super) spec_id: i32,
    /// Index into [`ManifestWalk::partitions`].
    pub(super) partition: u32,
    record_count: u64,
    size_bytes: u64,
    format: DataFileFormat,
    /// The entry's data sequence number (for [`committed::WriterCommits`]).
    sequence_number: Option<i64>,
}

/// The live files of a snapshot, as its manifests list them.
pub(super) struct ManifestWalk {
    /// Live data files in scan order: manifest-list order, then entry order within the manifest.
    pub(super) data: Vec<DataMeta>,
    /// The distinct partition tuples of `data`, each once.
    pub(super) partitions: Vec<Struct>,
    /// Live delete files by path.
    deletes: HashMap<String, DeleteMeta>,
}

/// What the manifests say about one live delete file.
struct DeleteMeta {
    content: DataContentType,
    record_count: u64,
    /// The single data file this delete file applies to, when it is file-scoped.
    referenced_data_file: Option<String>,
}

/// Java's `ContentFileUtil.referencedDataFile`: the explicit field, or for position deletes whose
/// `file_path` bounds are equal, that path.
pub(super) fn referenced_data_file(df: &DataFile) -> Option<String> {
    if let Some(r) = df.referenced_data_file() {
        return Some(r);
    }
    if df.content_type() != DataContentType::PositionDeletes {
        return None;
    }
    let lower = df.lower_bounds().get(&RESERVED_FIELD_ID_DELETE_FILE_PATH)?;
    let upper = df.upper_bounds().get(&RESERVED_FIELD_ID_DELETE_FILE_PATH)?;
    if lower != upper {
        return None;
    }
    match lower.literal() {
        PrimitiveLiteral::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// Refuses what icemaint cannot rewrite safely, before any file is read.
pub(super) fn check_table_supported(
    metadata: &TableMetadata,
    snapshot_id: i64,
) -> Result<(), RewriteError> {
    if metadata.properties().contains_key(ENCRYPTION_KEY_ID) {
        return Err(RewriteError::Encrypted(format!(
            "table property {ENCRYPTION_KEY_ID} is set"
        )));
    }
    if metadata.encryption_keys_iter().len() > 0 {
        return Err(RewriteError::Encrypted(
            "table metadata holds encryption keys".to_string(),
        ));
    }
    let snapshot = metadata
        .snapshot_by_id(snapshot_id)
        .ok_or(RewriteError::SnapshotNotFound(snapshot_id))?;
    if snapshot.encryption_key_id().is_some() {
        return Err(RewriteError::Encrypted(format!(
            "snapshot {snapshot_id} has an encrypted manifest list"
        )));
    }
    Ok(())
}

/// The current spec's all-null partition, rendered: where the planner groups files of older specs
/// (Java's `emptyStruct`).
pub fn current_null_partition(metadata: &TableMetadata) -> String {
    let spec = metadata.default_partition_spec();
    let nulls = Struct::from_iter(spec.fields().iter().map(|_| None::<Literal>));
    render_partition(spec, metadata.current_schema(), &nulls)
}

/// Renders a partition tuple canonically: `name=value` pairs joined by `/`, values in the
/// transform's human form (`ts_day=2025-01-02`), `null` for nulls, and `%`, `/`, `=` escaped so
/// distinct tuples render differently. Empty for an unpartitioned spec.
pub fn render_partition(spec: &PartitionSpec, schema: &Schema, data: &Struct) -> String {
    fn escape(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            match c {
                '%' => out.push_str("%25"),
                '/' => out.push_str("%2F"),
                '=' => out.push_str("%3D"),
                c if c.is_control() => out.push_str(&format!("%{:02X}", c as u32)),
                c => out.push(c),
            }
        }
        out
    }
    // The partition type needs the source columns; a spec over a since-dropped column cannot be
    // typed with the current schema, so fall back to the raw literal.
    let types = spec.partition_type(schema).ok();
    spec.fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let value = data.fields().get(i).and_then(|v| v.as_ref());
            let text = match (&types, value) {
                (_, None) => "null".to_string(),
                (Some(t), Some(v)) if i < t.fields().len() => field
                    .transform
                    .to_human_string(&t.fields()[i].field_type, Some(v)),
                (_, Some(v)) => raw_literal(v),
            };
            format!("{}={}", escape(&field.name), escape(&text))
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn raw_literal(v: &Literal) -> String {
    match v {
        Literal::Primitive(PrimitiveLiteral::String(s)) => s.clone(),
        Literal::Primitive(PrimitiveLiteral::Int(i)) => i.to_string(),
        Literal::Primitive(PrimitiveLiteral::Long(i)) => i.to_string(),
        Literal::Primitive(PrimitiveLiteral::Boolean(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

/// Walks the snapshot's manifests: live data files with their spec, live delete files with their
/// scope. Refuses deletion vectors and encrypted files.
pub(super) async fn read_manifests(
    table: &Table,
    snapshot_id: i64,
) -> Result<ManifestWalk, RewriteError> {
    let metadata = table.metadata();
    let snapshot = metadata
        .snapshot_by_id(snapshot_id)
        .ok_or(RewriteError::SnapshotNotFound(snapshot_id))?;
    let list = table.manifest_list_reader(snapshot).load().await?;
    let file_io = table.file_io().clone();
    if list.entries().iter().any(|m| m.key_metadata.is_some()) {
        return Err(RewriteError::Encrypted(
            "a manifest is encrypted".to_string(),
        ));
    }
    // A few manifests are read at once and processed in manifest-list order, so only a few are in
    // memory and the data files keep their scan order. The entry budget bounds how many decoded
    // entries are held at once; its semaphore is fair, so manifests get their permits in list
    // order and the one processed next is never starved by those after it.
    let budget = Arc::new(tokio::sync::Semaphore::new(MANIFEST_ENTRY_BUDGET as usize));
    let mut manifests = futures::stream::iter(list.entries().iter().cloned())
        .map(|m| {
            let file_io = file_io.clone();
            let budget = Arc::clone(&budget);
            async move {
                let permit = budget
                    .acquire_many_owned(manifest_weight(&m))
                    .await
                    .expect("the budget is never closed");
                let manifest = m.load_manifest(&file_io).await?;
                Ok::<_, iceberg::Error>((m, manifest, permit))
            }
        })
        .buffered(MANIFEST_CONCURRENCY);

    let mut data = Vec::new();
    let mut tuples = Tuples::default();
    let mut deletes = HashMap::new();
    let mut deletion_vectors = 0;
    while let Some((manifest_file, manifest, _permit)) = manifests.try_next().await? {
        // Entries are taken apart as they come and the decoded manifest dropped right after, so
        // only the few manifests in flight are held, never the whole snapshot's entries.
        for entry in manifest.entries() {
            if !entry.is_alive() {
                continue;
            }
            let df = entry.data_file();
            if df.key_metadata().is_some() {
                return Err(RewriteError::Encrypted(format!(
                    "file {} is encrypted",
                    df.file_path()
                )));
            }
            match manifest_file.content {
                ManifestContentType::Data => data.push(DataMeta {
                    path: SharedStr::from(df.file_path()),
                    spec_id: manifest_file.partition_spec_id,
                    partition: tuples.index(manifest_file.partition_spec_id, df.partition()),
                    record_count: df.record_count(),
                    size_bytes: df.file_size_in_bytes(),
                    format: df.file_format(),
                    sequence_number: entry.sequence_number(),
                }),
                ManifestContentType::Deletes => {
                    if df.file_format() == DataFileFormat::Puffin {
                        deletion_vectors += 1;
                    }
                    deletes.insert(
                        df.file_path().to_string(),
                        DeleteMeta {
                            content: df.content_type(),
                            record_count: df.record_count(),
                            referenced_data_file: referenced_data_file(df),
                        },
                    );
                }
            }
        }
    }
    if deletion_vectors > 0 {
        return Err(RewriteError::DeletionVectors {
            count: deletion_vectors,
        });
    }
    Ok(ManifestWalk {
        data,
        partitions: tuples.all,
        deletes,
    })
}

/// Partition tuples interned as the walk meets them: a table of a million files has a few
/// thousand distinct tuples, each held once.
#[derive(Default)]
struct Tuples {
    all: Vec<Struct>,
    /// Per spec id, each tuple's index in `all`.
    index: HashMap<i32, HashMap<Struct, u32>>,
}

impl Tuples {
    fn index(&mut self, spec_id: i32, tuple: &Struct) -> u32 {
        let by_tuple = self.index.entry(spec_id).or_default();
        if let Some(&i) = by_tuple.get(tuple) {
            return i;
        }
        let i = u32::try_from(self.all.len()).expect("fewer than 2^32 partitions");
        self.all.push(tuple.clone());
        by_tuple.insert(tuple.clone(), i);
        i
    }
}

/// `table` without iceberg's manifest cache, for planning scans. The cache is bounded at 32 MiB
/// by a weigher that counts a `Manifest`'s header but not its entries, so it keeps every decoded
/// manifest a scan touched for as long as the table lives (through the whole rewrite): hundreds
/// of MiB on a table of 100 000 files. A scan reads each manifest once; only a `where` filter's
/// second scan reads them again.
fn without_manifest_cache(table: &Table) -> Result<Table, RewriteError> {
    let mut builder = Table::builder()
        .identifier(table.identifier().clone())
        .file_io(table.file_io().clone())
        .metadata(table.metadata_ref())
        .readonly(true)
        .disable_cache()
        .runtime(iceberg::Runtime::try_current()?);
    if let Some(location) = table.metadata_location() {
        builder = builder.metadata_location(location);
    }
    Ok(builder.build()?)
}

/// Plans a scan of `snapshot_id` and returns one task per data file path.
pub(super) async fn scan_tasks(
    table: &Table,
    snapshot_id: i64,
    filter: Option<Predicate>,
) -> Result<HashMap<String, FileScanTask>, RewriteError> {
    let table = without_manifest_cache(table)?;
    let mut builder = table.scan().snapshot_id(snapshot_id);
    if let Some(filter) = filter {
        builder = builder.with_filter(filter);
    }
    let scan = builder.build()?;
    let mut tasks: HashMap<String, FileScanTask> = HashMap::new();
    let mut stream = scan.plan_files().await?;
    while let Some(task) = stream.try_next().await? {
        match tasks.get_mut(&task.data_file_path) {
            // A split file: keep one task covering the whole file.
            Some(existing) => {
                existing.start = 0;
                existing.length = existing.file_size_in_bytes;
                existing.record_count = None;
            }
            None => {
                tasks.insert(task.data_file_path.clone(), task);
            }
        }
    }
    Ok(tasks)
}

/// What every unfiltered scan task of a snapshot shares, built once as iceberg 0.10.1's scan
/// builds it (`TableScanBuilder::build`: the snapshot's schema, all its top-level columns, the
/// table's name mapping, case-sensitive binding).
struct TaskTemplate {
    schema: SchemaRef,
    field_ids: Vec<i32>,
    name_mapping: Option<Arc<NameMapping>>,
}

impl TaskTemplate {
    fn new(metadata: &TableMetadata, snapshot_id: i64) -> Result<Self, RewriteError> {
        let snapshot = metadata
            .snapshot_by_id(snapshot_id)
            .ok_or(RewriteError::SnapshotNotFound(snapshot_id))?;
        let schema = snapshot.schema(metadata)?;
        let field_ids = schema.as_struct().fields().iter().map(|f| f.id).collect();
        let name_mapping = match metadata.properties().get(DEFAULT_SCHEMA_NAME_MAPPING) {
            None => None,
            Some(raw) => Some(Arc::new(serde_json::from_str::<NameMapping>(raw).map_err(
                |e| property_error(DEFAULT_SCHEMA_NAME_MAPPING, raw, e.to_string()),
            )?)),
        };
        Ok(TaskTemplate {
            schema,
            field_ids,
            name_mapping,
        })
    }

    /// The task reading the whole of one (Parquet) candidate file. The spec is set (0.10.1's
    /// scan leaves it unset), so identity-partition columns missing from imported files are
    /// filled from the partition tuple.
    fn task(
        &self,
        file: &CandidateFile,
        partition: &TaskPartition,
        deletes: Vec<FileScanTaskDeleteFile>,
    ) -> FileScanTask {
        FileScanTask {
            file_size_in_bytes: file.size_bytes,
            start: 0,
            length: file.size_bytes,
            record_count: Some(file.record_count),
            data_file_path: file.path.to_string(),
            data_file_format: DataFileFormat::Parquet,
            schema: self.schema.clone(),
            project_field_ids: self.field_ids.clone(),
            predicate: None,
            deletes,
            partition: Some(partition.tuple.clone()),
            partition_spec: Some(partition.spec.clone()),
            name_mapping: self.name_mapping.clone(),
            case_sensitive: true,
        }
    }
}

/// The delete files iceberg's scan attaches to each data file, by data file path (an empty list
/// for a data file without any). Which delete applies to which data file (sequence numbers,
/// partitions, global equality deletes) is the scan's delete index's decision; only snapshots
/// with live delete files need it.
async fn scan_deletes(
    table: &Table,
    snapshot_id: i64,
) -> Result<HashMap<String, Vec<FileScanTaskDeleteFile>>, RewriteError> {
    Ok(scan_tasks(table, snapshot_id, None)
        .await?
        .into_iter()
        .map(|(path, task)| (path, task.deletes))
        .collect())
}

/// iceberg 0.10.1 attaches every position delete file of the partition to every data file in
/// it; drops those scoped to another data file than `path` (Java's delete index does the same),
/// so delete counts match Java and the reader does not load deletes that cannot apply. Returns
/// the rows the remaining file-scoped position deletes remove, at most `record_count`.
fn scope_deletes(
    path: &str,
    attached: &mut Vec<FileScanTaskDeleteFile>,
    deletes: &HashMap<String, DeleteMeta>,
    record_count: u64,
) -> u64 {
    attached.retain(|d| {
        deletes.get(&d.file_path).is_none_or(|dm| {
            dm.content != DataContentType::PositionDeletes
                || dm.referenced_data_file.as_deref().is_none_or(|r| r == path)
        })
    });
    let mut deleted_records = 0u64;
    for d in attached.iter() {
        if let Some(dm) = deletes.get(&d.file_path)
            && dm.content == DataContentType::PositionDeletes
            && dm.referenced_data_file.as_deref() == Some(path)
        {
            deleted_records = deleted_records.saturating_add(dm.record_count);
        }
    }
    deleted_records.min(record_count)
}

/// Collects the data files of `snapshot_id` that `filter` selects (files that may contain
/// matching rows, by partition values and column metrics), with their unfiltered scan tasks.
///
/// The tasks are built from icemaint's own manifest walk; iceberg's scan decodes every manifest
/// again (and clones each entry with its metrics), so it only runs for what the walk cannot
/// decide: the `where` filter's selection and, when the snapshot has live delete files, which
/// of them apply to which data file.
pub async fn collect_candidates(
    table: &Table,
    snapshot_id: i64,
    filter: Option<Predicate>,
) -> Result<Candidates, RewriteError> {
    let metadata = table.metadata();
    check_table_supported(metadata, snapshot_id)?;
    let ManifestWalk {
        data,
        partitions: tuples,
        deletes,
    } = read_manifests(table, snapshot_id).await?;
    let selected: Option<HashSet<String>> = match filter {
        Some(f) => Some(
            scan_tasks(table, snapshot_id, Some(f))
                .await?
                .into_keys()
                .collect(),
        ),
        None => None,
    };
    let mut attached = match deletes.is_empty() {
        true => None,
        false => Some(scan_deletes(table, snapshot_id).await?),
    };
    let template = TaskTemplate::new(metadata, snapshot_id)?;
    let schema = metadata.current_schema();
    let writer_commits = committed::WriterCommits::new(metadata);
    let total_data_files = data.len();
    let mut files = Vec::with_capacity(data.len());
    let mut seen: HashSet<SharedStr> = HashSet::with_capacity(data.len());
    let mut skipped_non_parquet = Vec::new();
    let mut with_deletes = HashMap::new();
    // Each tuple rendered once, into the allocation its files share (see `TaskSource`).
    let mut rendered: Vec<Option<SharedStr>> = vec![None; tuples.len()];
    let mut partitions: HashMap<usize, TaskPartition> = HashMap::new();
    // Scan order, as Java's planner sees the files when it plans the manifests sequentially: the
    // planner packs in this order (`super::plan`).
    for meta in data {
        if seen.contains(&meta.path) || selected.as_ref().is_some_and(|s| !s.contains(&*meta.path))
        {
            continue;
        }
        if meta.format != DataFileFormat::Parquet {
            skipped_non_parquet.push(meta.path.to_string());
            continue;
        }
        let spec = metadata
            .partition_spec_by_id(meta.spec_id)
            .ok_or(RewriteError::SpecNotFound(meta.spec_id))?;
        let tuple = &tuples[meta.partition as usize];
        let partition = rendered[meta.partition as usize]
            .get_or_insert_with(|| {
                let r = SharedStr::from(render_partition(spec, schema, tuple));
                partitions.insert(
                    TaskSource::key(&r),
                    TaskPartition {
                        rendered: r.clone(),
                        spec: spec.clone(),
                        tuple: tuple.clone(),
                    },
                );
                r
            })
            .clone();
        let mut attached_deletes = Vec::new();
        if let Some(attached) = &mut attached {
            attached_deletes = attached.remove(&*meta.path).ok_or_else(|| {
                iceberg::Error::new(
                    iceberg::ErrorKind::DataInvalid,
                    format!(
                        "a live manifest entry lists {}, which the scan does not return",
                        meta.path
                    ),
                )
            })?;
        }
        let deleted_records = scope_deletes(
            &meta.path,
            &mut attached_deletes,
            &deletes,
            meta.record_count,
        );
        let delete_file_count = attached_deletes.len();
        if !attached_deletes.is_empty() {
            with_deletes.insert(meta.path.clone(), attached_deletes);
        }
        seen.insert(meta.path.clone());
        files.push(CandidateFile {
            path: meta.path,
            size_bytes: meta.size_bytes,
            record_count: meta.record_count,
            spec_id: meta.spec_id,
            partition,
            delete_file_count,
            deleted_records,
            committed_ms: writer_commits.time_of(meta.sequence_number),
        });
    }
    Ok(Candidates {
        snapshot_id,
        files,
        source: Arc::new(TaskSource {
            template,
            partitions,
            deletes: with_deletes,
        }),
        total_data_files,
        skipped_non_parquet,
    })
}
