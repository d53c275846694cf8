//! End-to-end tests of candidate collection and group rewriting on local-filesystem tables
//! created with iceberg-rust itself (memory catalog, local storage).

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{ArrayRef, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray};
use iceberg::io::LocalFsStorageFactory;
use iceberg::memory::{MEMORY_CATALOG_WAREHOUSE, MemoryCatalog, MemoryCatalogBuilder};
use iceberg::spec::{
    DataFileBuilder, ManifestListWriter, ManifestWriterBuilder, NestedField, Operation,
    PrimitiveType, Snapshot, Summary, Transform, Type, UnboundPartitionSpec,
};
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::file_writer::{FileWriter, FileWriterBuilder, ParquetWriterBuilder};
use iceberg::{
    Catalog, CatalogBuilder, MetadataLocation, NamespaceIdent, TableCreation, TableIdent,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tempfile::TempDir;

use futures::StreamExt;
use iceberg::metadata_columns::RESERVED_FIELD_ID_DELETE_FILE_PATH;
use iceberg::scan::FileScanTaskDeleteFile;
use iceberg::spec::{
    DEFAULT_SCHEMA_NAME_MAPPING, DataContentType, PartitionSpec, PrimitiveLiteral,
};

use super::candidates::{check_table_supported, read_manifests, referenced_data_file, scan_tasks};
use super::read::{READ_AHEAD_MAX_FILES, is_local_path, read_ahead_files};
use super::*;
use crate::compaction::filter::parse_where;
use crate::compaction::options::{self, CompactionOptions};
use crate::compaction::plan::{CandidateFile, GroupReason, PlanSettings, plan};

/// 2025-01-01 in days since the epoch.
const DAY0: i64 = 20_089;
const MICROS_PER_DAY: i64 = 86_400_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Row {
    id: i64,
    org_id: i32,
    ts: i64,
    name: Option<String>,
}

impl Row {
    fn new(id: i64, org_id: i32, day: i64) -> Row {
        Row {
            id,
            org_id,
            // Spread over the day, deterministic.
            ts: (DAY0 + day) * MICROS_PER_DAY + (id * 7_919_000) % MICROS_PER_DAY,
            name: (id % 5 != 0).then(|| format!("name-{id}-{}", "x".repeat((id % 13) as usize))),
        }
    }

    fn day(&self) -> i32 {
        (self.ts.div_euclid(MICROS_PER_DAY)) as i32
    }
}

/// Order-independent checksum of a multiset of rows.
pub(super) fn checksum(rows: &[Row]) -> (usize, u64) {
    let sum = rows.iter().fold(0u64, |acc, r| {
        let mut h = DefaultHasher::new();
        r.hash(&mut h);
        acc.wrapping_add(h.finish())
    });
    (rows.len(), sum)
}

fn schema() -> Schema {
    Schema::builder()
        .with_schema_id(0)
        .with_fields(vec![
            NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
            NestedField::required(2, "org_id", Type::Primitive(PrimitiveType::Int)).into(),
            NestedField::required(3, "ts", Type::Primitive(PrimitiveType::Timestamptz)).into(),
            NestedField::optional(4, "name", Type::Primitive(PrimitiveType::String)).into(),
        ])
        .build()
        .unwrap()
}

pub(super) fn spec_org_day() -> UnboundPartitionSpec {
    UnboundPartitionSpec::builder()
        .add_partition_field(2, "org_id", Transform::Identity)
        .unwrap()
        .add_partition_field(3, "ts_day", Transform::Day)
        .unwrap()
        .build()
}

fn spec_org() -> UnboundPartitionSpec {
    UnboundPartitionSpec::builder()
        .add_partition_field(2, "org_id", Transform::Identity)
        .unwrap()
        .build()
}

fn to_batch(schema: &Schema, rows: &[Row]) -> RecordBatch {
    let arrow_schema = Arc::new(iceberg::arrow::schema_to_arrow_schema(schema).unwrap());
    let ts_type = arrow_schema.field(2).data_type().clone();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.id))),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.org_id))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.ts))
                .with_data_type(ts_type),
        ),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.name.clone()))),
    ];
    RecordBatch::try_new(arrow_schema, columns).unwrap()
}

/// iceberg 0.10.1 has no getter for a data file's spec id; its `Debug` output shows it.
fn spec_id_of(d: &DataFile) -> i32 {
    let dbg = format!("{d:?}");
    let rest = &dbg[dbg.find("partition_spec_id: ").unwrap() + "partition_spec_id: ".len()..];
    rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap()]
        .parse()
        .unwrap()
}

fn local(path: &str) -> &str {
    path.strip_prefix("file://")
        .or_else(|| path.strip_prefix("file:"))
        .unwrap_or(path)
}

/// Reads a Parquet data file back with parquet-rs alone (not iceberg's reader).
pub(super) fn read_rows(path: &str) -> Vec<Row> {
    let file = std::fs::File::open(local(path)).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let id = batch
            .column_by_name("id")
            .unwrap()
            .as_primitive::<Int64Type>();
        let org = batch
            .column_by_name("org_id")
            .unwrap()
            .as_primitive::<Int32Type>();
        let ts = batch
            .column_by_name("ts")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        let name = batch.column_by_name("name").unwrap().as_string::<i32>();
        for i in 0..batch.num_rows() {
            rows.push(Row {
                id: id.value(i),
                org_id: org.value(i),
                ts: ts.value(i),
                name: (!arrow_array::Array::is_null(name, i)).then(|| name.value(i).to_string()),
            });
        }
    }
    rows
}

fn compressions(path: &str) -> Vec<Compression> {
    let file = std::fs::File::open(local(path)).unwrap();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    builder
        .metadata()
        .row_groups()
        .iter()
        .flat_map(|rg| rg.columns().iter().map(|c| c.compression()))
        .collect()
}

/// Every Parquet file under `dir`.
pub(super) fn parquet_files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "parquet") {
                out.push(p.to_string_lossy().to_string());
            }
        }
    }
    out.sort();
    out
}

pub(super) struct Fixture {
    pub(super) dir: TempDir,
    catalog: MemoryCatalog,
    pub(super) table: Table,
}

async fn new_catalog(dir: &TempDir) -> MemoryCatalog {
    MemoryCatalogBuilder::default()
        .with_storage_factory(Arc::new(LocalFsStorageFactory))
        .load(
            "test",
            HashMap::from([(
                MEMORY_CATALOG_WAREHOUSE.to_string(),
                dir.path().to_str().unwrap().to_string(),
            )]),
        )
        .await
        .unwrap()
}

