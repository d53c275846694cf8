//! The Parquet writer of the rewrite's output files: arrow-rs's sync `ArrowWriter`, on a local
//! warehouse streaming through a buffered `std::fs::File`, on object stores into an in-memory
//! buffer uploaded through the table's `FileIO` (one PUT per file up to a part's size, a
//! multipart upload above).
//!
//! Why not iceberg's `ParquetWriter`: its `AsyncArrowWriter` encodes each row group into a fresh
//! `Vec` that grows by doubling (a ~40 MB output file at 10x is one row group: copied on every
//! doubling and ~10 000 page faults to fill it) and hands it to opendal as one buffer, which on a
//! local file system copies it again on its way to the file. The bytes written are the same
//! either way (same `ArrowWriter`, same properties, same Arrow schema with field ids); only where
//! the encoded pages go differs. A file is durable before its `DataFile` is returned, so a commit
//! never references a file that is not: a local file is `fsync`ed when it is closed (iceberg's
//! local writer does the same), an object's upload has completed.
//!
//! iceberg 0.10.1 keeps its metrics builder (`parquet_to_data_file_builder`), its statistics
//! conversion and its NaN counter crate-private, so [`data_file_builder`] computes the same
//! metrics from the footer: record count, file size, column sizes, value, null and NaN counts,
//! lower and upper bounds, split offsets (unit tests compare both writers' `DataFile`s and
//! bytes on the same batches, on a local file system and on an object store).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, SchemaRef as ArrowSchemaRef};
use bytes::Bytes;
use iceberg::io::{FileWrite, OutputFile};
use iceberg::spec::{
    DataContentType, DataFileBuilder, DataFileFormat, Datum, PrimitiveType, SchemaRef, Struct, Type,
};
use iceberg::writer::CurrentFileStatus;
use iceberg::writer::file_writer::{FileWriter, FileWriterBuilder};
use iceberg::{Error, ErrorKind};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::WriterProperties;
use parquet::file::statistics::Statistics;

/// Write buffer in front of a local output file: the encoder hands over pages of up to 1 MiB
/// (`write.parquet.page-size-bytes`), so this keeps write calls few without holding much.
const LOCAL_WRITE_BUFFER: usize = 1024 * 1024;

/// Smallest upload of an object-store output file but its last: S3's minimum part size is
/// 5 MiB; a file smaller than this is uploaded in one PUT.
const UPLOAD_PART: usize = 8 * 1024 * 1024;

/// Room for the footer when an object-store file's buffer is reserved before it is finished.
const FOOTER_RESERVE: usize = 64 * 1024;

/// Builds a [`ParquetFileWriter`] per output file (see the module docs).
#[derive(Clone)]
pub struct ParquetFileWriterBuilder {
    props: WriterProperties,
    schema: SchemaRef,
    arrow_schema: ArrowSchemaRef,
    /// [`UPLOAD_PART`]; smaller in tests, to upload in several parts.
    upload_part: usize,
}

impl ParquetFileWriterBuilder {
    /// Writes `schema` (the table's current schema) with `props`.
    pub fn new(props: WriterProperties, schema: SchemaRef) -> iceberg::Result<Self> {
        let arrow_schema = Arc::new(iceberg::arrow::schema_to_arrow_schema(&schema)?);
        Ok(Self {
            upload_part: UPLOAD_PART,
            props,
            schema,
            arrow_schema,
        })
    }
}

impl FileWriterBuilder for ParquetFileWriterBuilder {
    type R = ParquetFileWriter;

    async fn build(&self, output_file: OutputFile) -> iceberg::Result<ParquetFileWriter> {
        Ok(match local_path(output_file.location()) {
            Some(path) => ParquetFileWriter::Local(LocalParquetWriter::new(
                self,
                path,
                output_file.location().to_string(),
            )),
            None => ParquetFileWriter::Remote(RemoteParquetWriter {
                output: output_file,
                schema: self.schema.clone(),
                arrow_schema: self.arrow_schema.clone(),
                props: self.props.clone(),
                writer: None,
                upload: None,
                upload_part: self.upload_part,
                rows: 0,
                nan_value_counts: HashMap::new(),
            }),
        })
    }
}

