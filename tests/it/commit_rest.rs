//! The replace commit through a real Iceberg REST catalog (the Java mini REST server over a
//! JdbcCatalog): tables created and appended to with iceberg-catalog-rest, rewritten with
//! [`commit_replace`] through icemaint's own [`RestCommitBackend`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use arrow_array::{Array, Int32Array, Int64Array, RecordBatch, StringArray};
use futures::TryStreamExt;
use iceberg::arrow::schema_to_arrow_schema;
use iceberg::io::LocalFsStorageFactory;
use iceberg::spec::{
    DataFile, DataFileFormat, Literal, NestedField, Operation, PartitionKey, PrimitiveType, Schema,
    Struct, Transform, Type, UnboundPartitionSpec,
};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
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
use iceberg_catalog_rest::{RestCatalog, RestCatalogBuilder};
use icemaint::catalog::rest::RestCommitBackend;
use icemaint::catalog::{CommitBackend, CommitError};
use icemaint::commit::{ReplaceDataFiles, ReplaceError, RetryPolicy, commit_replace};
use icemaint::config::{CatalogConfig, CatalogType};
use icemaint::fence::Fence;
use parquet::file::properties::WriterProperties;

use crate::harness::RestCatalogServer;

struct Env {
    _dir: tempfile::TempDir,
    _server: RestCatalogServer,
    catalog: Arc<RestCatalog>,
    backend: Arc<RestCommitBackend>,
    ident: TableIdent,
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        num_retries: 3,
        min_wait: Duration::from_millis(5),
        max_wait: Duration::from_millis(50),
        total_timeout: Duration::from_secs(60),
    }
}

/// A server with table `db.t` (`id long, name string, part int`, identity-partitioned by `part`).
async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let server = RestCatalogServer::start(&dir.path().join("warehouse"));
    let catalog = RestCatalogBuilder::default()
        .with_storage_factory(Arc::new(LocalFsStorageFactory))
        .load("rest", HashMap::from([("uri".to_string(), server.uri())]))
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
    // Java's CreateTableRequest parser requires the spec id.
    let spec = UnboundPartitionSpec::builder()
        .with_spec_id(0)
        .add_partition_field(3, "part", Transform::Identity)
        .unwrap()
        .build();
    catalog
        .create_table(
            &ns,
            TableCreation::builder()
                .name("t".to_string())
                .schema(schema)
                .partition_spec(spec)
                .build(),
        )
        .await
        .unwrap();
    let backend = RestCommitBackend::connect(&CatalogConfig {
        kind: CatalogType::Rest,
        uri: server.uri(),
        name: "rest".to_string(),
        warehouse: None,
        properties: Default::default(),
    })
    .await
    .unwrap();
    Env {
        _dir: dir,
        _server: server,
        catalog: Arc::new(catalog),
        backend: Arc::new(backend),
        ident: TableIdent::new(ns, "t".to_string()),
    }
}

impl Env {
    async fn table(&self) -> Table {
        self.catalog.load_table(&self.ident).await.unwrap()
    }

    async fn append(&self, files: Vec<DataFile>) -> Table {
        append(&*self.catalog, &self.table().await, files).await
    }

    async fn write(&self, part: i32, rows: &[(i64, &str)]) -> DataFile {
        write_data_file(&self.table().await, part, rows).await
    }
}

async fn append(catalog: &dyn Catalog, table: &Table, files: Vec<DataFile>) -> Table {
    let tx = Transaction::new(table);
    let tx = tx.fast_append().add_data_files(files).apply(tx).unwrap();
    tx.commit(catalog).await.unwrap()
}

async fn write_data_file(table: &Table, part: i32, rows: &[(i64, &str)]) -> DataFile {
    let md = table.metadata();
    let schema = md.current_schema().clone();
    let rolling = RollingFileWriterBuilder::new_with_default_file_size(
        ParquetWriterBuilder::new(WriterProperties::builder().build(), schema.clone()),
        table.file_io().clone(),
        DefaultLocationGenerator::new(md).unwrap(),
        DefaultFileNameGenerator::new(
            format!("it-{}", uuid::Uuid::new_v4().simple()),
            None,
            DataFileFormat::Parquet,
        ),
    );
    let key = PartitionKey::new(
        md.default_partition_spec().as_ref().clone(),
        schema.clone(),
        Struct::from_iter([Some(Literal::int(part))]),
    );
    let mut w = DataFileWriterBuilder::new(rolling)
        .build(Some(key))
        .await
        .unwrap();
    let batch = RecordBatch::try_new(
        Arc::new(schema_to_arrow_schema(&schema).unwrap()),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|_| part))),
        ],
    )
    .unwrap();
    w.write(batch).await.unwrap();
    w.close().await.unwrap().remove(0)
}