pub(super) async fn fixture(
    spec: UnboundPartitionSpec,
    properties: HashMap<String, String>,
) -> Fixture {
    let dir = TempDir::new().unwrap();
    let catalog = new_catalog(&dir).await;
    let ns = NamespaceIdent::new("ns".to_string());
    catalog.create_namespace(&ns, HashMap::new()).await.unwrap();
    let table = catalog
        .create_table(
            &ns,
            TableCreation::builder()
                .name("t".to_string())
                .schema(schema())
                .partition_spec(spec)
                .properties(properties)
                .build(),
        )
        .await
        .unwrap();
    Fixture {
        dir,
        catalog,
        table,
    }
}

/// Writes `rows` as uncompressed Parquet (one file per partition they span) with iceberg's own
/// writers, in the table's default spec.
async fn write_data_files(table: &Table, rows: &[Row]) -> Vec<DataFile> {
    write_data_files_with(table, rows, WriterProperties::builder().build()).await
}

/// [`write_data_files`] with the given Parquet writer properties.
async fn write_data_files_with(
    table: &Table,
    rows: &[Row],
    props: WriterProperties,
) -> Vec<DataFile> {
    let md = table.metadata();
    let schema = md.current_schema().clone();
    let spec = md.default_partition_spec().clone();
    let batch = to_batch(&schema, rows);
    let parquet = ParquetWriterBuilder::new(props, schema.clone());
    let rolling = RollingFileWriterBuilder::new_with_default_file_size(
        parquet,
        table.file_io().clone(),
        DefaultLocationGenerator::new(md).unwrap(),
        DefaultFileNameGenerator::new(
            format!("input-{}", uuid::Uuid::now_v7()),
            None,
            DataFileFormat::Parquet,
        ),
    );
    let builder = DataFileWriterBuilder::new(rolling);
    let mut out = Vec::new();
    if spec.is_unpartitioned() {
        let mut w = builder.build(None).await.unwrap();
        w.write(batch).await.unwrap();
        out.extend(w.close().await.unwrap());
    } else {
        let splitter =
            RecordBatchPartitionSplitter::try_new_with_computed_values(schema, spec).unwrap();
        let mut parts = splitter.split(&batch).unwrap();
        parts.sort_by_key(|(k, _)| k.to_path());
        for (key, part) in parts {
            let mut w = builder.build(Some(key)).await.unwrap();
            w.write(part).await.unwrap();
            out.extend(w.close().await.unwrap());
        }
    }
    out
}

async fn append(catalog: &MemoryCatalog, table: &Table, files: Vec<DataFile>) -> Table {
    let tx = Transaction::new(table);
    let tx = tx.fast_append().add_data_files(files).apply(tx).unwrap();
    tx.commit(catalog).await.unwrap()
}

/// Appends one file per entry of `files`, all in one snapshot.
pub(super) async fn append_files(f: &mut Fixture, files: &[Vec<Row>]) {
    let mut data_files = Vec::new();
    for rows in files {
        data_files.extend(write_data_files(&f.table, rows).await);
    }
    f.table = append(&f.catalog, &f.table, data_files).await;
}

/// `n` files of `rows_per_file` rows for one (org, day), ids from `first_id`.
pub(super) fn file_rows(
    first_id: i64,
    n: usize,
    rows_per_file: usize,
    org: i32,
    day: i64,
) -> Vec<Vec<Row>> {
    (0..n)
        .map(|i| {
            (0..rows_per_file)
                .map(|j| Row::new(first_id + (i * rows_per_file + j) as i64, org, day))
                .collect()
        })
        .collect()
}

pub(super) fn rows_of(files: &[Vec<Row>]) -> Vec<Row> {
    files.iter().flatten().cloned().collect()
}

pub(super) fn snapshot_id(table: &Table) -> i64 {
    table.metadata().current_snapshot().unwrap().snapshot_id()
}

fn options(pairs: &[(&str, String)], table: &Table) -> CompactionOptions {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    options::resolve(&map, table.metadata().properties()).unwrap()
}

/// The tasks built from icemaint's own manifest walk are the ones iceberg's scan builds, with the
/// partition spec set on top (for a snapshot without delete files, where the scan is skipped).
#[tokio::test]
async fn tasks_from_the_walk_equal_the_scan_tasks() {
    let mut props = HashMap::new();
    props.insert(
        DEFAULT_SCHEMA_NAME_MAPPING.to_string(),
        r#"[{"field-id": 1, "names": ["id"]}]"#.to_string(),
    );
    let mut f = fixture(spec_org_day(), props).await;
    append_files(
        &mut f,
        &[file_rows(0, 3, 20, 1, 0), file_rows(100, 2, 20, 2, 1)].concat(),
    )
    .await;
    append_files(&mut f, &file_rows(200, 2, 20, 1, 0)).await;
    let snap = snapshot_id(&f.table);
    let c = collect_candidates(&f.table, snap, None).await.unwrap();
    let mut scanned = scan_tasks(&f.table, snap, None).await.unwrap();
    assert_eq!(c.tasks().len(), 7);
    assert_eq!(scanned.len(), 7);
    let spec = f.table.metadata().default_partition_spec().clone();
    for (path, task) in &c.tasks() {
        let mut expected = scanned.remove(path).unwrap();
        assert!(expected.name_mapping.is_some());
        expected.partition_spec = Some(spec.clone());
        assert_eq!(task, &expected, "{path}");
    }
    let files: Vec<&str> = c.files.iter().map(|x| x.path.as_str()).collect();
    assert_eq!(files.len(), 7);
}

