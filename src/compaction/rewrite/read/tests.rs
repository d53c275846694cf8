//! The direct read path against iceberg's `ArrowReader` on the same files, and the files that
//! must take iceberg's reader.

use std::sync::Arc;

use arrow_array::{ArrayRef, Int32Array, Int64Array, StringArray};
use futures::TryStreamExt;
use iceberg::Runtime;
use iceberg::arrow::ArrowReaderBuilder;
use iceberg::io::FileIO;
use iceberg::scan::FileScanTaskDeleteFile;
use iceberg::spec::{
    DataContentType, DataFileFormat, NestedField, PartitionSpec, PrimitiveType, Schema, SchemaRef,
    Struct, Type,
};
use iceberg::writer::file_writer::{FileWriter, FileWriterBuilder, ParquetWriterBuilder};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::file::properties::WriterProperties;
use tempfile::TempDir;

use super::*;
use crate::compaction::rewrite::writer::tests::{batch, schema};

fn arrow_of(schema: &Schema) -> ArrowSchemaRef {
    Arc::new(iceberg::arrow::schema_to_arrow_schema(schema).unwrap())
}

/// Row groups of 300 rows and small pages, so a file has several of each.
fn small_groups() -> WriterProperties {
    WriterProperties::builder()
        .set_max_row_group_row_count(Some(300))
        .set_data_page_row_count_limit(100)
        .set_write_batch_size(100)
        .build()
}

/// Writes `batches` with iceberg's Parquet writer (Arrow schema and field ids in the footer,
/// statistics on); returns the file's location and size.
async fn write_iceberg(
    dir: &TempDir,
    name: &str,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> (String, u64) {
    let location = format!("file://{}", dir.path().join(name).display());
    let file_io = FileIO::new_with_fs();
    let builder = ParquetWriterBuilder::new(small_groups(), schema.clone());
    let mut writer = builder
        .build(file_io.new_output(&location).unwrap())
        .await
        .unwrap();
    for b in batches {
        writer.write(b).await.unwrap();
    }
    writer.close().await.unwrap();
    let size = std::fs::metadata(dir.path().join(name)).unwrap().len();
    (location, size)
}

/// Writes `batches` with arrow-rs alone and no Arrow schema in the footer, as Spark's (Java's)
/// writer leaves it: the reader infers Arrow types from the Parquet schema. `field_ids`: keep
/// the batches' field-id metadata (else the file has none, as an imported file may).
fn write_plain(
    dir: &TempDir,
    name: &str,
    batches: &[RecordBatch],
    field_ids: bool,
) -> (String, u64) {
    let path = dir.path().join(name);
    let strip = |b: &RecordBatch| {
        if field_ids {
            return b.clone();
        }
        let fields: Vec<Field> = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_metadata(Default::default()))
            .collect();
        RecordBatch::try_new(
            Arc::new(arrow_schema::Schema::new(fields)),
            b.columns().to_vec(),
        )
        .unwrap()
    };
    let first = strip(&batches[0]);
    let options = ArrowWriterOptions::new()
        .with_properties(small_groups())
        .with_skip_arrow_metadata(true);
    let mut writer =
        ArrowWriter::try_new_with_options(File::create(&path).unwrap(), first.schema(), options)
            .unwrap();
    for b in batches {
        writer.write(&strip(b)).unwrap();
    }
    writer.close().unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    (format!("file://{}", path.display()), size)
}

/// The task the rewrite builds for a whole file: every column of `schema`, no predicate.
fn task(location: &str, size: u64, schema: &SchemaRef) -> FileScanTask {
    FileScanTask {
        file_size_in_bytes: size,
        start: 0,
        length: size,
        record_count: None,
        data_file_path: location.to_string(),
        data_file_format: DataFileFormat::Parquet,
        schema: schema.clone(),
        project_field_ids: schema.as_struct().fields().iter().map(|f| f.id).collect(),
        predicate: None,
        deletes: Vec::new(),
        partition: None,
        partition_spec: None,
        name_mapping: None,
        case_sensitive: true,
    }
}