async fn rows(table: &Table) -> Vec<(i64, String)> {
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
        let ids = b.column_by_name("id").unwrap();
        let ids = ids.as_any().downcast_ref::<Int64Array>().unwrap();
        let names = b.column_by_name("name").unwrap();
        let names = names.as_any().downcast_ref::<StringArray>().unwrap();
        for i in 0..b.num_rows() {
            out.push((ids.value(i), names.value(i).to_string()));
        }
    }
    out.sort();
    out
}

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

fn paths(files: &[DataFile]) -> Vec<String> {
    files.iter().map(|f| f.file_path().to_string()).collect()
}

#[tokio::test]
async fn rest_replace_merges_files_and_keeps_rows() {
    let env = env().await;
    let mut small = Vec::new();
    for rows in [&[(1, "a"), (2, "b")][..], &[(3, "c")], &[(4, "d")]] {
        let f = env.write(1, rows).await;
        env.append(vec![f.clone()]).await;
        small.push(f);
    }
    let other = env.write(2, &[(9, "z")]).await;
    let start = env.append(vec![other.clone()]).await;
    let before = rows(&start).await;
    let merged = env
        .write(1, &[(1, "a"), (2, "b"), (3, "c"), (4, "d")])
        .await;

    let out = commit_replace(
        &*env.catalog,
        &*env.backend,
        &env.ident,
        &ReplaceDataFiles {
            starting_snapshot_id: start.metadata().current_snapshot_id().unwrap(),
            delete_paths: paths(&small),
            add: vec![merged.clone()],
            summary_properties: HashMap::from([(
                "icemaint.job-id".to_string(),
                "rest-1".to_string(),
            )]),
            remove_dangling_deletes: false,
            use_starting_sequence_number: true,
            output_spec_id: None,
        },
        &fast_retry(),
        &Fence::none(),
    )
    .await
    .unwrap();
    assert_eq!(out.attempts, 1);

    // What the server now serves, not just what it answered.
    let table = env.table().await;
    let snap = table.metadata().current_snapshot().unwrap();
    assert_eq!(snap.snapshot_id(), out.snapshot_id);
    assert_eq!(snap.summary().operation, Operation::Replace);
    let sum = &snap.summary().additional_properties;
    assert_eq!(sum["icemaint.job-id"], "rest-1");
    assert_eq!(sum["added-data-files"], "1");
    assert_eq!(sum["deleted-data-files"], "3");
    assert_eq!(sum["added-records"], "4");
    assert_eq!(sum["deleted-records"], "4");
    assert_eq!(sum["changed-partition-count"], "1");
    assert_eq!(sum["total-data-files"], "2");
    assert_eq!(sum["total-records"], "5");
    assert_eq!(rows(&table).await, before);
    assert_eq!(
        live_files(&table).await,
        HashSet::from([
            merged.file_path().to_string(),
            other.file_path().to_string()
        ])
    );
    assert_eq!(out.table.metadata_location(), table.metadata_location());
}