#[tokio::test]
async fn small_files_are_compacted_per_partition() {
    let mut f = fixture(spec_org_day(), HashMap::new()).await;
    let big = file_rows(0, 8, 200, 1, 0);
    let mid_a = file_rows(10_000, 6, 50, 1, 1);
    let mid_b = file_rows(20_000, 6, 50, 2, 0);
    let few = file_rows(30_000, 2, 50, 2, 1);
    let all_files: Vec<Vec<Row>> =
        [big.clone(), mid_a.clone(), mid_b.clone(), few.clone()].concat();
    append_files(&mut f, &all_files).await;
    let snap = snapshot_id(&f.table);

    let candidates = collect_candidates(&f.table, snap, None).await.unwrap();
    assert_eq!(candidates.snapshot_id, snap);
    assert_eq!(candidates.total_data_files, 22);
    assert_eq!(candidates.files.len(), 22);
    assert_eq!(candidates.tasks().len(), 22);
    assert!(candidates.skipped_non_parquet.is_empty());
    let spec_id = f.table.metadata().default_partition_spec_id();
    for c in &candidates.files {
        assert_eq!(c.spec_id, spec_id);
        assert_eq!(c.delete_file_count, 0);
        assert!(candidates.tasks()[c.path.as_str()].predicate.is_none());
    }
    let big_partition = "org_id=1/ts_day=2025-01-01";
    let big_bytes: u64 = candidates
        .files
        .iter()
        .filter(|c| c.partition == big_partition)
        .map(|c| c.size_bytes)
        .sum();
    assert_eq!(
        candidates
            .files
            .iter()
            .filter(|c| c.partition == big_partition)
            .count(),
        8
    );

    // A target that makes the big partition exactly three files; a generous max so the byte cap
    // (a safety net measured on encoded, not yet compressed, sizes) stays out of the way.
    let target = big_bytes / 3;
    let opts = options(
        &[
            (options::TARGET_FILE_SIZE_BYTES, target.to_string()),
            (options::MAX_FILE_SIZE_BYTES, (target * 10).to_string()),
        ],
        &f.table,
    );
    let settings = PlanSettings::new(&opts, spec_id);
    let p = plan(&candidates.files, &settings);
    let planned: Vec<&str> = p.groups.iter().map(|g| g.partition.as_str()).collect();
    assert!(planned.contains(&big_partition), "{planned:?}");
    assert!(
        !planned.contains(&"org_id=2/ts_day=2025-01-02"),
        "{planned:?}"
    );
    let big_group = p
        .groups
        .iter()
        .find(|g| g.partition == big_partition)
        .unwrap();
    assert_eq!(big_group.expected_output_files, 3);

    let rewrite_settings = RewriteSettings::from_options(&opts, spec_id);
    let expected_rows: HashMap<&str, Vec<Row>> = HashMap::from([
        (big_partition, rows_of(&big)),
        ("org_id=1/ts_day=2025-01-02", rows_of(&mid_a)),
        ("org_id=2/ts_day=2025-01-01", rows_of(&mid_b)),
    ]);
    for g in &p.groups {
        let written = rewrite_file_group(&f.table, g, &candidates.tasks(), &rewrite_settings)
            .await
            .unwrap();
        assert_eq!(written.len(), g.expected_output_files, "{}", g.partition);
        assert_eq!(
            written.iter().map(|d| d.record_count()).sum::<u64>(),
            g.input_records
        );
        let rows_per_file = g.input_records.div_ceil(g.expected_output_files as u64);
        let partition = &candidates.tasks()[g.files[0].path.as_str()].partition;
        let mut read_back = Vec::new();
        for d in &written {
            assert_eq!(d.content_type(), DataContentType::Data);
            assert_eq!(d.file_format(), DataFileFormat::Parquet);
            assert_eq!(spec_id_of(d), spec_id);
            assert_eq!(Some(d.partition()), partition.as_ref());
            assert!(d.record_count() <= rows_per_file);
            assert!(d.file_path().contains(&format!("/{}/", g.partition)));
            assert!(d.file_path().contains("/icemaint-"));
            let codecs = compressions(d.file_path());
            assert!(!codecs.is_empty());
            assert!(
                codecs.iter().all(|c| matches!(c, Compression::ZSTD(_))),
                "{codecs:?}"
            );
            let rows = read_rows(d.file_path());
            assert_eq!(rows.len() as u64, d.record_count());
            read_back.extend(rows);
        }
        assert_eq!(
            checksum(&read_back),
            checksum(&expected_rows[g.partition.as_str()]),
            "{}",
            g.partition
        );
    }
}

#[tokio::test]
async fn where_filter_selects_whole_files() {
    let mut f = fixture(spec_org_day(), HashMap::new()).await;
    let files = [
        file_rows(0, 3, 20, 1, 0),
        file_rows(100, 3, 20, 2, 0),
        file_rows(200, 4, 20, 2, 1),
    ]
    .concat();
    append_files(&mut f, &files).await;
    let snap = snapshot_id(&f.table);
    let schema = f.table.metadata().current_schema().clone();

    let filter = parse_where("org_id = 2 AND ts >= '2025-01-02'", &schema).unwrap();
    let c = collect_candidates(&f.table, snap, Some(filter))
        .await
        .unwrap();
    assert_eq!(c.total_data_files, 10);
    assert_eq!(c.files.len(), 4);
    assert!(
        c.files
            .iter()
            .all(|f| f.partition == "org_id=2/ts_day=2025-01-02")
    );
    let tasks = c.tasks();
    let mut task_paths: Vec<&str> = tasks.keys().map(String::as_str).collect();
    task_paths.sort();
    let mut file_paths: Vec<&str> = c.files.iter().map(|f| f.path.as_str()).collect();
    file_paths.sort();
    assert_eq!(task_paths, file_paths);
    // The filter picks files; it never becomes a row filter of the rewrite.
    assert!(c.tasks().values().all(|t| t.predicate.is_none()));

    // A filter on a non-partition column prunes by column metrics: ids 100..160 live in org 2,
    // day 0 files (20 ids each).
    let filter = parse_where("id >= 120 AND id < 140", &schema).unwrap();
    let c = collect_candidates(&f.table, snap, Some(filter))
        .await
        .unwrap();
    assert_eq!(c.files.len(), 1);
    assert_eq!(c.files[0].partition, "org_id=2/ts_day=2025-01-01");
}

#[tokio::test]
async fn candidates_come_in_scan_order() {
    // Two appends of three files each: one manifest per append.
    let mut f = fixture(spec_org_day(), HashMap::new()).await;
    let mut committed = Vec::new();
    for first_id in [0, 1000] {
        let mut data_files = Vec::new();
        for rows in file_rows(first_id, 3, 10, 1, 0) {
            data_files.extend(write_data_files(&f.table, &rows).await);
        }
        committed.push(
            data_files
                .iter()
                .map(|d| d.file_path().to_string())
                .collect::<Vec<_>>(),
        );
        f.table = append(&f.catalog, &f.table, data_files).await;
    }
    // The order Java's scan yields when it reads the manifests one after the other.
    let snap = f.table.metadata().current_snapshot().unwrap().clone();
    let list = f.table.manifest_list_reader(&snap).load().await.unwrap();
    let mut scan_order = Vec::new();
    for m in list.entries() {
        let manifest = m.load_manifest(f.table.file_io()).await.unwrap();
        for e in manifest.entries().iter().filter(|e| e.is_alive()) {
            scan_order.push(e.file_path().to_string());
        }
    }
    let c = collect_candidates(&f.table, snap.snapshot_id(), None)
        .await
        .unwrap();
    let got: Vec<String> = c.files.iter().map(|f| f.path.to_string()).collect();
    assert_eq!(got, scan_order);
    // Each append's files stay together, in the order they were committed.
    for files in &committed {
        let at: Vec<usize> = files
            .iter()
            .map(|p| got.iter().position(|g| g == p).unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[1] == w[0] + 1), "{at:?}");
    }
}