fn file_reader(target: &ArrowSchemaRef, direct: bool) -> FileReader {
    let file_io = FileIO::new_with_fs();
    FileReader {
        iceberg: ArrowReaderBuilder::new(file_io.clone(), Runtime::current())
            .with_batch_size(READ_BATCH_ROWS)
            .with_data_file_concurrency_limit(1)
            .with_row_group_filtering_enabled(false)
            .build(),
        file_io,
        target: target.clone(),
        batch_size: READ_BATCH_ROWS,
        direct,
        fetch_whole: true,
    }
}

/// Every batch of `task`'s file as the rewrite writes it (after [`to_writer_batch`]).
async fn read_all(task: &FileScanTask, target: &ArrowSchemaRef, direct: bool) -> Vec<RecordBatch> {
    file_reader(target, direct)
        .batches(task.clone())
        .map_ok(|b| to_writer_batch(b, target).unwrap())
        .try_collect()
        .await
        .unwrap()
}

fn direct_ok(
    location: &str,
    task: &FileScanTask,
    target: &ArrowSchemaRef,
) -> Result<(), DirectError> {
    let file = File::open(local_path(location).unwrap()).unwrap();
    open_direct(file, task, target, READ_BATCH_ROWS).map(|_| ())
}

#[tokio::test]
async fn direct_reads_equal_icebergs_reader_on_nested_columns_and_row_groups() {
    let dir = tempfile::tempdir().unwrap();
    let schema = schema();
    let target = arrow_of(&schema);
    let batches: Vec<_> = (0..3).map(|k| batch(&target, k * 700, 700)).collect();
    let (ice, ice_size) = write_iceberg(&dir, "iceberg.parquet", &schema, &batches).await;
    let (plain, plain_size) = write_plain(&dir, "plain.parquet", &batches, true);

    for (location, size) in [(ice, ice_size), (plain, plain_size)] {
        let task = task(&location, size, &schema);
        direct_ok(&location, &task, &target).unwrap();
        let metadata = ArrowReaderMetadata::load(
            &File::open(local_path(&location).unwrap()).unwrap(),
            ArrowReaderOptions::new(),
        )
        .unwrap();
        assert!(metadata.metadata().num_row_groups() >= 7, "{location}");

        let direct = read_all(&task, &target, true).await;
        let iceberg = read_all(&task, &target, false).await;
        // The direct batches come out in the writer's schema as they are (nothing to cast).
        assert!(direct.iter().all(|b| b.schema() == target), "{location}");
        let rows = |bs: &[RecordBatch]| bs.iter().map(RecordBatch::num_rows).sum::<usize>();
        assert_eq!(rows(&direct), 2100);
        assert_eq!(rows_of(&direct), rows_of(&iceberg), "{location}");
        assert_eq!(rows_of(&direct), rows_of(&batches), "{location}");
    }
}

/// One-row slices of `batches`: equal whatever the batch boundaries (batches of the direct
/// reader may span row groups, iceberg's do not).
fn rows_of(batches: &[RecordBatch]) -> Vec<RecordBatch> {
    batches
        .iter()
        .flat_map(|b| (0..b.num_rows()).map(|i| b.slice(i, 1)))
        .collect()
}

fn flat_schema(org: Type, name: &str) -> SchemaRef {
    Arc::new(
        Schema::builder()
            .with_fields(vec![
                NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
                NestedField::required(2, "org", org).into(),
                NestedField::optional(3, name, Type::Primitive(PrimitiveType::String)).into(),
            ])
            .build()
            .unwrap(),
    )
}

fn flat_batch(target: &ArrowSchemaRef, org: i32) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(0..1000)),
        Arc::new(Int32Array::from(vec![org; 1000])),
        Arc::new(StringArray::from_iter(
            (0..1000).map(|i| (i % 3 != 0).then(|| format!("n{i}"))),
        )),
    ];
    RecordBatch::try_new(target.clone(), columns).unwrap()
}

