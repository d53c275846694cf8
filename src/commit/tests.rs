//! Tests of the replace commit against a real iceberg-catalog-sql catalog on a temporary SQLite
//! file and a local warehouse: tables created and appended to by iceberg-rust, committed to by
//! [`SqlCommitBackend`], read back with iceberg-rust's scan (deletes applied).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use arrow_array::{Array, Int32Array, Int64Array, RecordBatch, StringArray};
use futures::TryStreamExt;
use iceberg::arrow::schema_to_arrow_schema;
use iceberg::io::LocalFsStorageFactory;
use iceberg::spec::{
    DataContentType, DataFile, DataFileFormat, FormatVersion, Literal, ManifestContentType,
    ManifestStatus, NestedField, Operation, PartitionKey, PrimitiveType, Schema, Struct, Transform,
    Type, UnboundPartitionSpec,
};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::base_writer::equality_delete_writer::{
    EqualityDeleteFileWriterBuilder, EqualityDeleteWriterConfig,
};
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use iceberg::{
    Catalog, CatalogBuilder, NamespaceIdent, TableCreation, TableIdent, TableRequirement,
    TableUpdate,
};
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalog, SqlCatalogBuilder};
use parquet::file::properties::WriterProperties;

use super::producer::{BuiltSnapshot, SnapshotChange, SnapshotProducer, commit_change};
use super::summary as s;
use super::*;
use crate::catalog::sql::SqlCommitBackend;
use crate::catalog::{CommitBackend, CommitError};
use crate::config::{CatalogConfig, CatalogType};
use crate::fence::Fence;

/// A catalog with table `db.t` (`id long, name string, part int`, identity-partitioned by `part`).
pub(crate) struct Env {
    dir: tempfile::TempDir,
    pub(crate) catalog: Arc<SqlCatalog>,
    pub(crate) backend: SqlCommitBackend,
    pub(crate) ident: TableIdent,
}

pub(crate) fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        num_retries: 3,
        min_wait: Duration::from_millis(1),
        max_wait: Duration::from_millis(5),
        total_timeout: Duration::from_secs(60),
    }
}

impl Env {
    pub(crate) async fn new() -> Env {
        Self::with(FormatVersion::V2, &[]).await
    }

    pub(crate) async fn with(version: FormatVersion, props: &[(&str, &str)]) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("catalog.db");
        std::fs::File::create(&db).unwrap();
        let uri = format!("sqlite://{}", db.display());
        let warehouse = format!("file://{}/warehouse", dir.path().display());
        let catalog = SqlCatalogBuilder::default()
            .with_storage_factory(Arc::new(LocalFsStorageFactory))
            .load(
                "default",
                HashMap::from([
                    ("uri".to_string(), uri.clone()),
                    ("warehouse".to_string(), warehouse),
                    (
                        "sql_bind_style".to_string(),
                        SqlBindStyle::QMark.to_string(),
                    ),
                ]),
            )
            .await
            .unwrap();
        let ns = NamespaceIdent::new("db".to_string());
        catalog.create_namespace(&ns, HashMap::new()).await.unwrap();
        let schema = Schema::builder()
            .with_fields(vec![
                NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
                NestedField::optional(2, "name", Type::Primitive(PrimitiveType::String)).into(),
                NestedField::required(3, "part", Type::Primitive(PrimitiveType::Int)).into(),
            ])
            .build()
            .unwrap();
        let spec = UnboundPartitionSpec::builder()
            .add_partition_field(3, "part", Transform::Identity)
            .unwrap()
            .build();
        let creation = TableCreation::builder()
            .name("t".to_string())
            .schema(schema)
            .partition_spec(spec)
            .format_version(version)
            .properties(props.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .build();
        catalog.create_table(&ns, creation).await.unwrap();
        let backend = SqlCommitBackend::connect(&CatalogConfig {
            kind: CatalogType::Sql,
            uri,
            name: "default".to_string(),
            warehouse: None,
            properties: Default::default(),
        })
        .await
        .unwrap();
        Env {
            dir,
            catalog: Arc::new(catalog),
            backend,
            ident: TableIdent::new(ns, "t".to_string()),
        }
    }

    pub(crate) async fn table(&self) -> Table {
        self.catalog.load_table(&self.ident).await.unwrap()
    }

    pub(crate) async fn append(&self, files: Vec<DataFile>) -> Table {
        append(&*self.catalog, &self.table().await, files).await
    }

    /// Writes one data file of `rows` into partition `part`.
    pub(crate) async fn write(&self, part: i32, rows: &[(i64, &str)]) -> DataFile {
        write_data_file(&self.table().await, part, rows).await
    }

    /// Commits `change` with fast retries and no fence, as the operations' tests all do.
    pub(crate) async fn commit(
        &self,
        change: &dyn SnapshotChange,
    ) -> Result<CommitOutcome, ReplaceError> {
        commit_change(
            &*self.catalog,
            &self.backend,
            &self.ident,
            change,
            &fast_retry(),
            &Fence::none(),
        )
        .await
    }

    async fn replace(&self, change: &ReplaceDataFiles) -> Result<CommitOutcome, ReplaceError> {
        commit_replace(
            &*self.catalog,
            &self.backend,
            &self.ident,
            change,
            &fast_retry(),
            &Fence::none(),
        )
        .await
    }
}

async fn append(catalog: &dyn Catalog, table: &Table, files: Vec<DataFile>) -> Table {
    let tx = Transaction::new(table);
    let tx = tx.fast_append().add_data_files(files).apply(tx).unwrap();
    tx.commit(catalog).await.unwrap()
}

fn partition_key(table: &Table, part: i32) -> PartitionKey {
    let md = table.metadata();
    PartitionKey::new(
        md.default_partition_spec().as_ref().clone(),
        md.current_schema().clone(),
        Struct::from_iter([Some(Literal::int(part))]),
    )
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn rolling(
    table: &Table,
    schema: Arc<Schema>,
    prefix: &str,
) -> RollingFileWriterBuilder<
    ParquetWriterBuilder,
    DefaultLocationGenerator,
    DefaultFileNameGenerator,
> {
    RollingFileWriterBuilder::new_with_default_file_size(
        ParquetWriterBuilder::new(WriterProperties::builder().build(), schema),
        table.file_io().clone(),
        DefaultLocationGenerator::new(table.metadata()).unwrap(),
        DefaultFileNameGenerator::new(unique(prefix), None, DataFileFormat::Parquet),
    )
}

fn batch(table: &Table, part: i32, rows: &[(i64, &str)]) -> RecordBatch {
    let arrow = schema_to_arrow_schema(table.metadata().current_schema()).unwrap();
    RecordBatch::try_new(
        Arc::new(arrow),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|_| part))),
        ],
    )
    .unwrap()
}

async fn write_data_file(table: &Table, part: i32, rows: &[(i64, &str)]) -> DataFile {
    let schema = table.metadata().current_schema().clone();
    let mut w = DataFileWriterBuilder::new(rolling(table, schema, "data"))
        .build(Some(partition_key(table, part)))
        .await
        .unwrap();
    w.write(batch(table, part, rows)).await.unwrap();
    let mut files = w.close().await.unwrap();
    assert_eq!(files.len(), 1);
    files.remove(0)
}