#[tokio::test]
async fn old_spec_files_are_split_into_the_current_spec() {
    // Files written under `org_id` only, each spanning two days; the table then moves to
    // `org_id, day(ts)`.
    let mut f = fixture(spec_org(), HashMap::new()).await;
    let old: Vec<Vec<Row>> = (0..4)
        .map(|i| {
            (0..30)
                .map(|j| Row::new(i * 100 + j, 1, j % 2))
                .collect::<Vec<_>>()
        })
        .collect();
    append_files(&mut f, &old).await;

    let location = f.table.metadata_location().unwrap().to_string();
    let evolved = f
        .table
        .metadata()
        .clone()
        .into_builder(Some(location.clone()))
        .add_partition_spec(spec_org_day())
        .unwrap()
        .set_default_partition_spec(-1)
        .unwrap()
        .build()
        .unwrap()
        .metadata;
    let new_location = MetadataLocation::from_str(&location)
        .unwrap()
        .with_next_version()
        .with_new_metadata(&evolved);
    evolved
        .write_to(f.table.file_io(), &new_location)
        .await
        .unwrap();
    let ident = TableIdent::new(NamespaceIdent::new("ns".to_string()), "t2".to_string());
    f.table = f
        .catalog
        .register_table(&ident, new_location.to_string())
        .await
        .unwrap();
    let new_spec = f.table.metadata().default_partition_spec_id();
    assert_ne!(new_spec, 0);
    // A few small files in the new spec too.
    let fresh = file_rows(10_000, 2, 10, 1, 0);
    append_files(&mut f, &fresh).await;

    let snap = snapshot_id(&f.table);
    let c = collect_candidates(&f.table, snap, None).await.unwrap();
    assert_eq!(c.files.len(), 6);
    let old_files: Vec<&CandidateFile> = c.files.iter().filter(|f| f.spec_id == 0).collect();
    assert_eq!(old_files.len(), 4);
    assert!(old_files.iter().all(|f| f.partition == "org_id=1"));

    // As in Java, the old-spec files are grouped under the current spec's all-null partition.
    let opts = options(&[(options::MIN_INPUT_FILES, "4".to_string())], &f.table);
    let md = f.table.metadata();
    let settings =
        PlanSettings::new(&opts, new_spec).with_current_spec(new_spec, current_null_partition(md));
    assert_eq!(settings.other_specs_partition, "org_id=null/ts_day=null");
    let p = plan(&c.files, &settings);
    // Only the old-spec files: the two fresh files are too few and too small.
    assert_eq!(p.groups.len(), 1);
    let g = &p.groups[0];
    assert_eq!(
        (g.spec_id, g.partition.as_str()),
        (new_spec, "org_id=null/ts_day=null")
    );
    assert_eq!(g.files.len(), 4);
    assert!(g.files.iter().all(|f| f.spec_id == 0));
    assert_eq!(g.reasons, vec![GroupReason::EnoughInputFiles]);
    assert_eq!(g.expected_output_files, 1);
    // Four files are too few for the default min-input-files, unless icemaint's
    // rewrite-older-specs asks for every old-spec file to move.
    let spark = PlanSettings::new(&CompactionOptions::default(), new_spec)
        .with_current_spec(new_spec, current_null_partition(md));
    assert!(plan(&c.files, &spark).groups.is_empty());
    let older = PlanSettings {
        rewrite_older_specs: true,
        ..spark
    };
    let p_older = plan(&c.files, &older);
    assert_eq!(p_older.groups.len(), 1);
    assert_eq!(
        (
            p_older.groups[0].spec_id,
            p_older.groups[0].partition.as_str()
        ),
        (0, "org_id=1")
    );
    assert!(p_older.groups[0].reasons.contains(&GroupReason::OutputSpec));

    let written = rewrite_file_group(
        &f.table,
        g,
        &c.tasks(),
        &RewriteSettings::from_options(&opts, new_spec),
    )
    .await
    .unwrap();
    // One file per day partition of the new spec.
    assert_eq!(written.len(), 2);
    let mut all = Vec::new();
    let mut days = Vec::new();
    for d in &written {
        assert_eq!(spec_id_of(d), new_spec);
        let fields = d.partition().fields();
        assert_eq!(fields.len(), 2);
        assert_eq!(fields[0], Some(Literal::int(1)));
        let Some(Literal::Primitive(PrimitiveLiteral::Int(day))) = fields[1] else {
            panic!("day partition {:?}", fields[1]);
        };
        days.push(day);
        let rows = read_rows(d.file_path());
        assert!(rows.iter().all(|r| r.day() == day), "rows outside {day}");
        assert!(d.file_path().contains("/org_id=1/ts_day="));
        all.extend(rows);
    }
    days.sort();
    assert_eq!(days, vec![DAY0 as i32, DAY0 as i32 + 1]);
    assert_eq!(checksum(&all), checksum(&rows_of(&old)));

    // With a single open partition writer and rows alternating between days, writers are
    // closed and reopened: more files, same rows, each file still in one partition.
    let one_writer = RewriteSettings {
        max_open_partition_writers: 1,
        batch_size: Some(8),
        ..RewriteSettings::from_options(&opts, new_spec)
    };
    let written = rewrite_file_group(&f.table, g, &c.tasks(), &one_writer)
        .await
        .unwrap();
    assert!(written.len() > 2, "{} files", written.len());
    let mut all = Vec::new();
    for d in &written {
        let Some(Literal::Primitive(PrimitiveLiteral::Int(day))) = d.partition().fields()[1] else {
            panic!("day partition");
        };
        let rows = read_rows(d.file_path());
        assert!(rows.iter().all(|r| r.day() == day));
        all.extend(rows);
    }
    assert_eq!(checksum(&all), checksum(&rows_of(&old)));
}