/// The local file a `file:` location (or an absolute path) names; `None` for anything else.
pub(super) fn local_path(location: &str) -> Option<PathBuf> {
    let path = match location.strip_prefix("file:") {
        // `file:///a/b` and `file:/a/b` both name `/a/b`.
        Some(rest) => rest.trim_start_matches('/'),
        None if location.starts_with('/') => location.trim_start_matches('/'),
        None => return None,
    };
    Some(PathBuf::from(format!("/{path}")))
}

/// One output file: on a local file system or an object store.
pub enum ParquetFileWriter {
    Local(LocalParquetWriter),
    Remote(RemoteParquetWriter),
}

impl FileWriter for ParquetFileWriter {
    async fn write(&mut self, batch: &RecordBatch) -> iceberg::Result<()> {
        match self {
            ParquetFileWriter::Local(w) => w.write(batch).await,
            ParquetFileWriter::Remote(w) => w.write(batch).await,
        }
    }

    async fn close(self) -> iceberg::Result<Vec<DataFileBuilder>> {
        match self {
            ParquetFileWriter::Local(w) => w.close().await,
            ParquetFileWriter::Remote(w) => w.close().await,
        }
    }
}

impl CurrentFileStatus for ParquetFileWriter {
    fn current_file_path(&self) -> String {
        match self {
            ParquetFileWriter::Local(w) => w.location.clone(),
            ParquetFileWriter::Remote(w) => w.output.location().to_string(),
        }
    }

    fn current_row_num(&self) -> usize {
        match self {
            ParquetFileWriter::Local(w) => w.rows,
            ParquetFileWriter::Remote(w) => w.rows,
        }
    }

    fn current_written_size(&self) -> usize {
        match self {
            ParquetFileWriter::Local(w) => w.written_size(),
            ParquetFileWriter::Remote(w) => w.written_size(),
        }
    }
}

/// Writes one local Parquet file; the file is created on the first non-empty batch (as
/// iceberg's writer does: no rows, no file).
pub struct LocalParquetWriter {
    path: PathBuf,
    location: String,
    schema: SchemaRef,
    arrow_schema: ArrowSchemaRef,
    props: WriterProperties,
    writer: Option<ArrowWriter<BufWriter<File>>>,
    rows: usize,
    nan_value_counts: HashMap<i32, u64>,
}

fn io_error(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(ErrorKind::Unexpected, what.to_string()).with_source(e)
}

impl LocalParquetWriter {
    /// The writer of the local file `path` (at `location`), with `builder`'s schema and
    /// properties; nothing is created before the first row.
    pub(super) fn new(builder: &ParquetFileWriterBuilder, path: PathBuf, location: String) -> Self {
        LocalParquetWriter {
            path,
            location,
            schema: builder.schema.clone(),
            arrow_schema: builder.arrow_schema.clone(),
            props: builder.props.clone(),
            writer: None,
            rows: 0,
            nan_value_counts: HashMap::new(),
        }
    }

    /// Encodes `batch`. The file is created on the blocking pool (a stalled disk must not stall
    /// the runtime's workers, which also renew the job's lease); encoding runs here. Only a row
    /// group that fills up (`write.parquet.row-group-size-bytes`, 128 MiB by default: larger
    /// files than compaction's 512 MiB target usually makes have one row group, written at
    /// [`Self::close`]) is written to the page cache on this thread, as the bare loop does.
    async fn write(&mut self, batch: &RecordBatch) -> iceberg::Result<()> {
        if batch.num_rows() > 0 && self.writer.is_none() {
            let path = self.path.clone();
            let file = tokio::task::spawn_blocking(move || create_file(&path))
                .await
                .map_err(|e| io_error("parquet writer task failed", e))??;
            self.start(file)?;
        }
        self.encode(batch)
    }

    /// [`Self::write`] for a caller on a blocking thread: the file is created on this thread.
    pub(super) fn write_blocking(&mut self, batch: &RecordBatch) -> iceberg::Result<()> {
        if batch.num_rows() > 0 && self.writer.is_none() {
            let file = create_file(&self.path)?;
            self.start(file)?;
        }
        self.encode(batch)
    }

    fn start(&mut self, file: File) -> iceberg::Result<()> {
        let out = BufWriter::with_capacity(LOCAL_WRITE_BUFFER, file);
        let writer = ArrowWriter::try_new(out, self.arrow_schema.clone(), Some(self.props.clone()))
            .map_err(|e| io_error("cannot start a parquet writer", e))?;
        self.writer = Some(writer);
        Ok(())
    }