/// An equality delete file on `id` for `ids` in partition `part`.
pub(crate) async fn write_equality_delete(table: &Table, part: i32, ids: &[i64]) -> DataFile {
    let schema = table.metadata().current_schema().clone();
    let config = EqualityDeleteWriterConfig::new(vec![1], schema).unwrap();
    let delete_schema = Schema::builder()
        .with_fields(vec![
            NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
        ])
        .build()
        .unwrap();
    let mut w =
        EqualityDeleteFileWriterBuilder::new(rolling(table, Arc::new(delete_schema), "eq"), config)
            .build(Some(partition_key(table, part)))
            .await
            .unwrap();
    let rows: Vec<(i64, &str)> = ids.iter().map(|&i| (i, "")).collect();
    w.write(batch(table, part, &rows)).await.unwrap();
    w.close().await.unwrap().remove(0)
}

/// A position delete file deleting `positions` of `target` (in partition `part`).
async fn write_position_delete(
    table: &Table,
    part: i32,
    target: &str,
    positions: &[i64],
) -> DataFile {
    let schema = Arc::new(
        Schema::builder()
            .with_fields(vec![
                NestedField::required(
                    2147483546,
                    "file_path",
                    Type::Primitive(PrimitiveType::String),
                )
                .into(),
                NestedField::required(2147483545, "pos", Type::Primitive(PrimitiveType::Long))
                    .into(),
            ])
            .build()
            .unwrap(),
    );
    let arrow = schema_to_arrow_schema(&schema).unwrap();
    let batch = RecordBatch::try_new(
        Arc::new(arrow),
        vec![
            Arc::new(StringArray::from_iter_values(
                positions.iter().map(|_| target),
            )),
            Arc::new(Int64Array::from_iter_values(positions.iter().copied())),
        ],
    )
    .unwrap();
    let mut w = rolling(table, schema, "pos").build();
    let pk = Some(partition_key(table, part));
    w.write(&pk, &batch).await.unwrap();
    let mut b = w.close().await.unwrap().remove(0);
    b.content(DataContentType::PositionDeletes)
        .referenced_data_file(Some(target.to_string()))
        .partition(pk.as_ref().unwrap().data().clone())
        .partition_spec_id(table.metadata().default_partition_spec_id());
    b.build().unwrap()
}

/// A row delta for tests: adds delete files in an `overwrite` snapshot, carrying every manifest.
/// (iceberg-rust cannot commit delete files; this uses icemaint's own producer.)
struct AddDeletes(Vec<DataFile>);

#[async_trait::async_trait]
impl SnapshotChange for AddDeletes {
    fn describe(&self) -> String {
        format!("add {} delete files", self.0.len())
    }

    async fn build(
        &self,
        producer: &mut SnapshotProducer<'_>,
    ) -> Result<BuiltSnapshot, ReplaceError> {
        let table = producer.table();
        let md = table.metadata();
        let mut w = producer.new_manifest_writer(
            ManifestContentType::Deletes,
            md.current_schema().clone(),
            md.default_partition_spec().as_ref().clone(),
        )?;
        for f in &self.0 {
            // A negative sequence number leaves it unset: inherited from the new snapshot.
            w.add_file(f.clone(), -1)?;
        }
        let mut manifests = vec![w.write_manifest_file().await?];
        let parent = md.current_snapshot().unwrap();
        let list = table.manifest_list_reader(parent).load().await?;
        manifests.extend(list.entries().iter().cloned());
        Ok(BuiltSnapshot {
            operation: Operation::Overwrite,
            manifests,
            summary: HashMap::new(),
        })
    }
}

pub(crate) async fn add_deletes(env: &Env, files: Vec<DataFile>) -> CommitOutcome {
    env.commit(&AddDeletes(files)).await.unwrap()
}

/// All rows as (id, name), sorted, with deletes applied.
pub(crate) async fn rows(table: &Table) -> Vec<(i64, String)> {
    let batches: Vec<RecordBatch> = table
        .scan()
        .build()
        .unwrap()
        .to_arrow()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut out = Vec::new();
    for b in batches {
        let ids = b
            .column_by_name("id")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .clone();
        let names = b
            .column_by_name("name")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .clone();
        for i in 0..b.num_rows() {
            out.push((ids.value(i), names.value(i).to_string()));
        }
    }
    out.sort();
    out
}

fn expected(rows: &[(i64, &str)]) -> Vec<(i64, String)> {
    let mut v: Vec<(i64, String)> = rows.iter().map(|(i, n)| (*i, n.to_string())).collect();
    v.sort();
    v
}

/// Paths of the live data files.
async fn live_files(table: &Table) -> HashSet<String> {
    table
        .scan()
        .build()
        .unwrap()
        .plan_files()
        .await
        .unwrap()
        .map_ok(|t| t.data_file_path().to_string())
        .try_collect()
        .await
        .unwrap()
}

fn local_path(location: &str) -> std::path::PathBuf {
    let p = location
        .strip_prefix("file://")
        .or_else(|| location.strip_prefix("file:"))
        .unwrap_or(location);
    std::path::PathBuf::from(p)
}

fn file_name(path: &str) -> String {
    path.rsplit('/').next().unwrap().to_string()
}

/// Files in the table's metadata directory that no metadata file, snapshot or manifest list of
/// the table refers to: what a commit must not leave behind.
async fn unreferenced_metadata_files(table: &Table) -> Vec<String> {
    let md = table.metadata();
    let mut referenced: HashSet<String> = HashSet::new();
    referenced.insert(file_name(table.metadata_location().unwrap()));
    for l in md.metadata_log() {
        referenced.insert(file_name(&l.metadata_file));
    }
    for snap in md.snapshots() {
        referenced.insert(file_name(snap.manifest_list()));
        let list = table.manifest_list_reader(snap).load().await.unwrap();
        for m in list.entries() {
            referenced.insert(file_name(&m.manifest_path));
        }
    }
    let dir = local_path(&format!("{}/metadata", md.location()));
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| !referenced.contains(n))
        .collect();
    out.sort();
    out
}

fn paths(files: &[DataFile]) -> Vec<String> {
    files.iter().map(|f| f.file_path().to_string()).collect()
}

fn job_props() -> HashMap<String, String> {
    HashMap::from([("icemaint.job-id".to_string(), "job-1".to_string())])
}