#[tokio::test]
async fn dropped_rewrite_cleans_up_in_the_background() {
    let dir = TempDir::new().unwrap();
    let file_io = iceberg::io::FileIOBuilder::new(Arc::new(LocalFsStorageFactory)).build();
    let written = dir.path().join("a.parquet").to_string_lossy().to_string();
    let never_created = dir.path().join("b.parquet").to_string_lossy().to_string();
    std::fs::write(&written, b"x").unwrap();
    let guard = CleanupGuard {
        file_io,
        generated: Arc::new(Mutex::new(vec![written.clone(), never_created])),
        armed: true,
    };
    drop(guard);
    for _ in 0..100 {
        if !std::path::Path::new(&written).exists() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{written} was not deleted");
}

#[tokio::test]
async fn failed_rewrite_deletes_its_files() {
    let mut f = fixture(spec_org_day(), HashMap::new()).await;
    let files = file_rows(0, 3, 100, 1, 0);
    append_files(&mut f, &files).await;
    let snap = snapshot_id(&f.table);
    let c = collect_candidates(&f.table, snap, None).await.unwrap();
    let before = parquet_files(f.dir.path());
    assert_eq!(before.len(), 3);

    let all = c.tasks();
    let mut tasks: Vec<FileScanTask> = c
        .files
        .iter()
        .map(|x| all[x.path.as_str()].clone())
        .collect();
    let mut missing = tasks[0].clone();
    missing.data_file_path = format!("{}.missing.parquet", missing.data_file_path);
    tasks.push(missing);
    let settings = RewriteSettings::new(1 << 20, 2 << 20);
    // 40 files planned: several are complete before the missing file is reached.
    let err = rewrite_group(&f.table, tasks, 40, &settings)
        .await
        .unwrap_err();
    assert!(matches!(err, RewriteError::Iceberg(_)), "{err}");
    assert_eq!(parquet_files(f.dir.path()), before);
}

#[tokio::test]
async fn byte_cap_rolls_files_and_keeps_every_row() {
    let mut f = fixture(spec_org_day(), HashMap::new()).await;
    let files = file_rows(0, 2, 500, 1, 0);
    append_files(&mut f, &files).await;
    let snap = snapshot_id(&f.table);
    let c = collect_candidates(&f.table, snap, None).await.unwrap();
    let tasks: Vec<FileScanTask> = c.tasks().values().cloned().collect();
    let settings = RewriteSettings {
        batch_size: Some(100),
        ..RewriteSettings::new(1, 1)
    };
    let target = GroupTarget {
        output_files: 1,
        live_records: 1000,
        byte_cap: 1,
    };
    let written = rewrite(&f.table, tasks, target, &settings).await.unwrap();
    // The cap (1 byte) is passed after every batch: one file per 100-row batch.
    assert!(written.len() >= 10, "{} files", written.len());
    let mut all = Vec::new();
    for d in &written {
        all.extend(read_rows(d.file_path()));
    }
    assert_eq!(checksum(&all), checksum(&rows_of(&files)));
}

#[tokio::test]
async fn unpartitioned_table_and_row_balancing() {
    let mut f = fixture(UnboundPartitionSpec::builder().build(), HashMap::new()).await;
    let files = [file_rows(0, 5, 97, 1, 0), file_rows(1_000, 2, 13, 2, 1)].concat();
    append_files(&mut f, &files).await;
    let snap = snapshot_id(&f.table);
    let c = collect_candidates(&f.table, snap, None).await.unwrap();
    assert!(c.files.iter().all(|x| x.partition.is_empty()));
    let tasks: Vec<FileScanTask> = c.tasks().values().cloned().collect();
    let settings = RewriteSettings::new(1 << 30, 2 << 30);
    let written = rewrite_group(&f.table, tasks, 4, &settings).await.unwrap();
    assert_eq!(written.len(), 4);
    // 511 rows in 4 files: 128, 128, 128, 127.
    let mut counts: Vec<u64> = written.iter().map(|d| d.record_count()).collect();
    counts.sort();
    assert_eq!(counts, vec![127, 128, 128, 128]);
    for d in &written {
        assert!(d.partition().fields().is_empty());
        assert!(!d.file_path().contains("="));
    }
    let mut all = Vec::new();
    for d in &written {
        all.extend(read_rows(d.file_path()));
    }
    assert_eq!(checksum(&all), checksum(&rows_of(&files)));
}

/// Commits a position delete file for `data_file` removing `positions`, by hand (iceberg-rust
/// 0.10.1 has no delete commit): delete manifest + manifest list + snapshot + metadata, then
/// registers the result as a new table.
async fn commit_position_deletes(
    f: &mut Fixture,
    data_file_path: &str,
    positions: &[i64],
    name: &str,
) -> String {
    let table = &f.table;
    let md = table.metadata();
    let file_io = table.file_io().clone();
    let parent = md.current_snapshot().unwrap().clone();
    let data_meta = {
        let walk = read_manifests(table, parent.snapshot_id()).await.unwrap();
        walk.data
            .iter()
            .find(|m| m.path == data_file_path)
            .map(|m| (m.spec_id, walk.partitions[m.partition as usize].clone()))
    };
    let (spec_id, partition) = data_meta.unwrap();
    let spec = md.partition_spec_by_id(spec_id).unwrap().clone();

    // The position delete file: (file_path, pos) with the reserved field ids.
    let delete_schema = Arc::new(
        Schema::builder()
            .with_fields(vec![
                NestedField::required(
                    RESERVED_FIELD_ID_DELETE_FILE_PATH,
                    "file_path",
                    Type::Primitive(PrimitiveType::String),
                )
                .into(),
                NestedField::required(
                    iceberg::metadata_columns::RESERVED_FIELD_ID_DELETE_FILE_POS,
                    "pos",
                    Type::Primitive(PrimitiveType::Long),
                )
                .into(),
            ])
            .build()
            .unwrap(),
    );
    let arrow_schema = Arc::new(iceberg::arrow::schema_to_arrow_schema(&delete_schema).unwrap());
    let batch = RecordBatch::try_new(
        arrow_schema,
        vec![
            Arc::new(StringArray::from_iter_values(
                positions.iter().map(|_| data_file_path),
            )) as ArrayRef,
            Arc::new(Int64Array::from_iter_values(positions.iter().copied())),
        ],
    )
    .unwrap();
    let delete_path = format!(
        "{}/data/deletes-{}.parquet",
        md.location(),
        uuid::Uuid::now_v7()
    );
    let mut w = ParquetWriterBuilder::new(WriterProperties::builder().build(), delete_schema)
        .build(file_io.new_output(&delete_path).unwrap())
        .await
        .unwrap();
    w.write(&batch).await.unwrap();
    let mut builder: DataFileBuilder = w.close().await.unwrap().remove(0);
    // iceberg-rust's Parquet writer records no bounds for the `file_path` column, so say which
    // file this delete file covers explicitly (what v3 writers do).
    let delete_file = builder
        .content(DataContentType::PositionDeletes)
        .referenced_data_file(Some(data_file_path.to_string()))
        .partition(partition)
        .partition_spec_id(spec_id)
        .build()
        .unwrap();

    let snapshot_id = parent.snapshot_id() + 1;
    let seq = md.next_sequence_number();
    let manifest_path = format!(
        "{}/metadata/deletes-{}.avro",
        md.location(),
        uuid::Uuid::now_v7()
    );
    let mut mw = ManifestWriterBuilder::new(
        file_io.new_output(&manifest_path).unwrap(),
        Some(snapshot_id),
        md.current_schema().clone(),
        spec.as_ref().clone(),
    )
    .build_v2_deletes();
    mw.add_file(delete_file, seq).unwrap();
    let delete_manifest = mw.write_manifest_file().await.unwrap();

    let list = table.manifest_list_reader(&parent).load().await.unwrap();
    let list_path = format!(
        "{}/metadata/snap-{snapshot_id}-{}.avro",
        md.location(),
        uuid::Uuid::now_v7()
    );
    let mut lw = ManifestListWriter::v2(
        file_io
            .new_output(&list_path)
            .unwrap()
            .writer()
            .await
            .unwrap(),
        snapshot_id,
        Some(parent.snapshot_id()),
        seq,
    );
    lw.add_manifests(list.entries().iter().cloned().chain([delete_manifest]))
        .unwrap();
    lw.close().await.unwrap();

    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(Some(parent.snapshot_id()))
        .with_sequence_number(seq)
        .with_timestamp_ms(parent.timestamp_ms() + 1)
        .with_manifest_list(list_path)
        .with_schema_id(md.current_schema_id())
        .with_summary(Summary {
            operation: Operation::Delete,
            additional_properties: HashMap::new(),
        })
        .build();
    let location = table.metadata_location().unwrap().to_string();
    let new_md = md
        .clone()
        .into_builder(Some(location.clone()))
        .set_branch_snapshot(snapshot, "main")
        .unwrap()
        .build()
        .unwrap()
        .metadata;
    let new_location = MetadataLocation::from_str(&location)
        .unwrap()
        .with_next_version()
        .with_new_metadata(&new_md);
    new_md.write_to(&file_io, &new_location).await.unwrap();
    let ident = TableIdent::new(NamespaceIdent::new("ns".to_string()), name.to_string());
    f.table = f
        .catalog
        .register_table(&ident, new_location.to_string())
        .await
        .unwrap();
    delete_path
}

#[tokio::test]
async fn position_deletes_are_counted_and_applied() {
    let mut f = fixture(spec_org_day(), HashMap::new()).await;
    let files = file_rows(0, 2, 100, 1, 0);
    append_files(&mut f, &files).await;
    let c = collect_candidates(&f.table, snapshot_id(&f.table), None)
        .await
        .unwrap();
    // Which input file holds ids 0..100?
    let first = c
        .files
        .iter()
        .find(|x| read_rows(&x.path)[0].id == 0)
        .unwrap()
        .path
        .clone();
    let deleted_positions: Vec<i64> = (0..40).map(|i| i * 2).collect();
    commit_position_deletes(&mut f, &first, &deleted_positions, "t_del").await;

    let c = collect_candidates(&f.table, snapshot_id(&f.table), None)
        .await
        .unwrap();
    let with_deletes = c.files.iter().find(|x| x.path == first).unwrap();
    assert_eq!(with_deletes.delete_file_count, 1);
    assert_eq!(with_deletes.deleted_records, 40);
    // The delete file is scoped to `first`: not counted against the other file of the
    // partition, and not handed to the reader for it.
    let other = c.files.iter().find(|x| x.path != first).unwrap();
    assert_eq!(other.delete_file_count, 0);
    assert!(c.tasks()[other.path.as_str()].deletes.is_empty());
    assert_eq!(c.tasks()[first.as_str()].deletes.len(), 1);

    // 40% deleted >= the 0.3 default ratio: the file is rewritten although it is alone.
    let opts = options(&[(options::MIN_INPUT_FILES, "5".to_string())], &f.table);
    let spec_id = f.table.metadata().default_partition_spec_id();
    let mut settings = PlanSettings::new(&opts, spec_id);
    // Both files are below min (tiny); keep the size rule out of the way to isolate deletes.
    settings.min_file_size_bytes = 0;
    let p = plan(&c.files, &settings);
    assert_eq!(p.groups.len(), 1);
    let g = &p.groups[0];
    assert_eq!(g.paths().collect::<Vec<_>>(), vec![first.as_str()]);
    assert!(g.reasons.contains(&GroupReason::DeleteRatioThreshold));
    assert_eq!(g.known_deleted_records, 40);

    let written = rewrite_file_group(
        &f.table,
        g,
        &c.tasks(),
        &RewriteSettings::from_options(&opts, spec_id),
    )
    .await
    .unwrap();
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].record_count(), 60);
    let expected: Vec<Row> = files[0]
        .iter()
        .enumerate()
        .filter(|(i, _)| !deleted_positions.contains(&(*i as i64)))
        .map(|(_, r)| r.clone())
        .collect();
    assert_eq!(
        checksum(&read_rows(written[0].file_path())),
        checksum(&expected)
    );
}

