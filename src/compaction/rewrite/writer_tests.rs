use std::sync::Arc;

use arrow_array::builder::{
    Float64Builder, Int32Builder, ListBuilder, MapBuilder, MapFieldNames, StringBuilder,
};
use arrow_array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array, Int32Array,
    Int64Array, RecordBatch, StringArray, StructArray, TimestampMicrosecondArray,
};
use iceberg::io::FileIO;
use iceberg::spec::{
    DataFile, ListType, MapType, NestedField, PrimitiveType, Schema, StructType, Type,
};
use iceberg::writer::file_writer::{FileWriter, FileWriterBuilder, ParquetWriterBuilder};

use super::*;
use crate::compaction::rewrite::writer_properties;

pub(in crate::compaction::rewrite) fn schema() -> SchemaRef {
    let p = Type::Primitive;
    Arc::new(
        Schema::builder()
            .with_fields(vec![
                NestedField::required(1, "id", p(PrimitiveType::Long)).into(),
                NestedField::optional(2, "name", p(PrimitiveType::String)).into(),
                NestedField::optional(3, "value", p(PrimitiveType::Double)).into(),
                NestedField::optional(4, "ratio", p(PrimitiveType::Float)).into(),
                NestedField::optional(5, "flag", p(PrimitiveType::Boolean)).into(),
                NestedField::optional(6, "day", p(PrimitiveType::Date)).into(),
                NestedField::optional(7, "ts", p(PrimitiveType::Timestamptz)).into(),
                NestedField::optional(
                    8,
                    "amount",
                    p(PrimitiveType::Decimal {
                        precision: 20,
                        scale: 2,
                    }),
                )
                .into(),
                NestedField::optional(
                    9,
                    "point",
                    Type::Struct(StructType::new(vec![
                        NestedField::optional(10, "x", p(PrimitiveType::Double)).into(),
                        NestedField::optional(11, "n", p(PrimitiveType::Int)).into(),
                    ])),
                )
                .into(),
                NestedField::optional(
                    12,
                    "tags",
                    Type::List(ListType::new(
                        NestedField::optional(13, "element", p(PrimitiveType::Int)).into(),
                    )),
                )
                .into(),
                NestedField::optional(
                    14,
                    "props",
                    Type::Map(MapType::new(
                        NestedField::map_key_element(15, p(PrimitiveType::String)).into(),
                        NestedField::map_value_element(16, p(PrimitiveType::Double), false).into(),
                    )),
                )
                .into(),
            ])
            .build()
            .unwrap(),
    )
}

/// `rows` rows starting at `start`, with nulls, NaNs and negative decimals in them.
pub(in crate::compaction::rewrite) fn batch(
    arrow: &ArrowSchemaRef,
    start: i64,
    rows: usize,
) -> RecordBatch {
    let ids: Vec<i64> = (start..start + rows as i64).collect();
    fn opt<T>(i: i64, v: T) -> Option<T> {
        (i % 7 != 3).then_some(v)
    }
    let struct_fields = match arrow.field(8).data_type() {
        DataType::Struct(f) => f.clone(),
        _ => unreachable!(),
    };
    let mut tags =
        ListBuilder::new(Int32Builder::new()).with_field(match arrow.field(9).data_type() {
            DataType::List(f) => f.clone(),
            _ => unreachable!(),
        });
    let (key_field, value_field) = match arrow.field(10).data_type() {
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) => (kv[0].clone(), kv[1].clone()),
            _ => unreachable!(),
        },
        _ => unreachable!(),
    };
    let mut props = MapBuilder::new(
        Some(MapFieldNames {
            entry: "key_value".to_string(),
            key: "key".to_string(),
            value: "value".to_string(),
        }),
        StringBuilder::new(),
        Float64Builder::new(),
    )
    .with_keys_field(key_field)
    .with_values_field(value_field);
    for &i in &ids {
        if i % 5 == 0 {
            tags.append_null();
        } else {
            tags.values().append_value(i as i32);
            tags.values().append_null();
            tags.append(true);
        }
        props.keys().append_value(format!("k{}", i % 3));
        props
            .values()
            .append_value(if i % 4 == 0 { f64::NAN } else { i as f64 });
        props.append(true).unwrap();
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(StringArray::from_iter(
            ids.iter().map(|&i| opt(i, format!("name-{}", i % 13))),
        )),
        Arc::new(Float64Array::from_iter(ids.iter().map(|&i| {
            opt(
                i,
                if i % 11 == 0 {
                    f64::NAN
                } else {
                    i as f64 / 3.0
                },
            )
        }))),
        Arc::new(Float32Array::from_iter(
            ids.iter().map(|&i| opt(i, i as f32)),
        )),
        Arc::new(BooleanArray::from_iter(
            ids.iter().map(|&i| opt(i, i % 2 == 0)),
        )),
        Arc::new(Date32Array::from_iter(
            ids.iter().map(|&i| opt(i, i as i32)),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter(ids.iter().map(|&i| opt(i, i * 1_000_000)))
                .with_timezone("+00:00"),
        ),
        Arc::new(
            Decimal128Array::from_iter(ids.iter().map(|&i| opt(i, (i as i128 - 50) * 12_345)))
                .with_precision_and_scale(20, 2)
                .unwrap(),
        ),
        Arc::new(StructArray::new(
            struct_fields,
            vec![
                Arc::new(Float64Array::from_iter(
                    ids.iter()
                        .map(|&i| Some(if i % 6 == 0 { f64::NAN } else { i as f64 })),
                )),
                Arc::new(Int32Array::from_iter(
                    ids.iter().map(|&i| opt(i, -(i as i32))),
                )),
            ],
            None,
        )),
        Arc::new(tags.finish()),
        Arc::new(props.finish()),
    ];
    RecordBatch::try_new(arrow.clone(), columns).unwrap()
}