    fn encode(&mut self, batch: &RecordBatch) -> iceberg::Result<()> {
        let Some(writer) = self.writer.as_mut().filter(|_| batch.num_rows() > 0) else {
            return Ok(());
        };
        self.rows += batch.num_rows();
        count_nans(&self.schema, batch, &mut self.nan_value_counts)?;
        writer
            .write(batch)
            .map_err(|e| io_error("cannot write a parquet batch", e))
    }

    /// Bytes written so far plus the open row group's estimated encoded size (what iceberg's
    /// rolling writer compares with its byte cap).
    pub(super) fn written_size(&self) -> usize {
        written_size(self.writer.as_ref())
    }

    /// Writes the footer, flushes and `fsync`s the file (on the blocking pool), then builds its
    /// metrics.
    async fn close(self) -> iceberg::Result<Vec<DataFileBuilder>> {
        if self.writer.is_none() {
            return Ok(Vec::new());
        }
        tokio::task::spawn_blocking(move || self.close_blocking())
            .await
            .map_err(|e| io_error("parquet writer task failed", e))?
    }

    /// [`Self::close`] on this (blocking) thread. No rows, no file, no `DataFile`.
    pub(super) fn close_blocking(self) -> iceberg::Result<Vec<DataFileBuilder>> {
        let Some(mut writer) = self.writer else {
            return Ok(Vec::new());
        };
        let metadata = writer
            .finish()
            .map_err(|e| io_error("cannot finish a parquet file", e))?;
        let out = writer.inner_mut();
        out.flush()
            .map_err(|e| io_error("cannot flush a data file", e))?;
        out.get_ref()
            .sync_all()
            .map_err(|e| io_error("cannot sync a data file", e))?;
        Ok(vec![data_file_builder(
            &self.schema,
            &metadata,
            writer.bytes_written(),
            self.location,
            self.nan_value_counts,
        )?])
    }
}

/// Bytes written plus the open row group's estimated encoded size; 0 before the first row.
fn written_size<W: Write + Send>(writer: Option<&ArrowWriter<W>>) -> usize {
    writer.map_or(0, |w| w.bytes_written() + w.in_progress_size())
}

/// Creates a data file and its directory (blocking).
fn create_file(path: &std::path::Path) -> iceberg::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| io_error("cannot create a data file's directory", e))?;
    }
    File::create(path).map_err(|e| io_error("cannot create a data file", e))
}

/// Writes one Parquet file to an object store: the same sync `ArrowWriter` as
/// [`LocalParquetWriter`] into an in-memory buffer, uploaded through the table's `FileIO` in parts
/// of at least [`UPLOAD_PART`] bytes as row groups complete (opendal makes one PUT of a file
/// written in one part, a multipart upload otherwise). The object exists when [`Self::close`]
/// returns, before its `DataFile` does; a failed upload fails the write (the rewrite's cleanup
/// guard removes what it wrote).
pub struct RemoteParquetWriter {
    output: OutputFile,
    schema: SchemaRef,
    arrow_schema: ArrowSchemaRef,
    props: WriterProperties,
    writer: Option<ArrowWriter<Vec<u8>>>,
    upload: Option<Box<dyn FileWrite>>,
    upload_part: usize,
    rows: usize,
    nan_value_counts: HashMap<i32, u64>,
}

impl RemoteParquetWriter {
    /// As [`LocalParquetWriter::written_size`].
    fn written_size(&self) -> usize {
        written_size(self.writer.as_ref())
    }