#[tokio::test]
async fn encrypted_tables_are_refused() {
    let mut f = fixture(spec_org_day(), HashMap::new()).await;
    append_files(&mut f, &file_rows(0, 1, 10, 1, 0)).await;
    let snap = snapshot_id(&f.table);
    let md = f
        .table
        .metadata()
        .clone()
        .into_builder(None)
        .set_properties(HashMap::from([(
            ENCRYPTION_KEY_ID.to_string(),
            "k1".to_string(),
        )]))
        .unwrap()
        .build()
        .unwrap()
        .metadata;
    let err = check_table_supported(&md, snap).unwrap_err();
    assert!(matches!(err, RewriteError::Encrypted(_)), "{err}");
    assert!(!err.is_retryable());
    assert!(matches!(
        check_table_supported(f.table.metadata(), 42),
        Err(RewriteError::SnapshotNotFound(42))
    ));
}

#[test]
fn writer_properties_follow_table_properties() {
    let props = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let col = parquet::schema::types::ColumnPath::from("x");
    let p = writer_properties(&props(&[])).unwrap();
    assert_eq!(
        p.compression(&col),
        Compression::ZSTD(ZstdLevel::try_new(3).unwrap())
    );
    assert!(p.dictionary_enabled(&col));
    assert_eq!(p.max_row_group_bytes(), Some(128 * 1024 * 1024));
    assert_eq!(p.data_page_size_limit(), 1024 * 1024);

    let p = writer_properties(&props(&[
        ("write.parquet.compression-codec", "GZIP"),
        ("write.parquet.compression-level", "9"),
        ("write.parquet.row-group-size-bytes", "1048576"),
        ("write.parquet.page-size-bytes", "4096"),
    ]))
    .unwrap();
    assert_eq!(
        p.compression(&col),
        Compression::GZIP(GzipLevel::try_new(9).unwrap())
    );
    assert_eq!(p.max_row_group_bytes(), Some(1_048_576));
    assert_eq!(p.data_page_size_limit(), 4096);

    let p = writer_properties(&props(&[("write.parquet.compression-codec", "snappy")])).unwrap();
    assert_eq!(p.compression(&col), Compression::SNAPPY);

    for (pairs, key) in [
        (
            &[("write.parquet.compression-codec", "lzo9")][..],
            "write.parquet.compression-codec",
        ),
        (
            &[("write.parquet.compression-level", "high")][..],
            "write.parquet.compression-level",
        ),
        (
            &[("write.parquet.compression-level", "99")][..],
            "write.parquet.compression-level",
        ),
        (
            &[("write.parquet.row-group-size-bytes", "0")][..],
            "write.parquet.row-group-size-bytes",
        ),
    ] {
        match writer_properties(&props(pairs)) {
            Err(RewriteError::InvalidTableProperty { key: k, .. }) => assert_eq!(k, key),
            other => panic!("{pairs:?}: {other:?}"),
        }
    }
}