#[tokio::test]
async fn files_that_need_icebergs_reader_take_it() {
    let dir = tempfile::tempdir().unwrap();
    let int = Type::Primitive(PrimitiveType::Int);
    let schema = flat_schema(int.clone(), "name");
    let arrow = arrow_of(&schema);
    let (location, size) =
        write_iceberg(&dir, "flat.parquet", &schema, &[flat_batch(&arrow, 7)]).await;
    let (no_ids, no_ids_size) =
        write_plain(&dir, "no-ids.parquet", &[flat_batch(&arrow, 7)], false);
    let base = task(&location, size, &schema);
    direct_ok(&location, &base, &arrow).unwrap();

    // A renamed column, an added column and a promoted type: the table's schema differs.
    let renamed = flat_schema(int.clone(), "label");
    let promoted = flat_schema(Type::Primitive(PrimitiveType::Long), "name");
    let added = Arc::new(
        Schema::builder()
            .with_fields(
                schema
                    .as_struct()
                    .fields()
                    .iter()
                    .cloned()
                    .chain([NestedField::optional(4, "extra", int.clone()).into()])
                    .collect::<Vec<_>>(),
            )
            .build()
            .unwrap(),
    );
    for evolved in [renamed, promoted, added] {
        let target = arrow_of(&evolved);
        let t = task(&location, size, &evolved);
        let err = direct_ok(&location, &t, &target).unwrap_err();
        assert!(matches!(err, DirectError::Schema(_)), "{err}");
        // Through iceberg's reader either way: the same rows in the evolved schema.
        let direct = read_all(&t, &target, true).await;
        assert_eq!(direct, read_all(&t, &target, false).await);
        assert_eq!(
            direct.iter().map(RecordBatch::num_rows).sum::<usize>(),
            1000
        );
    }

    // A file without field ids (an imported file, read through a name mapping).
    let t = task(&no_ids, no_ids_size, &schema);
    assert!(matches!(
        direct_ok(&no_ids, &t, &arrow).unwrap_err(),
        DirectError::Schema(_)
    ));

    // A file with delete files.
    let mut t = base.clone();
    t.deletes.push(FileScanTaskDeleteFile {
        file_path: format!("file://{}/deletes.parquet", dir.path().display()),
        file_size_in_bytes: 1,
        file_type: DataContentType::PositionDeletes,
        partition_spec_id: 0,
        equality_ids: None,
    });
    assert!(matches!(
        direct_ok(&location, &t, &arrow).unwrap_err(),
        DirectError::Deletes
    ));
}

#[tokio::test]
async fn identity_partition_columns_must_hold_the_partition_value() {
    let dir = tempfile::tempdir().unwrap();
    let schema = flat_schema(Type::Primitive(PrimitiveType::Int), "name");
    let arrow = arrow_of(&schema);
    let (location, size) =
        write_iceberg(&dir, "org7.parquet", &schema, &[flat_batch(&arrow, 7)]).await;
    let spec = PartitionSpec::builder(schema.clone())
        .with_spec_id(1)
        .add_partition_field("org", "org", Transform::Identity)
        .unwrap()
        .build()
        .unwrap();
    let with_value = |org: i32| {
        let mut t = task(&location, size, &schema);
        t.partition_spec = Some(Arc::new(spec.clone()));
        t.partition = Some(Struct::from_iter([Some(Literal::int(org))]));
        t
    };
    // The file holds only 7 (row-group statistics say so): read directly.
    direct_ok(&location, &with_value(7), &arrow).unwrap();
    // The tuple says 8: iceberg's reader fills the column with 8, so the file must go there.
    let t = with_value(8);
    assert!(matches!(
        direct_ok(&location, &t, &arrow).unwrap_err(),
        DirectError::PartitionConstant { field_id: 2, .. }
    ));
    let batches = read_all(&t, &arrow, true).await;
    let orgs: Vec<i32> = batches
        .iter()
        .flat_map(|b| {
            b.column(1)
                .as_any()
                .downcast_ref::<Int32Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(orgs, vec![8; 1000]);
    // A null partition value is no constant: the file's values are read either way.
    let mut t = with_value(7);
    t.partition = Some(Struct::from_iter([None]));
    direct_ok(&location, &t, &arrow).unwrap();
}