    /// Encodes `batch` on this thread (as iceberg's writer does); a row group it completes is
    /// uploaded in whole parts now, so the buffer holds at most a part plus one row group.
    async fn write(&mut self, batch: &RecordBatch) -> iceberg::Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows += batch.num_rows();
        count_nans(&self.schema, batch, &mut self.nan_value_counts)?;
        let writer = match &mut self.writer {
            Some(w) => w,
            None => self.writer.insert(
                ArrowWriter::try_new(
                    Vec::new(),
                    self.arrow_schema.clone(),
                    Some(self.props.clone()),
                )
                .map_err(|e| io_error("cannot start a parquet writer", e))?,
            ),
        };
        writer
            .write(batch)
            .map_err(|e| io_error("cannot write a parquet batch", e))?;
        let part_size = self.upload_part;
        if writer.inner().len() >= part_size {
            let whole = writer.inner().len() / part_size * part_size;
            // The whole parts go out without a copy; only the tail (under a part) is copied.
            let tail = writer.inner_mut().split_off(whole);
            let part = std::mem::replace(writer.inner_mut(), tail);
            self.upload_part(Bytes::from(part)).await?;
        }
        Ok(())
    }

    async fn upload_part(&mut self, part: Bytes) -> iceberg::Result<()> {
        let upload = match &mut self.upload {
            Some(u) => u,
            None => self.upload.insert(self.output.writer().await?),
        };
        upload.write(part).await
    }

    /// Writes the row group in progress and the footer into the buffer (its size known
    /// beforehand, so it grows once), uploads the rest and completes the upload, then builds the
    /// metrics.
    async fn close(mut self) -> iceberg::Result<Vec<DataFileBuilder>> {
        let Some(mut writer) = self.writer.take() else {
            return Ok(Vec::new());
        };
        let expected = writer.in_progress_size() + FOOTER_RESERVE;
        writer.inner_mut().reserve(expected);
        let metadata = writer
            .finish()
            .map_err(|e| io_error("cannot finish a parquet file", e))?;
        let size = writer.bytes_written();
        let rest = Bytes::from(std::mem::take(writer.inner_mut()));
        self.upload_part(rest).await?;
        self.upload
            .as_mut()
            .expect("a part was just written")
            .close()
            .await?;
        Ok(vec![data_file_builder(
            &self.schema,
            &metadata,
            size,
            self.output.location().to_string(),
            self.nan_value_counts,
        )?])
    }
}

/// The `DataFile` metrics of a written Parquet file, as iceberg 0.10.1's `ParquetWriter` builds
/// them: per leaf column of `schema` (matched by the field id the writer put in the Parquet
/// schema) the compressed size, value and null counts and the exact min/max statistics as
/// bounds; the NaN counts counted while writing; row-group offsets as split offsets.
pub fn data_file_builder(
    schema: &SchemaRef,
    metadata: &ParquetMetaData,
    written_size: usize,
    location: String,
    nan_value_counts: HashMap<i32, u64>,
) -> iceberg::Result<DataFileBuilder> {
    let mut column_sizes: HashMap<i32, u64> = HashMap::new();
    let mut value_counts: HashMap<i32, u64> = HashMap::new();
    let mut null_value_counts: HashMap<i32, u64> = HashMap::new();
    let mut lower_bounds: HashMap<i32, Datum> = HashMap::new();
    let mut upper_bounds: HashMap<i32, Datum> = HashMap::new();
    for row_group in metadata.row_groups() {
        for chunk in row_group.columns() {
            let info = chunk.column_descr().self_type().get_basic_info();
            if !info.has_id() {
                continue;
            }
            let id = info.id();
            let Some(field) = schema.field_by_id(id) else {
                continue;
            };
            let Type::Primitive(ty) = field.field_type.as_ref() else {
                continue;
            };
            *column_sizes.entry(id).or_insert(0) += chunk.compressed_size() as u64;
            *value_counts.entry(id).or_insert(0) += chunk.num_values() as u64;
            let Some(stats) = chunk.statistics() else {
                continue;
            };
            if let Some(nulls) = stats.null_count_opt() {
                *null_value_counts.entry(id).or_insert(0) += nulls;
            }
            if stats.min_is_exact() {
                let min = stat_datum(ty, stats, End::Min)?.ok_or_else(|| mismatch(stats, ty))?;
                keep(&mut lower_bounds, id, min, |new, old| new < old);
            }
            if stats.max_is_exact() {
                let max = stat_datum(ty, stats, End::Max)?.ok_or_else(|| mismatch(stats, ty))?;
                keep(&mut upper_bounds, id, max, |new, old| new > old);
            }
        }
    }
    let mut builder = DataFileBuilder::default();
    builder
        .content(DataContentType::Data)
        .file_path(location)
        .file_format(DataFileFormat::Parquet)
        .partition(Struct::empty())
        .record_count(metadata.file_metadata().num_rows() as u64)
        .file_size_in_bytes(written_size as u64)
        .column_sizes(column_sizes)
        .value_counts(value_counts)
        .null_value_counts(null_value_counts)
        .nan_value_counts(nan_value_counts)
        .lower_bounds(lower_bounds)
        .upper_bounds(upper_bounds)
        .split_offsets(Some(
            metadata
                .row_groups()
                .iter()
                .filter_map(|g| g.file_offset())
                .collect(),
        ));
    Ok(builder)
}