#[test]
fn file_scoped_position_deletes() {
    let path = "s3://b/t/data/a.parquet";
    let base = || {
        let mut b = DataFileBuilder::default();
        b.content(DataContentType::PositionDeletes)
            .file_path("s3://b/t/data/d.parquet".to_string())
            .file_format(DataFileFormat::Parquet)
            .record_count(3)
            .file_size_in_bytes(10)
            .partition_spec_id(0);
        b
    };
    let explicit = base()
        .referenced_data_file(Some(path.to_string()))
        .build()
        .unwrap();
    assert_eq!(referenced_data_file(&explicit).as_deref(), Some(path));
    // Java's rule for v2 files: equal `file_path` bounds.
    let bound = HashMap::from([(
        RESERVED_FIELD_ID_DELETE_FILE_PATH,
        iceberg::spec::Datum::string(path),
    )]);
    let by_bounds = base()
        .lower_bounds(bound.clone())
        .upper_bounds(bound)
        .build()
        .unwrap();
    assert_eq!(referenced_data_file(&by_bounds).as_deref(), Some(path));
    let ranged = base()
        .lower_bounds(HashMap::from([(
            RESERVED_FIELD_ID_DELETE_FILE_PATH,
            iceberg::spec::Datum::string("s3://b/t/data/a.parquet"),
        )]))
        .upper_bounds(HashMap::from([(
            RESERVED_FIELD_ID_DELETE_FILE_PATH,
            iceberg::spec::Datum::string("s3://b/t/data/z.parquet"),
        )]))
        .build()
        .unwrap();
    assert_eq!(referenced_data_file(&ranged), None);
    let equality = base()
        .content(DataContentType::EqualityDeletes)
        .build()
        .unwrap();
    assert_eq!(referenced_data_file(&equality), None);
}

#[test]
fn partitions_render_canonically() {
    let schema = schema();
    let spec = PartitionSpec::builder(schema.clone())
        .add_partition_field("org_id", "org_id", Transform::Identity)
        .unwrap()
        .add_partition_field("ts", "ts_day", Transform::Day)
        .unwrap()
        .build()
        .unwrap();
    let data = Struct::from_iter([Some(Literal::int(3)), Some(Literal::date(DAY0 as i32 + 1))]);
    assert_eq!(
        render_partition(&spec, &schema, &data),
        "org_id=3/ts_day=2025-01-02"
    );
    let data = Struct::from_iter([None, Some(Literal::date(DAY0 as i32))]);
    assert_eq!(
        render_partition(&spec, &schema, &data),
        "org_id=null/ts_day=2025-01-01"
    );
    let by_name = PartitionSpec::builder(schema.clone())
        .add_partition_field("name", "name", Transform::Identity)
        .unwrap()
        .build()
        .unwrap();
    let data = Struct::from_iter([Some(Literal::string("a/b=c%"))]);
    assert_eq!(
        render_partition(&by_name, &schema, &data),
        "name=a%2Fb%3Dc%25"
    );
    assert_eq!(
        render_partition(
            &PartitionSpec::unpartition_spec(),
            &schema,
            &Struct::empty()
        ),
        ""
    );
}

/// Whether each column of a Parquet file's first row group has a dictionary page, by name.
fn dictionary_pages(path: &str) -> BTreeMap<String, bool> {
    let file = std::fs::File::open(local(path)).unwrap();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let rg = &builder.metadata().row_groups()[0];
    rg.columns()
        .iter()
        .map(|c| {
            (
                c.column_path().string(),
                c.dictionary_page_offset().is_some(),
            )
        })
        .collect()
}

#[tokio::test]
async fn columns_the_input_stored_plain_are_written_plain() {
    let mut f = fixture(spec_org_day(), HashMap::new()).await;
    let files = file_rows(0, 5, 300, 1, 0);
    // Like Java's writer after it gave up on a dictionary for mostly distinct values.
    let props = WriterProperties::builder()
        .set_column_dictionary_enabled(ColumnPath::from("ts"), false)
        .build();
    let mut data_files = Vec::new();
    for rows in &files {
        data_files.extend(write_data_files_with(&f.table, rows, props.clone()).await);
    }
    f.table = append(&f.catalog, &f.table, data_files).await;
    let input = parquet_files(f.dir.path());
    assert_eq!(input.len(), 5);
    let file = std::fs::File::open(local(&input[0])).unwrap();
    let meta = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .metadata()
        .clone();
    assert_eq!(
        plain_encoded_columns(&meta),
        vec![(ColumnPath::from("ts"), Some(3))]
    );

    let snap = snapshot_id(&f.table);
    let candidates = collect_candidates(&f.table, snap, None).await.unwrap();
    let opts = options(&[], &f.table);
    let spec_id = f.table.metadata().default_partition_spec_id();
    let p = plan(&candidates.files, &PlanSettings::new(&opts, spec_id));
    assert_eq!(p.groups.len(), 1);
    let settings = RewriteSettings::from_options(&opts, spec_id);
    let written = rewrite_file_group(&f.table, &p.groups[0], &candidates.tasks(), &settings)
        .await
        .unwrap();
    assert_eq!(written.len(), 1);
    let dict = dictionary_pages(written[0].file_path());
    assert!(!dict["ts"], "{dict:?}");
    assert!(dict["id"] && dict["name"], "{dict:?}");
    assert_eq!(
        checksum(&read_rows(written[0].file_path())),
        checksum(&rows_of(&files))
    );

    // Unchanged otherwise: the table's codec and the other settings still apply.
    let plain = without_dictionary_for(
        writer_properties(&HashMap::new()).unwrap(),
        [ColumnPath::from("ts")],
    );
    assert!(!plain.dictionary_enabled(&ColumnPath::from("ts")));
    assert!(plain.dictionary_enabled(&ColumnPath::from("id")));
    assert_eq!(
        plain.compression(&ColumnPath::from("ts")),
        Compression::ZSTD(ZstdLevel::try_new(3).unwrap())
    );
}