#[tokio::test]
async fn replace_merges_small_files_into_one() {
    let env = Env::new().await;
    let batches: [&[(i64, &str)]; 3] = [
        &[(1, "a"), (2, "b")],
        &[(3, "c"), (4, "d"), (5, "e")],
        &[(6, "f")],
    ];
    let mut small = Vec::new();
    for rows in batches {
        let f = env.write(1, rows).await;
        env.append(vec![f.clone()]).await;
        small.push(f);
    }
    // Another partition, untouched by the rewrite.
    let other = env.write(2, &[(100, "x")]).await;
    let before = env.append(vec![other.clone()]).await;
    let start = before.metadata().current_snapshot().unwrap().clone();
    let all_rows = rows(&before).await;

    let merged = env
        .write(
            1,
            &[(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e"), (6, "f")],
        )
        .await;
    let change = ReplaceDataFiles {
        starting_snapshot_id: start.snapshot_id(),
        delete_paths: paths(&small),
        add: vec![merged.clone()],
        summary_properties: job_props(),
        remove_dangling_deletes: false,
        use_starting_sequence_number: true,
        output_spec_id: None,
    };
    let out = env.replace(&change).await.unwrap();
    assert_eq!(out.attempts, 1);

    let table = env.table().await;
    let snap = table.metadata().current_snapshot().unwrap();
    assert_eq!(snap.snapshot_id(), out.snapshot_id);
    assert_eq!(snap.parent_snapshot_id(), Some(start.snapshot_id()));
    assert_eq!(snap.summary().operation, Operation::Replace);
    let sum = &snap.summary().additional_properties;
    assert_eq!(sum, &out.summary);
    let removed_size: u64 = small.iter().map(|f| f.file_size_in_bytes()).sum();
    let other_size = other.file_size_in_bytes();
    assert_eq!(sum["icemaint.job-id"], "job-1");
    assert_eq!(sum[s::ADDED_DATA_FILES], "1");
    assert_eq!(sum[s::DELETED_DATA_FILES], "3");
    assert_eq!(sum[s::ADDED_RECORDS], "6");
    assert_eq!(sum[s::DELETED_RECORDS], "6");
    assert_eq!(
        sum[s::ADDED_FILES_SIZE],
        merged.file_size_in_bytes().to_string()
    );
    assert_eq!(sum[s::REMOVED_FILES_SIZE], removed_size.to_string());
    assert_eq!(sum[s::CHANGED_PARTITION_COUNT], "1");
    assert_eq!(sum[s::TOTAL_DATA_FILES], "2");
    assert_eq!(sum[s::TOTAL_RECORDS], "7");
    assert_eq!(
        sum[s::TOTAL_FILES_SIZE],
        (merged.file_size_in_bytes() + other_size).to_string()
    );
    assert_eq!(sum[s::TOTAL_DELETE_FILES], "0");
    assert_eq!(sum[s::TOTAL_POSITION_DELETES], "0");
    assert_eq!(sum[s::TOTAL_EQUALITY_DELETES], "0");

    assert_eq!(rows(&table).await, all_rows);
    assert_eq!(
        live_files(&table).await,
        HashSet::from([
            merged.file_path().to_string(),
            other.file_path().to_string()
        ])
    );

    // Manifest entries: new file ADDED with the starting snapshot's data sequence number and the
    // new snapshot's file sequence number; replaced files DELETED with their own numbers.
    let list = table.manifest_list_reader(snap).load().await.unwrap();
    let mut seen_added = false;
    let mut deleted = 0;
    for m in list.entries() {
        let manifest = m.load_manifest(table.file_io()).await.unwrap();
        for e in manifest.entries() {
            if e.file_path() == merged.file_path() {
                assert_eq!(e.status(), ManifestStatus::Added);
                assert_eq!(e.sequence_number(), Some(start.sequence_number()));
                assert_eq!(e.file_sequence_number, Some(snap.sequence_number()));
                assert_eq!(e.snapshot_id(), Some(out.snapshot_id));
                seen_added = true;
            } else if change.delete_paths.iter().any(|p| p == e.file_path()) {
                assert_eq!(e.status(), ManifestStatus::Deleted);
                assert_eq!(e.snapshot_id(), Some(out.snapshot_id));
                assert!(e.sequence_number().unwrap() < start.sequence_number());
                assert!(e.file_sequence_number.is_some());
                deleted += 1;
            } else {
                assert_eq!(e.file_path(), other.file_path());
                assert!(e.is_alive());
            }
        }
    }
    assert!(seen_added);
    assert_eq!(deleted, 3);
    assert!(unreferenced_metadata_files(&table).await.is_empty());

    // A second replace drops the manifests that only record the first one's deletions.
    let manifests_before = list.entries().len();
    let merged2 = env
        .write(
            1,
            &[(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e"), (6, "f")],
        )
        .await;
    let out2 = env
        .replace(&ReplaceDataFiles {
            starting_snapshot_id: out.snapshot_id,
            delete_paths: vec![merged.file_path().to_string()],
            add: vec![merged2],
            summary_properties: HashMap::new(),
            remove_dangling_deletes: false,
            use_starting_sequence_number: true,
            output_spec_id: None,
        })
        .await
        .unwrap();
    let t2 = out2.table;
    let list2 = t2
        .manifest_list_reader(t2.metadata().current_snapshot().unwrap())
        .load()
        .await
        .unwrap();
    // Before: new manifest + 3 manifests of deletions + other partition's = 5. After: the 3 are
    // gone, the first replace's manifest is rewritten, plus the new one and the carried one.
    assert_eq!(manifests_before, 5);
    assert_eq!(list2.entries().len(), 3);
    assert_eq!(rows(&t2).await, all_rows);
}

/// Commits through the real backend after first appending `file` through the catalog, so the
/// first attempt's base is stale and the compare-and-swap fails.
#[derive(Debug)]
struct AppendFirst {
    inner: SqlCommitBackend,
    catalog: Arc<SqlCatalog>,
    file: std::sync::Mutex<Option<DataFile>>,
    calls: AtomicU32,
}

#[async_trait::async_trait]
impl CommitBackend for AppendFirst {
    async fn commit(
        &self,
        base: &Table,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
    ) -> Result<Table, CommitError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let file = self.file.lock().unwrap().take();
        if let Some(f) = file {
            let current = self.catalog.load_table(base.identifier()).await.unwrap();
            append(&*self.catalog, &current, vec![f]).await;
        }
        self.inner.commit(base, requirements, updates).await
    }
}

#[tokio::test]
async fn concurrent_append_survives_a_conflict_and_retry() {
    let env = Env::new().await;
    let a = env.write(1, &[(1, "a")]).await;
    let b = env.write(1, &[(2, "b")]).await;
    env.append(vec![a.clone()]).await;
    let start = env.append(vec![b.clone()]).await;
    let start_id = start.metadata().current_snapshot_id().unwrap();
    let merged = env.write(1, &[(1, "a"), (2, "b")]).await;
    let concurrent = env.write(1, &[(3, "c")]).await;

    let backend = AppendFirst {
        inner: env.backend.clone(),
        catalog: env.catalog.clone(),
        file: std::sync::Mutex::new(Some(concurrent.clone())),
        calls: AtomicU32::new(0),
    };
    let change = ReplaceDataFiles {
        starting_snapshot_id: start_id,
        delete_paths: paths(&[a, b]),
        add: vec![merged.clone()],
        summary_properties: job_props(),
        remove_dangling_deletes: false,
        use_starting_sequence_number: true,
        output_spec_id: None,
    };
    let out = commit_replace(
        &*env.catalog,
        &backend,
        &env.ident,
        &change,
        &fast_retry(),
        &Fence::none(),
    )
    .await
    .unwrap();
    assert_eq!(out.attempts, 2);
    assert_eq!(backend.calls.load(Ordering::SeqCst), 2);

    let table = env.table().await;
    let snap = table.metadata().current_snapshot().unwrap();
    assert_eq!(snap.snapshot_id(), out.snapshot_id);
    // Built on the concurrent append, not on the starting snapshot.
    assert_ne!(snap.parent_snapshot_id(), Some(start_id));
    assert_eq!(
        live_files(&table).await,
        HashSet::from([
            merged.file_path().to_string(),
            concurrent.file_path().to_string()
        ])
    );
    assert_eq!(
        rows(&table).await,
        expected(&[(1, "a"), (2, "b"), (3, "c")])
    );
    let sum = &snap.summary().additional_properties;
    assert_eq!(sum[s::TOTAL_DATA_FILES], "2");
    assert_eq!(sum[s::TOTAL_RECORDS], "3");
    // The first attempt's manifests, manifest list and metadata file were all removed.
    assert_eq!(
        unreferenced_metadata_files(&table).await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn file_removed_after_start_fails_validation_and_leaves_table_unchanged() {
    let env = Env::new().await;
    let a = env.write(1, &[(1, "a")]).await;
    let b = env.write(1, &[(2, "b")]).await;
    let start = env.append(vec![a.clone(), b.clone()]).await;
    let start_id = start.metadata().current_snapshot_id().unwrap();

    // Someone else compacts `a` away first.
    let a2 = env.write(1, &[(1, "a")]).await;
    env.replace(&ReplaceDataFiles {
        starting_snapshot_id: start_id,
        delete_paths: vec![a.file_path().to_string()],
        add: vec![a2.clone()],
        summary_properties: HashMap::new(),
        remove_dangling_deletes: false,
        use_starting_sequence_number: true,
        output_spec_id: None,
    })
    .await
    .unwrap();
    let before = env.table().await;

    let merged = env.write(1, &[(1, "a"), (2, "b")]).await;
    let err = env
        .replace(&ReplaceDataFiles {
            starting_snapshot_id: start_id,
            delete_paths: paths(&[a.clone(), b]),
            add: vec![merged],
            summary_properties: HashMap::new(),
            remove_dangling_deletes: false,
            use_starting_sequence_number: true,
            output_spec_id: None,
        })
        .await
        .unwrap_err();
    match &err {
        ReplaceError::Validation(m) => assert_eq!(
            m,
            &format!("missing required files to delete: {}", a.file_path())
        ),
        other => panic!("expected a validation error, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(!err.may_have_committed());

    let after = env.table().await;
    assert_eq!(after.metadata_location(), before.metadata_location());
    assert_eq!(
        after.metadata().current_snapshot_id(),
        before.metadata().current_snapshot_id()
    );
    assert!(unreferenced_metadata_files(&after).await.is_empty());
}

#[tokio::test]
async fn position_delete_after_start_on_a_replaced_file_is_a_conflict() {
    let env = Env::new().await;
    let a = env.write(1, &[(1, "a"), (2, "b")]).await;
    let b = env.write(1, &[(3, "c")]).await;
    let c = env.write(2, &[(10, "x"), (11, "y")]).await;
    let start = env.append(vec![a.clone(), b.clone(), c.clone()]).await;
    let start_id = start.metadata().current_snapshot_id().unwrap();

    // A position delete on a file in another partition does not conflict and keeps working.
    let pos_c = write_position_delete(&start, 2, c.file_path(), &[0]).await;
    add_deletes(&env, vec![pos_c]).await;
    let merged = env.write(1, &[(1, "a"), (2, "b"), (3, "c")]).await;
    let ok = env
        .replace(&ReplaceDataFiles {
            starting_snapshot_id: start_id,
            delete_paths: paths(&[a.clone(), b.clone()]),
            add: vec![merged.clone()],
            summary_properties: HashMap::new(),
            remove_dangling_deletes: false,
            use_starting_sequence_number: true,
            output_spec_id: None,
        })
        .await
        .unwrap();
    assert_eq!(
        rows(&ok.table).await,
        expected(&[(1, "a"), (2, "b"), (3, "c"), (11, "y")])
    );
    let sum = &ok
        .table
        .metadata()
        .current_snapshot()
        .unwrap()
        .summary()
        .additional_properties;
    // The row delta above wrote no totals, so none can be derived (Java does the same).
    assert!(!sum.contains_key(s::TOTAL_DATA_FILES));

    // A position delete on a file the rewrite replaces does conflict.
    let start2 = ok.snapshot_id;
    let pos_m = write_position_delete(&ok.table, 1, merged.file_path(), &[1]).await;
    add_deletes(&env, vec![pos_m.clone()]).await;
    let before = env.table().await;
    let merged2 = env.write(1, &[(1, "a"), (2, "b"), (3, "c")]).await;
    let err = env
        .replace(&ReplaceDataFiles {
            starting_snapshot_id: start2,
            delete_paths: vec![merged.file_path().to_string()],
            add: vec![merged2],
            summary_properties: HashMap::new(),
            remove_dangling_deletes: false,
            use_starting_sequence_number: true,
            output_spec_id: None,
        })
        .await
        .unwrap_err();
    match &err {
        ReplaceError::Validation(m) => {
            assert!(
                m.starts_with(&format!(
                    "found new delete for replaced data file: {}",
                    merged.file_path()
                )),
                "{m}"
            );
            assert!(m.contains(pos_m.file_path()), "{m}");
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
    let after = env.table().await;
    assert_eq!(after.metadata_location(), before.metadata_location());
    assert!(unreferenced_metadata_files(&after).await.is_empty());
}

#[tokio::test]
async fn equality_delete_after_start_is_no_conflict_and_still_applies() {
    let env = Env::new().await;
    let a = env.write(1, &[(1, "a"), (2, "b")]).await;
    let b = env.write(1, &[(3, "c"), (4, "d")]).await;
    let appended = env.append(vec![a.clone(), b.clone()]).await;

    // An equality delete committed before the rewrite starts: the rewrite applies it while
    // reading, so the merged file lacks id 1.
    let eq_old = write_equality_delete(&appended, 1, &[1]).await;
    let with_old = add_deletes(&env, vec![eq_old]).await;
    let start_id = with_old.snapshot_id;
    assert_eq!(
        rows(&with_old.table).await,
        expected(&[(2, "b"), (3, "c"), (4, "d")])
    );

    // The rewrite reads at `start_id` ...
    let merged = env.write(1, &[(2, "b"), (3, "c"), (4, "d")]).await;
    // ... while a writer deletes id 3 with an equality delete.
    let eq_new = write_equality_delete(&with_old.table, 1, &[3]).await;
    add_deletes(&env, vec![eq_new]).await;

    let out = env
        .replace(&ReplaceDataFiles {
            starting_snapshot_id: start_id,
            delete_paths: paths(&[a, b]),
            add: vec![merged],
            summary_properties: HashMap::new(),
            remove_dangling_deletes: false,
            use_starting_sequence_number: true,
            output_spec_id: None,
        })
        .await
        .unwrap();
    // The new equality delete still applies to the merged file (same data sequence number as the
    // start), the old one no longer matters (id 1 is not in the merged file anyway).
    assert_eq!(rows(&out.table).await, expected(&[(2, "b"), (4, "d")]));
}

#[tokio::test]
async fn sql_cas_conflict_removes_its_metadata_file() {
    let env = Env::new().await;
    let stale = env.table().await;
    env.append(vec![env.write(1, &[(1, "a")]).await]).await;
    let current = env.table().await;

    let updates = vec![TableUpdate::SetProperties {
        updates: HashMap::from([("k".to_string(), "v".to_string())]),
    }];
    let err = env
        .backend
        .commit(&stale, vec![], updates.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, CommitError::Conflict(_)), "{err:?}");
    let after = env.table().await;
    assert_eq!(after.metadata_location(), current.metadata_location());
    assert_eq!(
        unreferenced_metadata_files(&after).await,
        Vec::<String>::new()
    );

    // A requirement that fails against the base is a conflict too, and writes nothing.
    let err = env
        .backend
        .commit(
            &current,
            vec![TableRequirement::RefSnapshotIdMatch {
                r#ref: "main".to_string(),
                snapshot_id: Some(1),
            }],
            updates.clone(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CommitError::Conflict(_)), "{err:?}");
    assert_eq!(
        unreferenced_metadata_files(&after).await,
        Vec::<String>::new()
    );

    // And a fresh base commits.
    let committed = env
        .backend
        .commit(&current, vec![], updates.clone())
        .await
        .unwrap();
    assert_eq!(committed.metadata().properties()["k"], "v");
    let reloaded = env.table().await;
    assert_eq!(reloaded.metadata_location(), committed.metadata_location());
    assert_eq!(reloaded.metadata().properties()["k"], "v");

    // A dropped table is reported as not found.
    env.catalog.drop_table(&env.ident).await.unwrap();
    let err = env
        .backend
        .commit(&reloaded, vec![], updates)
        .await
        .unwrap_err();
    assert!(matches!(err, CommitError::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn sql_commit_deletes_expired_metadata_files_when_asked() {
    let env = Env::with(
        FormatVersion::V2,
        &[
            ("write.metadata.delete-after-commit.enabled", "true"),
            ("write.metadata.previous-versions-max", "1"),
        ],
    )
    .await;
    let first = env.table().await.metadata_location().unwrap().to_string();
    for i in 0..3 {
        let t = env.table().await;
        env.backend
            .commit(
                &t,
                vec![],
                vec![TableUpdate::SetProperties {
                    updates: HashMap::from([("n".to_string(), i.to_string())]),
                }],
            )
            .await
            .unwrap();
    }
    let t = env.table().await;
    assert_eq!(t.metadata().metadata_log().len(), 1);
    assert!(!local_path(&first).exists());
    let json_files =
        std::fs::read_dir(local_path(&format!("{}/metadata", t.metadata().location())))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".metadata.json")
            })
            .count();
    assert_eq!(json_files, 2);
}

/// Returns `StateUnknown` after optionally committing for real.
#[derive(Debug)]
struct UnknownOutcome {
    inner: SqlCommitBackend,
    really_commit: bool,
}

#[async_trait::async_trait]
impl CommitBackend for UnknownOutcome {
    async fn commit(
        &self,
        base: &Table,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
    ) -> Result<Table, CommitError> {
        if self.really_commit {
            self.inner.commit(base, requirements, updates).await?;
        }
        Err(CommitError::StateUnknown("connection reset".to_string()))
    }
}

#[tokio::test]
async fn unknown_state_is_resolved_by_looking_for_the_snapshot() {
    let env = Env::new().await;
    let a = env.write(1, &[(1, "a")]).await;
    let b = env.write(1, &[(2, "b")]).await;
    let start = env.append(vec![a.clone(), b.clone()]).await;
    let change = ReplaceDataFiles {
        starting_snapshot_id: start.metadata().current_snapshot_id().unwrap(),
        delete_paths: paths(&[a, b]),
        add: vec![env.write(1, &[(1, "a"), (2, "b")]).await],
        summary_properties: HashMap::new(),
        remove_dangling_deletes: false,
        use_starting_sequence_number: true,
        output_spec_id: None,
    };

    // Not committed: the error says so, and the written manifests stay (they might be live).
    let backend = UnknownOutcome {
        inner: env.backend.clone(),
        really_commit: false,
    };
    let err = commit_replace(
        &*env.catalog,
        &backend,
        &env.ident,
        &change,
        &fast_retry(),
        &Fence::none(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ReplaceError::StateUnknown(_)), "{err:?}");
    assert!(err.may_have_committed());
    let table = env.table().await;
    assert_eq!(table.metadata_location(), start.metadata_location());
    let left = unreferenced_metadata_files(&table).await;
    assert_eq!(
        left.iter().filter(|n| n.starts_with("snap-")).count(),
        1,
        "{left:?}"
    );
    assert!(left.iter().any(|n| n.contains("-m")), "{left:?}");

    // Committed although the answer was lost: found by reloading.
    let backend = UnknownOutcome {
        inner: env.backend.clone(),
        really_commit: true,
    };
    let out = commit_replace(
        &*env.catalog,
        &backend,
        &env.ident,
        &change,
        &fast_retry(),
        &Fence::none(),
    )
    .await
    .unwrap();
    let table = env.table().await;
    assert_eq!(
        table.metadata().current_snapshot_id(),
        Some(out.snapshot_id)
    );
    assert_eq!(rows(&table).await, expected(&[(1, "a"), (2, "b")]));
}

/// Always answers "conflict".
#[derive(Debug)]
struct AlwaysConflict(AtomicU32);

#[async_trait::async_trait]
impl CommitBackend for AlwaysConflict {
    async fn commit(
        &self,
        _base: &Table,
        _requirements: Vec<TableRequirement>,
        _updates: Vec<TableUpdate>,
    ) -> Result<Table, CommitError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(CommitError::Conflict("lost the race".to_string()))
    }
}

#[tokio::test]
async fn conflicts_stop_at_the_retry_budget_and_clean_up() {
    let env = Env::new().await;
    let a = env.write(1, &[(1, "a")]).await;
    let start = env.append(vec![a.clone()]).await;
    let backend = AlwaysConflict(AtomicU32::new(0));
    let err = commit_replace(
        &*env.catalog,
        &backend,
        &env.ident,
        &ReplaceDataFiles {
            starting_snapshot_id: start.metadata().current_snapshot_id().unwrap(),
            delete_paths: paths(&[a]),
            add: vec![env.write(1, &[(1, "a")]).await],
            summary_properties: HashMap::new(),
            remove_dangling_deletes: false,
            use_starting_sequence_number: true,
            output_spec_id: None,
        },
        &fast_retry(),
        &Fence::none(),
    )
    .await
    .unwrap_err();
    match &err {
        ReplaceError::RetriesExhausted { attempts, last } => {
            assert_eq!(*attempts, 4);
            assert!(last.contains("lost the race"));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.is_retryable());
    assert_eq!(backend.0.load(Ordering::SeqCst), 4);
    assert!(
        unreferenced_metadata_files(&env.table().await)
            .await
            .is_empty()
    );
}

/// A job whose lease was taken over sends nothing: the fence refuses right before the backend
/// call, the attempt's manifests are deleted and the table is unchanged.
#[tokio::test]
async fn a_lost_lease_sends_no_commit() {
    let env = Env::new().await;
    let a = env.write(1, &[(1, "a")]).await;
    let start = env.append(vec![a.clone()]).await;
    let url = format!("sqlite://{}", env.dir.path().join("state.db").display());
    let store = crate::store::Store::connect(&url).await.unwrap();
    let epoch = store.try_lock("db.t", "p", "j1", 60_000).await.unwrap();
    let epoch = epoch.unwrap();
    let lease = crate::fence::Lease {
        table: "db.t".into(),
        job_id: "j1".into(),
        epoch,
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let fence = Fence::new(store.clone(), lease, Duration::from_secs(60), cancel);
    // Another replica took the table over while this job was paused.
    store.unlock("db.t", "j1", epoch).await.unwrap();
    store
        .try_lock("db.t", "q", "j2", 60_000)
        .await
        .unwrap()
        .unwrap();

    let backend = AlwaysConflict(AtomicU32::new(0));
    let change = ReplaceDataFiles {
        starting_snapshot_id: start.metadata().current_snapshot_id().unwrap(),
        delete_paths: paths(&[a]),
        add: vec![env.write(1, &[(1, "a")]).await],
        summary_properties: HashMap::new(),
        remove_dangling_deletes: false,
        use_starting_sequence_number: true,
        output_spec_id: None,
    };
    let err = commit_replace(
        &*env.catalog,
        &backend,
        &env.ident,
        &change,
        &fast_retry(),
        &fence,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ReplaceError::Fenced(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("lease on db.t lost: taken over by job j2"),
        "{msg}"
    );
    assert!(!err.is_retryable() && !err.may_have_committed());
    assert_eq!(backend.0.load(Ordering::SeqCst), 0, "nothing sent");
    let table = env.table().await;
    assert_eq!(table.metadata_location(), start.metadata_location());
    assert!(unreferenced_metadata_files(&table).await.is_empty());
}

#[tokio::test]
async fn starting_snapshot_must_be_an_ancestor() {
    let env = Env::new().await;
    let a = env.write(1, &[(1, "a")]).await;
    env.append(vec![a.clone()]).await;
    let err = env
        .replace(&ReplaceDataFiles {
            starting_snapshot_id: 12345,
            delete_paths: paths(&[a]),
            add: vec![],
            summary_properties: HashMap::new(),
            remove_dangling_deletes: false,
            use_starting_sequence_number: true,
            output_spec_id: None,
        })
        .await
        .unwrap_err();
    match err {
        ReplaceError::Validation(m) => assert!(m.contains("starting snapshot 12345"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn replace_without_added_files_removes_the_files() {
    let env = Env::new().await;
    let a = env.write(1, &[(1, "a")]).await;
    let b = env.write(2, &[(2, "b")]).await;
    let start = env.append(vec![a.clone(), b.clone()]).await;
    let out = env
        .replace(&ReplaceDataFiles {
            starting_snapshot_id: start.metadata().current_snapshot_id().unwrap(),
            delete_paths: paths(&[a]),
            add: vec![],
            summary_properties: HashMap::new(),
            remove_dangling_deletes: false,
            use_starting_sequence_number: true,
            output_spec_id: None,
        })
        .await
        .unwrap();
    assert_eq!(rows(&out.table).await, expected(&[(2, "b")]));
    assert!(!out.summary.contains_key(s::ADDED_DATA_FILES));
    assert_eq!(out.summary[s::DELETED_DATA_FILES], "1");
}

#[tokio::test]
async fn refuses_empty_invalid_changes_and_v3_tables() {
    let env = Env::new().await;
    let err = env.replace(&ReplaceDataFiles::default()).await.unwrap_err();
    assert!(matches!(err, ReplaceError::EmptyChange), "{err:?}");

    let a = env.write(1, &[(1, "a")]).await;
    let start = env.append(vec![a.clone()]).await;
    let start_id = start.metadata().current_snapshot_id().unwrap();
    let err = env
        .replace(&ReplaceDataFiles {
            starting_snapshot_id: start_id,
            delete_paths: vec![],
            add: vec![a.clone()],
            summary_properties: HashMap::new(),
            remove_dangling_deletes: false,
            use_starting_sequence_number: true,
            output_spec_id: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ReplaceError::InvalidChange(_)), "{err:?}");

    // Adding a file that is already live.
    let b = env.write(1, &[(2, "b")]).await;
    let start = env.append(vec![b.clone()]).await;
    let err = env
        .replace(&ReplaceDataFiles {
            starting_snapshot_id: start.metadata().current_snapshot_id().unwrap(),
            delete_paths: paths(&[b]),
            add: vec![a],
            summary_properties: HashMap::new(),
            remove_dangling_deletes: false,
            use_starting_sequence_number: true,
            output_spec_id: None,
        })
        .await
        .unwrap_err();
    match err {
        ReplaceError::InvalidChange(m) => assert!(m.contains("already in the table"), "{m}"),
        other => panic!("{other:?}"),
    }

    let v3 = Env::with(FormatVersion::V3, &[]).await;
    let f = v3.write(1, &[(1, "a")]).await;
    let t = v3.append(vec![f.clone()]).await;
    let err = v3
        .replace(&ReplaceDataFiles {
            starting_snapshot_id: t.metadata().current_snapshot_id().unwrap(),
            delete_paths: paths(&[f]),
            add: vec![v3.write(1, &[(1, "a")]).await],
            summary_properties: HashMap::new(),
            remove_dangling_deletes: false,
            use_starting_sequence_number: true,
            output_spec_id: None,
        })
        .await
        .unwrap_err();
    match err {
        ReplaceError::Unsupported(m) => assert!(m.contains("format version v3"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Nothing written for the v3 table either.
    assert!(
        unreferenced_metadata_files(&v3.table().await)
            .await
            .is_empty()
    );
    drop(v3.dir);
}

/// A v1 table is compacted as Java's `BaseRewriteFiles` does there: v1 manifests and manifest
/// list (no sequence numbers: every entry and manifest reads as sequence 0), conflicts found by
/// snapshot ancestry and live paths, a concurrent append kept, and no delete files possible.
#[tokio::test]
async fn v1_table_is_replaced_with_v1_manifests_and_keeps_a_concurrent_append() {
    let env = Env::with(FormatVersion::V1, &[]).await;
    let a = env.write(1, &[(1, "a")]).await;
    let b = env.write(1, &[(2, "b")]).await;
    let other = env.write(2, &[(9, "z")]).await;
    env.append(vec![a.clone()]).await;
    env.append(vec![other.clone()]).await;
    let start = env.append(vec![b.clone()]).await;
    let start_id = start.metadata().current_snapshot_id().unwrap();
    let merged = env.write(1, &[(1, "a"), (2, "b")]).await;
    let concurrent = env.write(1, &[(3, "c")]).await;
    let backend = AppendFirst {
        inner: env.backend.clone(),
        catalog: env.catalog.clone(),
        file: std::sync::Mutex::new(Some(concurrent.clone())),
        calls: AtomicU32::new(0),
    };
    let change = ReplaceDataFiles {
        starting_snapshot_id: start_id,
        delete_paths: paths(&[a.clone(), b.clone()]),
        add: vec![merged.clone()],
        summary_properties: job_props(),
        remove_dangling_deletes: true,
        use_starting_sequence_number: true,
        output_spec_id: None,
    };
    let out = commit_replace(
        &*env.catalog,
        &backend,
        &env.ident,
        &change,
        &fast_retry(),
        &Fence::none(),
    )
    .await
    .unwrap();
    assert_eq!(out.attempts, 2, "the concurrent append forces a rebuild");

    let table = env.table().await;
    assert_eq!(table.metadata().format_version(), FormatVersion::V1);
    let snap = table.metadata().current_snapshot().unwrap();
    assert_eq!(snap.snapshot_id(), out.snapshot_id);
    assert_eq!(snap.sequence_number(), 0);
    assert_eq!(snap.summary().operation, Operation::Replace);
    let sum = &snap.summary().additional_properties;
    assert_eq!(sum[s::ADDED_DATA_FILES], "1");
    assert_eq!(sum[s::DELETED_DATA_FILES], "2");
    assert_eq!(sum[s::TOTAL_DATA_FILES], "3");
    assert_eq!(sum[s::TOTAL_RECORDS], "4");
    assert_eq!(
        live_files(&table).await,
        HashSet::from([
            merged.file_path().to_string(),
            concurrent.file_path().to_string(),
            other.file_path().to_string(),
        ])
    );
    assert_eq!(
        rows(&table).await,
        expected(&[(1, "a"), (2, "b"), (3, "c"), (9, "z")])
    );
    let list = table.manifest_list_reader(snap).load().await.unwrap();
    let mut deleted = 0;
    for m in list.entries() {
        assert_eq!(m.content, ManifestContentType::Data);
        assert_eq!(m.sequence_number, 0, "{}", m.manifest_path);
        let manifest = m.load_manifest(table.file_io()).await.unwrap();
        if m.added_snapshot_id == out.snapshot_id {
            assert_eq!(manifest.metadata().format_version(), &FormatVersion::V1);
        }
        for e in manifest.entries() {
            assert_eq!(e.sequence_number(), Some(0));
            if e.status() == ManifestStatus::Deleted {
                assert_eq!(e.snapshot_id(), Some(out.snapshot_id));
                deleted += 1;
            }
        }
    }
    assert_eq!(deleted, 2);
    // The v1 manifest list says so in its header.
    let raw = std::fs::read(local_path(snap.manifest_list())).unwrap();
    let header = String::from_utf8_lossy(&raw[..raw.len().min(4096)]).to_string();
    assert!(header.contains("format-version"), "{header}");
    assert!(!header.contains("sequence-number"), "{header}");
    assert!(unreferenced_metadata_files(&table).await.is_empty());

    // A replaced file that another writer removed meanwhile fails validation, as in v2.
    let again = env.write(1, &[(1, "a"), (2, "b")]).await;
    let err = env
        .replace(&ReplaceDataFiles {
            starting_snapshot_id: start_id,
            delete_paths: paths(&[a]),
            add: vec![again],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ReplaceError::Validation(_)), "{err:?}");
}

#[tokio::test]
async fn retention_of_main_is_kept() {
    let env = Env::new().await;
    let a = env.write(1, &[(1, "a")]).await;
    let t = env.append(vec![a.clone()]).await;
    let head = t.metadata().current_snapshot_id().unwrap();
    // Give `main` a retention setting the way Java would have it.
    let t = env
        .backend
        .commit(
            &t,
            vec![],
            vec![TableUpdate::SetSnapshotRef {
                ref_name: "main".to_string(),
                reference: iceberg::spec::SnapshotReference::new(
                    head,
                    iceberg::spec::SnapshotRetention::branch(Some(7), None, None),
                ),
            }],
        )
        .await
        .unwrap();
    let out = env
        .replace(&ReplaceDataFiles {
            starting_snapshot_id: head,
            delete_paths: paths(&[a]),
            add: vec![env.write(1, &[(1, "a")]).await],
            summary_properties: HashMap::new(),
            remove_dangling_deletes: false,
            use_starting_sequence_number: true,
            output_spec_id: None,
        })
        .await
        .unwrap();
    assert_ne!(out.snapshot_id, head);
    let json = serde_json::to_value(out.table.metadata()).unwrap();
    assert_eq!(json["refs"]["main"]["snapshot-id"], out.snapshot_id);
    assert_eq!(json["refs"]["main"]["min-snapshots-to-keep"], 7);
    let _ = t;
}

/// Paths of the live delete files of the current snapshot, and the paths its delete manifests
/// mark DELETED.
async fn delete_files(table: &Table) -> (HashSet<String>, HashSet<String>) {
    let snap = table.metadata().current_snapshot().unwrap();
    let list = table.manifest_list_reader(snap).load().await.unwrap();
    let (mut live, mut deleted) = (HashSet::new(), HashSet::new());
    for m in list
        .entries()
        .iter()
        .filter(|m| m.content == ManifestContentType::Deletes)
    {
        let manifest = m.load_manifest(table.file_io()).await.unwrap();
        for e in manifest.entries() {
            let path = e.file_path().to_string();
            match e.status() {
                ManifestStatus::Deleted => deleted.insert(path),
                _ => live.insert(path),
            };
        }
    }
    (live, deleted)
}

#[tokio::test]
async fn dangling_deletes_are_removed_in_the_same_snapshot() {
    let env = Env::new().await;
    let a = env.write(1, &[(1, "a"), (2, "b")]).await;
    let b = env.write(1, &[(3, "c"), (4, "d")]).await;
    let c = env.write(2, &[(10, "x"), (11, "y")]).await;
    let appended = env.append(vec![a.clone(), b.clone(), c.clone()]).await;

    // Before the rewrite starts: an equality delete and a position delete in partition 1 (the
    // rewrite applies them), an equality delete in partition 2 (not rewritten: still needed).
    // The position delete is the starting snapshot itself: its sequence number equals the
    // rewritten files', so only its naming a replaced file makes it dangle.
    let eq_1 = write_equality_delete(&appended, 1, &[1]).await;
    add_deletes(&env, vec![eq_1.clone()]).await;
    let eq_2 = write_equality_delete(&appended, 2, &[10]).await;
    add_deletes(&env, vec![eq_2.clone()]).await;
    let pos_1 = write_position_delete(&appended, 1, a.file_path(), &[1]).await;
    let start = add_deletes(&env, vec![pos_1.clone()]).await;
    assert_eq!(
        rows(&start.table).await,
        expected(&[(3, "c"), (4, "d"), (11, "y")])
    );

    // While rewriting, a writer deletes id 3: its delete is newer than the rewritten rows and
    // must stay.
    let merged = env.write(1, &[(3, "c"), (4, "d")]).await;
    let eq_new = write_equality_delete(&start.table, 1, &[3]).await;
    add_deletes(&env, vec![eq_new.clone()]).await;

    let out = env
        .replace(&ReplaceDataFiles {
            starting_snapshot_id: start.snapshot_id,
            delete_paths: paths(&[a, b]),
            add: vec![merged],
            summary_properties: HashMap::new(),
            remove_dangling_deletes: true,
            use_starting_sequence_number: true,
            output_spec_id: None,
        })
        .await
        .unwrap();
    assert_eq!(rows(&out.table).await, expected(&[(4, "d"), (11, "y")]));
    let (live, deleted) = delete_files(&out.table).await;
    assert_eq!(live, paths(&[eq_2, eq_new]).into_iter().collect());
    assert_eq!(deleted, paths(&[eq_1, pos_1]).into_iter().collect());

    let sum = &out.summary;
    for (key, value) in [
        (s::DELETED_DATA_FILES, "2"),
        (s::REMOVED_DELETE_FILES, "2"),
        (s::REMOVED_POSITION_DELETE_FILES, "1"),
        (s::REMOVED_EQUALITY_DELETE_FILES, "1"),
        (s::REMOVED_POSITION_DELETES, "1"),
        (s::REMOVED_EQUALITY_DELETES, "1"),
    ] {
        assert_eq!(
            sum.get(key).map(String::as_str),
            Some(value),
            "{key}: {sum:?}"
        );
    }
    assert!(unreferenced_metadata_files(&out.table).await.is_empty());
}

#[tokio::test]
async fn without_the_option_every_delete_file_is_carried() {
    let env = Env::new().await;
    let a = env.write(1, &[(1, "a"), (2, "b")]).await;
    let b = env.write(1, &[(3, "c")]).await;
    let appended = env.append(vec![a.clone(), b.clone()]).await;
    let eq = write_equality_delete(&appended, 1, &[1]).await;
    let start = add_deletes(&env, vec![eq.clone()]).await;
    let merged = env.write(1, &[(2, "b"), (3, "c")]).await;
    let out = env
        .replace(&ReplaceDataFiles {
            starting_snapshot_id: start.snapshot_id,
            delete_paths: paths(&[a, b]),
            add: vec![merged],
            summary_properties: HashMap::new(),
            remove_dangling_deletes: false,
            use_starting_sequence_number: true,
            output_spec_id: None,
        })
        .await
        .unwrap();
    let (live, deleted) = delete_files(&out.table).await;
    assert_eq!(live, paths(&[eq]).into_iter().collect());
    assert!(deleted.is_empty());
    assert!(!out.summary.contains_key(s::REMOVED_DELETE_FILES));
    assert_eq!(rows(&out.table).await, expected(&[(2, "b"), (3, "c")]));
}

#[tokio::test]
async fn without_starting_sequence_number_a_new_equality_delete_conflicts() {
    let env = Env::new().await;
    let a = env.write(1, &[(1, "a"), (2, "b")]).await;
    let b = env.write(1, &[(3, "c")]).await;
    let start = env.append(vec![a.clone(), b.clone()]).await;
    let start_id = start.metadata().current_snapshot_id().unwrap();
    let replace = |add: DataFile| ReplaceDataFiles {
        starting_snapshot_id: start_id,
        delete_paths: paths(&[a.clone(), b.clone()]),
        add: vec![add],
        use_starting_sequence_number: false,
        output_spec_id: None,
        ..Default::default()
    };

    // An equality delete on the rewritten partition after the start: the new files would carry
    // a newer sequence number than the delete, so it would stop applying. Refused.
    let eq = write_equality_delete(&start, 1, &[3]).await;
    add_deletes(&env, vec![eq]).await;
    let merged = env.write(1, &[(1, "a"), (2, "b"), (3, "c")]).await;
    match env.replace(&replace(merged)).await.unwrap_err() {
        ReplaceError::Validation(m) => {
            assert!(
                m.starts_with("found new delete for replaced data file"),
                "{m}"
            );
            assert!(m.contains("equality"), "{m}");
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
    assert_eq!(
        rows(&env.table().await).await,
        expected(&[(1, "a"), (2, "b")])
    );

    // Without a concurrent delete it lands, and the new files read at the new sequence number.
    let env = Env::new().await;
    let a = env.write(1, &[(1, "a")]).await;
    let b = env.write(1, &[(2, "b")]).await;
    let start = env.append(vec![a.clone(), b.clone()]).await;
    let merged = env.write(1, &[(1, "a"), (2, "b")]).await;
    let out = env
        .replace(&ReplaceDataFiles {
            starting_snapshot_id: start.metadata().current_snapshot_id().unwrap(),
            delete_paths: paths(&[a, b]),
            add: vec![merged.clone()],
            use_starting_sequence_number: false,
            output_spec_id: None,
            ..Default::default()
        })
        .await
        .unwrap();
    let snap = out.table.metadata().current_snapshot().unwrap();
    let list = out.table.manifest_list_reader(snap).load().await.unwrap();
    let mut seqs = Vec::new();
    for m in list.entries() {
        let manifest = m.load_manifest(out.table.file_io()).await.unwrap();
        for e in manifest.entries() {
            if e.file_path() == merged.file_path() {
                seqs.push(e.sequence_number());
            }
        }
    }
    assert_eq!(seqs, vec![Some(snap.sequence_number())]);
    assert!(
        snap.sequence_number()
            > start
                .metadata()
                .current_snapshot()
                .unwrap()
                .sequence_number()
    );
    assert_eq!(rows(&out.table).await, expected(&[(1, "a"), (2, "b")]));
}

/// The spec's partition tuple is interpreted with that spec's transforms: new files written under
/// an older spec (`output-spec-id`) get a manifest of that spec, even when the default spec has
/// the same number of fields (else readers would prune them with the wrong transforms).
#[tokio::test]
async fn added_files_are_recorded_under_their_output_spec() {
    let env = Env::new().await;
    let a = env.write(1, &[(1, "a")]).await;
    let b = env.write(1, &[(2, "b")]).await;
    env.append(vec![a.clone()]).await;
    let before = env.append(vec![b.clone()]).await;
    let start = before.metadata().current_snapshot().unwrap().snapshot_id();
    let merged = env.write(1, &[(1, "a"), (2, "b")]).await;
    // The table moves to bucket(2, id): one field, like identity(part).
    let bucketed = UnboundPartitionSpec::builder()
        .add_partition_field(1, "id_bucket", Transform::Bucket(2))
        .unwrap()
        .build();
    env.backend
        .commit(
            &before,
            Vec::new(),
            vec![
                TableUpdate::AddSpec { spec: bucketed },
                TableUpdate::SetDefaultSpec { spec_id: -1 },
            ],
        )
        .await
        .unwrap();
    assert_eq!(env.table().await.metadata().default_partition_spec_id(), 1);
    let change = |output_spec_id| ReplaceDataFiles {
        starting_snapshot_id: start,
        delete_paths: paths(&[a.clone(), b.clone()]),
        add: vec![merged.clone()],
        output_spec_id,
        ..Default::default()
    };

    let e = env.replace(&change(Some(7))).await.unwrap_err();
    assert!(
        matches!(&e, ReplaceError::InvalidChange(m) if m.contains("no partition spec with id 7")),
        "{e}"
    );
    env.replace(&change(Some(0))).await.unwrap();
    let table = env.table().await;
    let snap = table.metadata().current_snapshot().unwrap();
    let list = table.manifest_list_reader(snap).load().await.unwrap();
    let added: Vec<_> = list
        .entries()
        .iter()
        .filter(|m| m.added_snapshot_id == snap.snapshot_id() && m.has_added_files())
        .collect();
    assert_eq!(added.len(), 1);
    assert_eq!(added[0].partition_spec_id, 0);
    let manifest = added[0].load_manifest(table.file_io()).await.unwrap();
    assert_eq!(manifest.metadata().partition_spec().spec_id(), 0);
    assert_eq!(
        manifest.entries()[0].data_file().partition(),
        &Struct::from_iter([Some(Literal::int(1))])
    );
    assert_eq!(
        rows(&table).await,
        vec![(1, "a".to_string()), (2, "b".to_string())]
    );
}