fn keep(
    bounds: &mut HashMap<i32, Datum>,
    id: i32,
    value: Datum,
    better: fn(&Datum, &Datum) -> bool,
) {
    match bounds.entry(id) {
        Entry::Occupied(mut e) => {
            if better(&value, e.get()) {
                e.insert(value);
            }
        }
        Entry::Vacant(e) => {
            e.insert(value);
        }
    }
}

fn mismatch(stats: &Statistics, ty: &PrimitiveType) -> Error {
    Error::new(
        ErrorKind::Unexpected,
        format!("statistics {stats} do not match field type {ty}"),
    )
}

#[derive(Clone, Copy)]
enum End {
    Min,
    Max,
}

/// A column chunk's min or max as a `Datum` of the field's type (iceberg's
/// `get_parquet_stat_{min,max}_as_datum`); `None` when the physical type does not fit.
fn stat_datum(ty: &PrimitiveType, stats: &Statistics, end: End) -> iceberg::Result<Option<Datum>> {
    macro_rules! pick {
        ($s:expr) => {
            match end {
                End::Min => $s.min_opt(),
                End::Max => $s.max_opt(),
            }
        };
    }
    let bytes = match end {
        End::Min => stats.min_bytes_opt(),
        End::Max => stats.max_bytes_opt(),
    };
    // `Datum::new` is crate-private; the big-endian bytes of the unscaled value make the same
    // `Int128` literal.
    let decimal = |v: i128| Datum::try_from_bytes(&v.to_be_bytes(), ty.clone());
    let invalid = |what: &str| Error::new(ErrorKind::DataInvalid, what.to_string());
    Ok(match (ty, stats) {
        (PrimitiveType::Boolean, Statistics::Boolean(s)) => pick!(s).map(|v| Datum::bool(*v)),
        (PrimitiveType::Int, Statistics::Int32(s)) => pick!(s).map(|v| Datum::int(*v)),
        (PrimitiveType::Date, Statistics::Int32(s)) => pick!(s).map(|v| Datum::date(*v)),
        (PrimitiveType::Long, Statistics::Int64(s)) => pick!(s).map(|v| Datum::long(*v)),
        (PrimitiveType::Time, Statistics::Int64(s)) => match pick!(s) {
            Some(v) => Some(Datum::time_micros(*v)?),
            None => None,
        },
        (PrimitiveType::Timestamp, Statistics::Int64(s)) => {
            pick!(s).map(|v| Datum::timestamp_micros(*v))
        }
        (PrimitiveType::Timestamptz, Statistics::Int64(s)) => {
            pick!(s).map(|v| Datum::timestamptz_micros(*v))
        }
        (PrimitiveType::TimestampNs, Statistics::Int64(s)) => {
            pick!(s).map(|v| Datum::timestamp_nanos(*v))
        }
        (PrimitiveType::TimestamptzNs, Statistics::Int64(s)) => {
            pick!(s).map(|v| Datum::timestamptz_nanos(*v))
        }
        (PrimitiveType::Float, Statistics::Float(s)) => pick!(s).map(|v| Datum::float(*v)),
        (PrimitiveType::Double, Statistics::Double(s)) => pick!(s).map(|v| Datum::double(*v)),
        (PrimitiveType::String, Statistics::ByteArray(s)) => match pick!(s) {
            Some(v) => {
                Some(Datum::string(v.as_utf8().map_err(|e| {
                    io_error("string statistics are not utf-8", e)
                })?))
            }
            None => None,
        },
        (PrimitiveType::Decimal { .. }, Statistics::ByteArray(_)) => match bytes {
            Some(b) => {
                let b: [u8; 16] = b
                    .try_into()
                    .map_err(|_| invalid("decimal statistics are not 16 bytes"))?;
                Some(decimal(i128::from_be_bytes(b))?)
            }
            None => None,
        },
        (PrimitiveType::Decimal { .. }, Statistics::FixedLenByteArray(_)) => match bytes {
            Some(b) => Some(decimal(i128_from_be_bytes(b).ok_or_else(|| {
                invalid(&format!("cannot convert bytes to i128: {b:?}"))
            })?)?),
            None => None,
        },
        (PrimitiveType::Decimal { .. }, Statistics::Int32(s)) => {
            pick!(s).map(|v| decimal(i128::from(*v))).transpose()?
        }
        (PrimitiveType::Decimal { .. }, Statistics::Int64(s)) => {
            pick!(s).map(|v| decimal(i128::from(*v))).transpose()?
        }
        (PrimitiveType::Uuid, Statistics::FixedLenByteArray(_)) => match bytes {
            Some(b) => {
                let b: [u8; 16] = b.try_into().map_err(|_| {
                    Error::new(ErrorKind::Unexpected, "invalid length of uuid bytes")
                })?;
                Some(Datum::uuid(uuid::Uuid::from_bytes(b)))
            }
            None => None,
        },
        (PrimitiveType::Fixed(len), Statistics::FixedLenByteArray(_)) => match bytes {
            Some(b) if b.len() as u64 != *len => {
                return Err(Error::new(
                    ErrorKind::Unexpected,
                    "invalid length of fixed bytes",
                ));
            }
            Some(b) => Some(Datum::fixed(b.to_vec())),
            None => None,
        },
        (PrimitiveType::Binary, Statistics::ByteArray(_)) => {
            bytes.map(|b| Datum::binary(b.to_vec()))
        }
        _ => None,
    })
}