async fn write_with<B: FileWriterBuilder>(
    builder: &B,
    file_io: &FileIO,
    location: &str,
    batches: &[RecordBatch],
) -> DataFile {
    let mut writer = builder
        .build(file_io.new_output(location).unwrap())
        .await
        .unwrap();
    for b in batches {
        writer.write(b).await.unwrap();
    }
    let mut files = writer.close().await.unwrap();
    assert_eq!(files.len(), 1);
    files
        .pop()
        .unwrap()
        .file_path("same".to_string())
        .partition_spec_id(0)
        .build()
        .unwrap()
}

/// Writes the same batches with iceberg's `ParquetWriter` to `theirs` and with ours to `mine`
/// (both on `file_io`), and checks that the files' bytes and `DataFile`s are equal.
async fn compare_with_icebergs_writer(
    file_io: &FileIO,
    theirs: &str,
    mine: &str,
    upload_part: usize,
) -> DataFile {
    let schema = schema();
    // Small row groups and pages, so split offsets and per-row-group sums are exercised.
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(700))
        .set_data_page_row_count_limit(100)
        .set_write_batch_size(100)
        .build();
    let props = writer_properties(&HashMap::new())
        .unwrap()
        .into_builder()
        .set_max_row_group_row_count(props.max_row_group_row_count())
        .set_data_page_row_count_limit(props.data_page_row_count_limit())
        .set_write_batch_size(props.write_batch_size())
        .set_column_dictionary_enabled(parquet::schema::types::ColumnPath::from("value"), false)
        .build();
    let mut ours = ParquetFileWriterBuilder::new(props.clone(), schema.clone()).unwrap();
    ours.upload_part = upload_part;
    let arrow = ours.arrow_schema.clone();
    let batches: Vec<_> = (0..4).map(|k| batch(&arrow, k * 500, 500)).collect();

    let iceberg = ParquetWriterBuilder::new(props, schema.clone());
    let expected = write_with(&iceberg, file_io, theirs, &batches).await;
    let got = write_with(&ours, file_io, mine, &batches).await;

    assert_eq!(got.record_count(), 2000);
    assert_eq!(got.split_offsets().map(<[i64]>::len), Some(3));
    assert!(got.nan_value_counts()[&3] > 0 && got.nan_value_counts()[&16] > 0);
    assert_eq!(got.nan_value_counts()[&4], 0);
    assert!(got.lower_bounds().contains_key(&8) && got.upper_bounds().contains_key(&13));
    assert_eq!(got, expected);
    let read = |path: &str| {
        let input = file_io.new_input(path).unwrap();
        async move { input.read().await.unwrap() }
    };
    assert_eq!(read(mine).await, read(theirs).await);
    got
}

#[tokio::test]
async fn local_writer_matches_icebergs_parquet_writer_in_bytes_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let theirs = format!("file://{}", dir.path().join("theirs.parquet").display());
    let mine = format!(
        "file://{}",
        dir.path().join("sub/dir/mine.parquet").display()
    );
    compare_with_icebergs_writer(&FileIO::new_with_fs(), &theirs, &mine, UPLOAD_PART).await;
}

/// On an object store (iceberg's in-memory one): the same bytes and metrics, uploaded in one
/// part or, with parts smaller than a row group, in several as row groups complete.
#[tokio::test]
async fn object_store_writer_matches_icebergs_parquet_writer_in_bytes_and_metrics() {
    let file_io = FileIO::new_with_memory();
    for (k, part) in [UPLOAD_PART, 4096].into_iter().enumerate() {
        let got = compare_with_icebergs_writer(
            &file_io,
            &format!("memory:///theirs-{k}.parquet"),
            &format!("memory:///sub/mine-{k}.parquet"),
            part,
        )
        .await;
        assert!(part == UPLOAD_PART || got.file_size_in_bytes() > 2 * part as u64);
    }
}

#[tokio::test]
async fn no_rows_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let file_io = FileIO::new_with_fs();
    let schema = schema();
    let mine =
        ParquetFileWriterBuilder::new(WriterProperties::builder().build(), schema.clone()).unwrap();
    let path = dir.path().join("empty.parquet");
    let mut writer = mine
        .build(
            file_io
                .new_output(format!("file://{}", path.display()))
                .unwrap(),
        )
        .await
        .unwrap();
    writer
        .write(&RecordBatch::new_empty(mine.arrow_schema.clone()))
        .await
        .unwrap();
    assert_eq!(writer.current_written_size(), 0);
    assert!(writer.close().await.unwrap().is_empty());
    assert!(!path.exists());
}

#[test]
fn local_paths() {
    assert_eq!(
        local_path("file:///a/b.parquet"),
        Some(PathBuf::from("/a/b.parquet"))
    );
    assert_eq!(
        local_path("file:/a/b.parquet"),
        Some(PathBuf::from("/a/b.parquet"))
    );
    assert_eq!(
        local_path("/a/b.parquet"),
        Some(PathBuf::from("/a/b.parquet"))
    );
    assert_eq!(local_path("s3://bucket/a.parquet"), None);
    assert_eq!(local_path("memory:///a.parquet"), None);
}