#[tokio::test]
async fn a_reader_that_stops_producing_is_a_retryable_stall() {
    let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
        "x",
        arrow_schema::DataType::Int64,
        false,
    )]));
    let batch = RecordBatch::try_new(
        schema,
        vec![Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef],
    )
    .unwrap();
    let stall = Duration::from_millis(50);

    // Batches, then the end of the stream: no stall.
    let mut ok = futures::stream::iter(vec![Ok(batch.clone())]);
    assert_eq!(
        next_batch(&mut ok, stall)
            .await
            .unwrap()
            .unwrap()
            .num_rows(),
        2
    );
    assert!(next_batch(&mut ok, stall).await.unwrap().is_none());

    // A batch, then nothing ever again (iceberg's lost delete-loading wake-up looks like this).
    let mut hung = futures::stream::iter(vec![Ok(batch)]).chain(futures::stream::pending());
    assert!(next_batch(&mut hung, stall).await.unwrap().is_some());
    let err = next_batch(&mut hung, stall).await.unwrap_err();
    assert!(matches!(err, RewriteError::Stalled { .. }), "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn read_ahead_keeps_the_files_rows_in_order() {
    let mut f = fixture(spec_org_day(), HashMap::new()).await;
    // Ten small files in one partition: read eight ahead, written as one file.
    let files = file_rows(0, 10, 300, 1, 0);
    append_files(&mut f, &files).await;
    let snap = snapshot_id(&f.table);
    let candidates = collect_candidates(&f.table, snap, None).await.unwrap();
    let by_path = candidates.tasks();
    let tasks: Vec<FileScanTask> = candidates
        .files
        .iter()
        .map(|c| by_path[&*c.path].clone())
        .collect();
    // A local table: read ahead only when asked to.
    assert_eq!(read_ahead_files(&tasks, 1, ReadAhead::Remote), 1);
    assert_eq!(
        read_ahead_files(&tasks, 1, ReadAhead::Always),
        READ_AHEAD_MAX_FILES
    );

    let opts = options(&[], &f.table);
    let spec_id = f.table.metadata().default_partition_spec_id();
    let p = plan(&candidates.files, &PlanSettings::new(&opts, spec_id));
    assert_eq!(p.groups.len(), 1);
    let written = rewrite_file_group(
        &f.table,
        &p.groups[0],
        &by_path,
        &RewriteSettings {
            read_ahead: ReadAhead::Always,
            ..RewriteSettings::from_options(&opts, spec_id)
        },
    )
    .await
    .unwrap();
    assert_eq!(written.len(), 1);
    // The candidates come in scan order (the order the files were appended), and the output
    // holds each file's rows together and in that order, as a one-file-at-a-time read would.
    let ids: Vec<i64> = read_rows(written[0].file_path())
        .iter()
        .map(|r| r.id)
        .collect();
    let mut expected: Vec<i64> = candidates
        .files
        .iter()
        .flat_map(|c| read_rows(&c.path).into_iter().map(|r| r.id))
        .collect();
    assert_eq!(ids, expected);
    expected.sort_unstable();
    assert_eq!(expected, (0..3000).collect::<Vec<i64>>());
}

#[test]
fn read_ahead_is_bounded_by_bytes_and_files() {
    let schema = Arc::new(schema());
    let task = |size: u64, deletes: bool| FileScanTask {
        file_size_in_bytes: size,
        start: 0,
        length: size,
        record_count: Some(1000),
        data_file_path: "s3://bucket/t/data/x.parquet".to_string(),
        data_file_format: DataFileFormat::Parquet,
        schema: schema.clone(),
        project_field_ids: vec![1],
        predicate: None,
        deletes: if deletes {
            vec![FileScanTaskDeleteFile {
                file_path: "file:/t/data/d.parquet".to_string(),
                file_size_in_bytes: 100,
                file_type: DataContentType::PositionDeletes,
                partition_spec_id: 0,
                equality_ids: None,
            }]
        } else {
            Vec::new()
        },
        partition: None,
        partition_spec: None,
        name_mapping: None,
        case_sensitive: true,
    };
    let small: Vec<FileScanTask> = (0..40).map(|_| task(200_000, false)).collect();
    assert_eq!(
        read_ahead_files(&small, 1, ReadAhead::Always),
        READ_AHEAD_MAX_FILES
    );
    assert_eq!(read_ahead_files(&small[..3], 1, ReadAhead::Always), 3);
    assert_eq!(read_ahead_files(&small[..1], 1, ReadAhead::Always), 1);
    // iceberg's own concurrency already overlaps the reads.
    assert_eq!(read_ahead_files(&small, 4, ReadAhead::Always), 1);
    let mid: Vec<FileScanTask> = (0..40).map(|_| task(2 << 20, false)).collect();
    assert_eq!(read_ahead_files(&mid, 1, ReadAhead::Always), 4);
    let large: Vec<FileScanTask> = (0..4).map(|_| task(64 << 20, false)).collect();
    assert_eq!(read_ahead_files(&large, 1, ReadAhead::Always), 1);
    let mut with_deletes = small.clone();
    with_deletes[7] = task(200_000, true);
    assert_eq!(read_ahead_files(&with_deletes, 1, ReadAhead::Always), 1);
    // Object-store paths are read ahead by default, local ones are not.
    assert_eq!(
        read_ahead_files(&small, 1, ReadAhead::Remote),
        READ_AHEAD_MAX_FILES
    );
    assert_eq!(read_ahead_files(&small, 1, ReadAhead::Never), 1);
    let mut local = small.clone();
    for t in &mut local {
        t.data_file_path = "file:/t/data/x.parquet".to_string();
    }
    assert_eq!(read_ahead_files(&local, 1, ReadAhead::Remote), 1);
    assert_eq!(
        read_ahead_files(&local, 1, ReadAhead::Always),
        READ_AHEAD_MAX_FILES
    );
}

#[test]
fn local_paths_are_told_from_object_store_paths() {
    for local in [
        "file:/tmp/wh/data/a.parquet",
        "file:///tmp/wh/data/a.parquet",
        "FILE:/x",
        "/tmp/wh/data/a.parquet",
        "relative/a.parquet",
        "/tmp/odd:name.parquet",
    ] {
        assert!(is_local_path(local), "{local}");
    }
    for remote in [
        "s3://lake/wh/a.parquet",
        "s3a://lake/a",
        "gs://b/a",
        "abfss://c@acct.dfs.core.windows.net/a",
        "memory:/a",
    ] {
        assert!(!is_local_path(remote), "{remote}");
    }
}

/// `FileRoll`: files of `rows_per_file` rows, cut inside batches, except that the last budgeted
/// file takes every remaining row.
#[test]
fn file_roll_cuts_by_rows_and_the_last_budgeted_file_takes_the_rest() {
    /// (rows per file, budget, batches) -> rows per file written
    type Case<'a> = (u64, Option<usize>, &'a [usize], &'a [usize]);
    let cases: &[Case] = &[
        (100, Some(3), &[250, 120], &[100, 100, 170]),
        (100, None, &[250, 120], &[100, 100, 100, 70]),
        (100, Some(1), &[30, 500], &[530]),
        (1, None, &[3], &[1, 1, 1]),
        (100, Some(2), &[100, 100, 100], &[100, 200]),
    ];
    for &(rows_per_file, budget, batches, expected) in cases {
        let mut roll = FileRoll::new(rows_per_file, budget);
        let (mut files, mut open) = (Vec::new(), 0usize);
        for &batch in batches {
            let mut left = batch;
            while left > 0 {
                let take = roll.take(left);
                assert!(take >= 1 && take <= left);
                left -= take;
                open += take;
                if roll.wrote(take) {
                    files.push(std::mem::take(&mut open));
                    roll.closed();
                }
            }
        }
        if open > 0 {
            files.push(open);
        }
        assert_eq!(files, expected, "{rows_per_file} {budget:?} {batches:?}");
    }
}