/// Appends `file` through the catalog before passing the (now stale) commit on.
#[derive(Debug)]
struct AppendFirst {
    inner: Arc<RestCommitBackend>,
    catalog: Arc<RestCatalog>,
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
async fn rest_conflict_is_retried_and_the_concurrent_append_survives() {
    let env = env().await;
    let a = env.write(1, &[(1, "a")]).await;
    let b = env.write(1, &[(2, "b")]).await;
    env.append(vec![a.clone()]).await;
    let start = env.append(vec![b.clone()]).await;
    let merged = env.write(1, &[(1, "a"), (2, "b")]).await;
    let concurrent = env.write(1, &[(3, "c")]).await;
    let backend = AppendFirst {
        inner: env.backend.clone(),
        catalog: env.catalog.clone(),
        file: std::sync::Mutex::new(Some(concurrent.clone())),
        calls: AtomicU32::new(0),
    };
    let out = commit_replace(
        &*env.catalog,
        &backend,
        &env.ident,
        &ReplaceDataFiles {
            starting_snapshot_id: start.metadata().current_snapshot_id().unwrap(),
            delete_paths: paths(&[a, b]),
            add: vec![merged.clone()],
            summary_properties: HashMap::new(),
            remove_dangling_deletes: false,
            use_starting_sequence_number: true,
            output_spec_id: None,
        },
        &fast_retry(),
        &Fence::none(),
    )
    .await
    .unwrap();
    assert_eq!(out.attempts, 2);
    assert_eq!(backend.calls.load(Ordering::SeqCst), 2);
    let table = env.table().await;
    assert_eq!(
        table.metadata().current_snapshot_id(),
        Some(out.snapshot_id)
    );
    assert_eq!(
        live_files(&table).await,
        HashSet::from([
            merged.file_path().to_string(),
            concurrent.file_path().to_string()
        ])
    );
    assert_eq!(
        rows(&table).await,
        vec![(1, "a".into()), (2, "b".into()), (3, "c".into())]
    );
}

#[tokio::test]
async fn rest_answers_map_to_commit_errors() {
    let env = env().await;
    let stale = env.table().await;
    env.append(vec![env.write(1, &[(1, "a")]).await]).await;
    let current = env.table().await;
    let set_prop = || {
        vec![TableUpdate::SetProperties {
            updates: HashMap::from([("k".to_string(), "v".to_string())]),
        }]
    };

    // 409: a requirement fails on the server.
    let err = env
        .backend
        .commit(
            &stale,
            vec![TableRequirement::RefSnapshotIdMatch {
                r#ref: "main".to_string(),
                snapshot_id: stale.metadata().current_snapshot_id(),
            }],
            set_prop(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CommitError::Conflict(_)), "{err:?}");

    // 404: no such table.
    let missing = Table::builder()
        .identifier(TableIdent::from_strs(["db", "missing"]).unwrap())
        .file_io(current.file_io().clone())
        .metadata(current.metadata_ref())
        .metadata_location(current.metadata_location().unwrap())
        .runtime(iceberg::Runtime::try_current().unwrap())
        .build()
        .unwrap();
    let err = env
        .backend
        .commit(&missing, vec![], set_prop())
        .await
        .unwrap_err();
    assert!(matches!(err, CommitError::NotFound(_)), "{err:?}");

    // 200: the returned table is what the server now holds.
    let t = env
        .backend
        .commit(&current, vec![], set_prop())
        .await
        .unwrap();
    assert_eq!(t.metadata().properties()["k"], "v");
    let reloaded = env.table().await;
    assert_eq!(reloaded.metadata_location(), t.metadata_location());
    assert_eq!(reloaded.metadata().properties()["k"], "v");
}

#[tokio::test]
async fn rest_replace_of_a_removed_file_fails_validation() {
    let env = env().await;
    let a = env.write(1, &[(1, "a")]).await;
    let b = env.write(1, &[(2, "b")]).await;
    let start = env.append(vec![a.clone(), b.clone()]).await;
    let start_id = start.metadata().current_snapshot_id().unwrap();
    let replace = |delete: Vec<String>, add: DataFile| ReplaceDataFiles {
        starting_snapshot_id: start_id,
        delete_paths: delete,
        add: vec![add],
        summary_properties: HashMap::new(),
        remove_dangling_deletes: false,
        use_starting_sequence_number: true,
        output_spec_id: None,
    };
    let a2 = env.write(1, &[(1, "a")]).await;
    commit_replace(
        &*env.catalog,
        &*env.backend,
        &env.ident,
        &replace(paths(std::slice::from_ref(&a)), a2),
        &fast_retry(),
        &Fence::none(),
    )
    .await
    .unwrap();
    let before = env.table().await;

    let merged = env.write(1, &[(1, "a"), (2, "b")]).await;
    let err = commit_replace(
        &*env.catalog,
        &*env.backend,
        &env.ident,
        &replace(paths(&[a.clone(), b]), merged),
        &fast_retry(),
        &Fence::none(),
    )
    .await
    .unwrap_err();
    match err {
        ReplaceError::Validation(m) => {
            assert!(m.starts_with("missing required files to delete"), "{m}");
            assert!(m.contains(a.file_path()), "{m}");
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
    let after = env.table().await;
    assert_eq!(after.metadata_location(), before.metadata_location());
}