/// A big-endian two's-complement integer of up to 16 bytes, sign-extended.
fn i128_from_be_bytes(bytes: &[u8]) -> Option<i128> {
    if bytes.len() > 16 {
        return None;
    }
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut padded = if negative { [0xFF; 16] } else { [0; 16] };
    padded[16 - bytes.len()..].copy_from_slice(bytes);
    Some(i128::from_be_bytes(padded))
}

/// Adds the NaN values of every float and double field of `batch` (written in `schema`, nested
/// fields included) to `counts`, with an entry of 0 for such a field without NaNs, as iceberg's
/// `NanValueCountVisitor` does.
fn count_nans(
    schema: &SchemaRef,
    batch: &RecordBatch,
    counts: &mut HashMap<i32, u64>,
) -> iceberg::Result<()> {
    let fields = schema.as_struct().fields();
    if fields.len() != batch.num_columns() {
        return Err(Error::new(
            ErrorKind::Unexpected,
            "batch columns do not match the write schema",
        ));
    }
    for (field, column) in fields.iter().zip(batch.columns()) {
        count_field(field.id, &field.field_type, column, counts);
    }
    Ok(())
}

fn count_field(id: i32, ty: &Type, array: &ArrayRef, counts: &mut HashMap<i32, u64>) {
    match (ty, array.data_type()) {
        (Type::Struct(s), DataType::Struct(_)) => {
            let array = array.as_struct();
            for (field, child) in s.fields().iter().zip(array.columns()) {
                count_field(field.id, &field.field_type, child, counts);
            }
        }
        (Type::List(l), DataType::List(_) | DataType::LargeList(_)) => {
            // The offsets' width is all that differs; the element values are counted alike.
            let values = match array.data_type() {
                DataType::List(_) => array.as_list::<i32>().values(),
                _ => array.as_list::<i64>().values(),
            };
            count_field(
                l.element_field.id,
                &l.element_field.field_type,
                values,
                counts,
            );
        }
        (Type::Map(m), DataType::Map(..)) => {
            let map = array.as_map();
            count_field(m.key_field.id, &m.key_field.field_type, map.keys(), counts);
            count_field(
                m.value_field.id,
                &m.value_field.field_type,
                map.values(),
                counts,
            );
        }
        (_, DataType::Float32) => {
            let nans = array
                .as_primitive::<arrow_array::types::Float32Type>()
                .iter()
                .filter(|v| v.is_some_and(f32::is_nan))
                .count();
            *counts.entry(id).or_insert(0) += nans as u64;
        }
        (_, DataType::Float64) => {
            let nans = array
                .as_primitive::<arrow_array::types::Float64Type>()
                .iter()
                .filter(|v| v.is_some_and(f64::is_nan))
                .count();
            *counts.entry(id).or_insert(0) += nans as u64;
        }
        _ => {}
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
pub(super) mod tests;
