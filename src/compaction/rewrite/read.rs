//! Reading a group's input files, in scan order, as batches in the output's Arrow schema.
//!
//! Each file is read one of two ways, decided per file from its footer:
//! - **directly** with arrow-rs's sync `ParquetRecordBatchReader`, when the file needs nothing
//!   from iceberg's reader ([`direct_metadata`]): no delete file applies, and its Parquet schema
//!   maps exactly onto the output schema by field id (same columns in the same order, same
//!   names, nullability and Arrow types once metadata and the spelling of UTC are ignored; so no
//!   name mapping, promotion or missing column), and every identity-partition column iceberg
//!   would fill from the partition tuple provably holds that value alone (row-group statistics).
//!   Local files are opened with `std::fs::File`; object-store files up to
//!   [`WHOLE_OBJECT_MAX_BYTES`] are fetched with one GET through the table's `FileIO` (iceberg's
//!   reader makes two requests: footer, then column chunks). Decoding runs on the blocking pool.
//! - **through iceberg's `ArrowReader`** otherwise (any doubt, including a footer that cannot be
//!   read): deletes, schema evolution, name mapping and partition constants as iceberg does them.
//!
//! Why: iceberg's reader opens every file through a new opendal operator, reads through tokio's
//! blocking pool in small pieces, preloads page indexes, and passes every batch through its
//! transformer (run-end-encoded partition constants the writer then has to expand); for the
//! plain files compaction mostly sees, that was most of icemaint's CPU beyond the bare loop's.
//! Both ways give the same rows in the same order and the same batch schema (unit tests compare
//! them), so the output does not depend on which one read a file.
//!
//! On object stores a group also reads a few files ahead of the one it writes ([`read_ahead`]).

use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Fields, SchemaRef as ArrowSchemaRef};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use iceberg::arrow::ArrowReader;
use iceberg::io::FileIO;
use iceberg::scan::FileScanTask;
use iceberg::spec::{Literal, PrimitiveLiteral, Transform};
use iceberg::table::Table;
use parquet::arrow::PARQUET_FIELD_ID_META_KEY;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::reader::ChunkReader;
use parquet::file::statistics::Statistics;

use super::writer::local_path;
use super::{RewriteError, RewriteSettings};

/// Rows per batch from the reader (parquet-rs defaults to 1024). Every batch pays fixed costs
/// on both sides (iceberg's batch transformer, the cast in [`to_writer_batch`], NaN counting,
/// the writer's per-call bookkeeping); at 8192 rows they are noise, and a batch of a wide table
/// is still only a few MiB.
pub(super) const READ_BATCH_ROWS: usize = 8192;

/// Bytes read from the end of a data file to find its footer. iceberg's reader prefetches
/// 512 KiB, which for the small files compaction exists for is the whole file, read again when
/// the column chunks are fetched. 64 KiB holds the footer and page indexes of tables up to a few
/// hundred columns; a larger footer costs one more read.
pub(super) const FOOTER_PREFETCH_BYTES: usize = 64 * 1024;

/// Input bytes a group may read ahead of the file it is writing ([`read_ahead`]). On an object
/// store every file costs a few requests in sequence (footer, column chunks), each a round trip
/// of tens of milliseconds; reading the next files meanwhile hides that. Bounded in bytes so the
/// small files compaction is for get real concurrency while large ones are read one at a time.
const READ_AHEAD_BYTES: u64 = 8 * 1024 * 1024;

/// Files a group reads ahead at most, whatever their size. Each costs its own reader task, a
/// decoded batch or two and the allocator's slack besides its bytes: 16 added ~200 MiB of peak
/// RSS on local disk at 1x (five groups), while 8 already keep ~40 files in flight, enough to
/// hide 20 ms round trips at this machine's speed.
pub(super) const READ_AHEAD_MAX_FILES: usize = 8;

/// Whether a group's files are read ahead ([`read_ahead_files`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAhead {
    /// Only files on an object store (any scheme but `file:`): on a local file system a read
    /// is a page-cache copy with nothing to hide, and every file in flight fills its channel at
    /// once, which took 1x peak RSS from ~120 to 213-264 MiB.
    Remote,
    /// Every file, wherever it is (tests of the read-ahead on a local table).
    Always,
    /// Never: iceberg's reader, one file after the other.
    Never,
}

impl ReadAhead {
    /// Whether files at `path` are read ahead.
    fn applies_to(self, path: &str) -> bool {
        match self {
            ReadAhead::Always => true,
            ReadAhead::Never => false,
            ReadAhead::Remote => !is_local_path(path),
        }
    }
}

/// A path on the local file system: `file:` URLs (iceberg's and Spark's spellings) and bare
/// absolute paths. Everything else (`s3://`, `gs://`, `abfss://`, `memory:` ...) goes through
/// a request per read.
pub(super) fn is_local_path(path: &str) -> bool {
    let scheme_end = path.find(':').filter(|&i| {
        i > 1
            && path[..i]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-')
    });
    match scheme_end {
        None => true,
        Some(i) => path[..i].eq_ignore_ascii_case("file"),
    }
}

/// The reader's next batch, or [`RewriteError::Stalled`] when none comes within `stall`.
pub(super) async fn next_batch<S>(
    batches: &mut S,
    stall: Duration,
) -> Result<Option<RecordBatch>, RewriteError>
where
    S: futures::Stream<Item = iceberg::Result<RecordBatch>> + Unpin,
{
    match tokio::time::timeout(stall, batches.try_next()).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(RewriteError::Stalled {
            seconds: stall.as_secs(),
        }),
    }
}

/// How many files of a group [`read_ahead`] keeps in flight: as many as fit
/// [`READ_AHEAD_BYTES`] at the group's average file size, within 2..=[`READ_AHEAD_MAX_FILES`];
/// 1 (iceberg's reader as it is) for a single file, when files are read concurrently anyway,
/// when `mode` excludes the group's files (by default local ones), or when the group has delete
/// files (iceberg loads them once per reader, and `read_ahead` makes a reader per file).
pub(super) fn read_ahead_files(
    tasks: &[FileScanTask],
    data_file_concurrency: usize,
    mode: ReadAhead,
) -> usize {
    if tasks.len() < 2
        || data_file_concurrency > 1
        || !tasks.iter().all(|t| mode.applies_to(&t.data_file_path))
        || tasks.iter().any(|t| !t.deletes.is_empty())
    {
        return 1;
    }
    let total: u64 = tasks.iter().map(|t| t.file_size_in_bytes).sum();
    let average = (total / tasks.len() as u64).max(1);
    let fit = usize::try_from(READ_AHEAD_BYTES / average).unwrap_or(usize::MAX);
    fit.clamp(1, READ_AHEAD_MAX_FILES).min(tasks.len())
}

/// Reads `tasks` in order, like one file at a time, while up to `ahead` files are already being
/// read: each file is read by its own task ([`FileReader::batches`]) into a one-batch channel, so
/// its bytes are fetched while earlier files are written. Rows come out in the same order as
/// without read-ahead; memory grows by at most `ahead` files' bytes and two batches each.
/// Dropping the stream aborts the reads in flight.
fn read_ahead(
    files: FileReader,
    tasks: Vec<FileScanTask>,
    ahead: usize,
) -> BoxStream<'static, iceberg::Result<RecordBatch>> {
    futures::stream::iter(tasks)
        .map(move |task| {
            let mut batches = files.batches(task);
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let handle = tokio::spawn(async move {
                while let Some(item) = batches.next().await {
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        return;
                    }
                }
            });
            let abort = tokio_util::task::AbortOnDropHandle::new(handle);
            futures::future::ready(futures::stream::unfold(
                (rx, abort),
                |(mut rx, abort)| async move { rx.recv().await.map(|item| (item, (rx, abort))) },
            ))
        })
        .buffered(ahead)
        .flatten()
        .boxed()
}

/// Makes a reader batch writable: iceberg's reader returns identity-partition columns filled
/// from partition metadata as run-end-encoded constants, which neither the Parquet writer nor the
/// partition splitter accept. Such columns are expanded to plain arrays, and the batch takes the
/// writer's Arrow schema.
pub(super) fn to_writer_batch(
    batch: RecordBatch,
    schema: &ArrowSchemaRef,
) -> Result<RecordBatch, RewriteError> {
    let to_iceberg = |e: arrow_schema::ArrowError| {
        iceberg::Error::new(
            iceberg::ErrorKind::Unexpected,
            "cannot convert a read batch to the write schema",
        )
        .with_source(e)
    };
    if batch.num_columns() != schema.fields().len() {
        return Err(iceberg::Error::new(
            iceberg::ErrorKind::Unexpected,
            format!(
                "read batch has {} columns, the write schema {}",
                batch.num_columns(),
                schema.fields().len()
            ),
        )
        .into());
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(column.clone())
            } else {
                arrow_cast::cast(column, field.data_type()).map_err(to_iceberg)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(schema.clone(), columns, &options).map_err(to_iceberg)?)
}

/// Object-store files up to this size are fetched with one whole-object GET and decoded from
/// memory. Below it the request saved (iceberg's reader fetches the footer, then the column
/// chunks) is a round trip of tens of milliseconds against a transfer of at most ~0.1-0.2 s;
/// above it the saving is noise and iceberg's ranged reads need no buffer of the whole file.
/// The read-ahead's byte bound ([`READ_AHEAD_BYTES`]) keeps one file at a time in flight per
/// group at this size, so a group holds at most one such buffer beside the file it decodes.
pub(super) const WHOLE_OBJECT_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// The batches of a group's files, in order: each file directly when it can be
/// ([`FileReader::batches`]), else through iceberg's reader; read ahead on object stores
/// ([`read_ahead_files`]). `fetch_whole`: object-store files are worth a whole-object GET (the
/// group's first footer maps directly; a file that then does not falls back after its GET).
/// Groups with delete files, or read several files at once, go through iceberg's reader as one
/// stream (it loads each delete file once per read).
pub(super) fn group_batches(
    table: &Table,
    tasks: Vec<FileScanTask>,
    target: ArrowSchemaRef,
    opts: &RewriteSettings,
    fetch_whole: bool,
) -> Result<BoxStream<'static, iceberg::Result<RecordBatch>>, RewriteError> {
    let ahead = read_ahead_files(&tasks, opts.data_file_concurrency, opts.read_ahead);
    let direct = opts.direct_read
        && opts.data_file_concurrency == 1
        && tasks.iter().all(|t| t.deletes.is_empty());
    let mut files = FileReader::new(table, target, opts, fetch_whole);
    if !direct && ahead <= 1 {
        let task_stream = futures::stream::iter(tasks.into_iter().map(Ok)).boxed();
        return Ok(files.iceberg.read(task_stream)?.stream());
    }
    files.direct = direct;
    Ok(if ahead > 1 {
        read_ahead(files, tasks, ahead)
    } else {
        futures::stream::iter(tasks)
            .map(move |task| files.batches(task))
            .flatten()
            .boxed()
    })
}

/// Reads one file of a group at a time, directly or through iceberg's reader.
#[derive(Clone)]
pub(super) struct FileReader {
    iceberg: ArrowReader,
    file_io: FileIO,
    /// The output's Arrow schema (the table's current schema, with field ids).
    target: ArrowSchemaRef,
    batch_size: usize,
    /// Whether files may be read directly at all.
    direct: bool,
    /// Whether object-store files are fetched whole (see [`group_batches`]).
    fetch_whole: bool,
}

impl FileReader {
    /// Reads `table`'s files into `target` (the output's Arrow schema) with `opts`' batch size
    /// and concurrency; directly where a file allows it ([`direct_metadata`]).
    pub(super) fn new(
        table: &Table,
        target: ArrowSchemaRef,
        opts: &RewriteSettings,
        fetch_whole: bool,
    ) -> Self {
        let mut reader = table
            .reader_builder()
            .with_data_file_concurrency_limit(opts.data_file_concurrency)
            .with_row_group_filtering_enabled(false)
            .with_row_selection_enabled(false)
            .with_metadata_size_hint(FOOTER_PREFETCH_BYTES);
        if let Some(n) = opts.batch_size {
            reader = reader.with_batch_size(n);
        }
        FileReader {
            iceberg: reader.build(),
            file_io: table.file_io().clone(),
            target,
            // parquet-rs's default, as iceberg's reader keeps it when no size is set.
            batch_size: opts.batch_size.unwrap_or(1024),
            direct: opts.direct_read,
            fetch_whole,
        }
    }

    /// The output's Arrow schema every batch is read into.
    pub(super) fn target(&self) -> &ArrowSchemaRef {
        &self.target
    }

    /// Blocking: the direct reader of the local file `path` (`task`'s), or why it cannot be
    /// read directly.
    pub(super) fn open_local(
        &self,
        path: &std::path::Path,
        task: &FileScanTask,
    ) -> Result<ParquetRecordBatchReader, DirectError> {
        if !self.direct {
            return Err(DirectError::Disabled);
        }
        let file = File::open(path).map_err(|e| DirectError::Io(e.to_string()))?;
        open_direct(file, task, &self.target, self.batch_size)
    }

    /// The batches of one file, in the output's Arrow schema (iceberg's after
    /// [`to_writer_batch`]).
    pub(super) fn batches(
        &self,
        task: FileScanTask,
    ) -> BoxStream<'static, iceberg::Result<RecordBatch>> {
        let this = self.clone();
        futures::stream::once(async move {
            match this.open_direct(&task).await {
                Some(reader) => decode(reader),
                None => this.through_iceberg(task),
            }
        })
        .flatten()
        .boxed()
    }

    /// `task`'s batches through iceberg's reader, in the output's Arrow schema only after
    /// [`to_writer_batch`].
    pub(super) fn through_iceberg(
        &self,
        task: FileScanTask,
    ) -> BoxStream<'static, iceberg::Result<RecordBatch>> {
        let one = futures::stream::iter([Ok(task)]).boxed();
        match self.iceberg.clone().read(one) {
            Ok(r) => r.stream(),
            Err(e) => futures::stream::iter([Err(e)]).boxed(),
        }
    }

    /// The direct reader of `task`'s file, or `None` when iceberg's reader must read it (the
    /// reason is logged at debug level).
    async fn open_direct(&self, task: &FileScanTask) -> Option<ParquetRecordBatchReader> {
        if !self.direct || !task.deletes.is_empty() {
            return None;
        }
        let opened = if let Some(path) = local_path(&task.data_file_path) {
            let (task, target, rows) = (task.clone(), self.target.clone(), self.batch_size);
            // Opening reads the footer: file I/O, kept off the runtime's workers.
            tokio::task::spawn_blocking(move || {
                let file = File::open(&path).map_err(|e| DirectError::Io(e.to_string()))?;
                open_direct(file, &task, &target, rows)
            })
            .await
            .unwrap_or_else(|e| Err(DirectError::Io(e.to_string())))
        } else if self.fetch_whole && task.file_size_in_bytes <= WHOLE_OBJECT_MAX_BYTES {
            match self.fetch(&task.data_file_path).await {
                Ok(bytes) => open_direct(bytes, task, &self.target, self.batch_size),
                Err(e) => Err(DirectError::Io(e.to_string())),
            }
        } else {
            return None;
        };
        match opened {
            Ok(reader) => Some(reader),
            Err(why) => {
                tracing::debug!(path = %task.data_file_path, %why, "read through iceberg's reader");
                None
            }
        }
    }

    async fn fetch(&self, path: &str) -> iceberg::Result<impl ChunkReader + 'static> {
        self.file_io.new_input(path)?.read().await
    }
}

/// Why a file is not read directly.
#[derive(Debug, thiserror::Error)]
pub(super) enum DirectError {
    #[error("direct reads are off (direct_read = false)")]
    Disabled,
    #[error("cannot read the file: {0}")]
    Io(String),
    #[error("cannot read the footer: {0}")]
    Footer(#[from] parquet::errors::ParquetError),
    #[error("delete files apply")]
    Deletes,
    #[error("{0}")]
    Schema(String),
    #[error("identity-partition column {field_id} is not provably the partition value {value:?}")]
    PartitionConstant {
        field_id: i32,
        value: PrimitiveLiteral,
    },
}

/// The direct reader of one file, after [`direct_metadata`] says it may be read directly.
pub(super) fn open_direct<T: ChunkReader + 'static>(
    input: T,
    task: &FileScanTask,
    target: &ArrowSchemaRef,
    batch_size: usize,
) -> Result<ParquetRecordBatchReader, DirectError> {
    let metadata = ArrowReaderMetadata::load(&input, ArrowReaderOptions::new())?;
    let direct = direct_metadata(metadata.metadata().clone(), task, target)?;
    Ok(
        ParquetRecordBatchReaderBuilder::new_with_metadata(input, direct)
            .with_batch_size(batch_size)
            .build()?,
    )
}

/// Decides from a file's footer whether it can be read without iceberg's reader (see the
/// module docs), and if so the reader metadata that decodes it straight into `target`'s Arrow
/// schema (field names, field-id metadata and time-zone spelling as the writer wants them).
/// No page index is loaded: whole files are read.
pub(super) fn direct_metadata(
    metadata: Arc<ParquetMetaData>,
    task: &FileScanTask,
    target: &ArrowSchemaRef,
) -> Result<ArrowReaderMetadata, DirectError> {
    if !task.deletes.is_empty() {
        return Err(DirectError::Deletes);
    }
    let file = ArrowReaderMetadata::try_new(metadata.clone(), ArrowReaderOptions::new())?;
    same_fields(file.schema().fields(), target.fields()).map_err(DirectError::Schema)?;
    partition_constants_hold(&metadata, task)?;
    Ok(ArrowReaderMetadata::try_new(
        metadata,
        ArrowReaderOptions::new().with_schema(target.clone()),
    )?)
}

fn same_fields(file: &Fields, target: &Fields) -> Result<(), String> {
    if file.len() != target.len() {
        return Err(format!(
            "{} columns where the table schema has {}",
            file.len(),
            target.len()
        ));
    }
    file.iter()
        .zip(target.iter())
        .try_for_each(|(f, t)| same_field(f, t))
}

fn same_field(file: &Field, target: &Field) -> Result<(), String> {
    let id = |f: &Field| f.metadata().get(PARQUET_FIELD_ID_META_KEY).cloned();
    if id(file) != id(target) || file.name() != target.name() {
        return Err(format!(
            "column {:?} (field id {:?}) where the table has {:?} (field id {:?})",
            file.name(),
            id(file),
            target.name(),
            id(target)
        ));
    }
    if file.is_nullable() != target.is_nullable() {
        return Err(format!("column {:?} differs in nullability", target.name()));
    }
    same_type(file.data_type(), target.data_type())
        .map_err(|why| format!("column {:?}: {why}", target.name()))
}

fn same_type(file: &DataType, target: &DataType) -> Result<(), String> {
    match (file, target) {
        (DataType::Struct(f), DataType::Struct(t)) => same_fields(f, t),
        (DataType::List(f), DataType::List(t))
        | (DataType::LargeList(f), DataType::LargeList(t)) => same_field(f, t),
        (DataType::Map(f, fs), DataType::Map(t, ts)) if fs == ts => same_field(f, t),
        (DataType::Timestamp(fu, fz), DataType::Timestamp(tu, tz))
            if fu == tu && is_utc(fz.as_deref()) == is_utc(tz.as_deref()) =>
        {
            Ok(())
        }
        _ if file == target => Ok(()),
        _ => Err(format!("type {file} where the table has {target}")),
    }
}

/// `Some(true)` for a UTC time zone however it is spelled (Parquet's `isAdjustedToUTC` reads
/// as `"UTC"` or `"+00:00"`, iceberg writes `"+00:00"`), `None` without a zone. Any other zone
/// is `Some(false)`, which matches nothing iceberg writes.
fn is_utc(zone: Option<&str>) -> Option<bool> {
    zone.map(|z| matches!(z, "UTC" | "+00:00" | "Z" | "Etc/UTC" | "+00"))
}

/// iceberg's reader replaces every projected identity-partition column with the file's
/// partition value (the spec's "column projection" rule, as Java's `constantsMap`), whatever
/// the file holds; a direct read returns the file's values. They are the same when every row
/// group's statistics say the column holds that value and no null: checked here; anything else
/// (no statistics, truncated ones, a type not compared) reads through iceberg.
fn partition_constants_hold(
    metadata: &ParquetMetaData,
    task: &FileScanTask,
) -> Result<(), DirectError> {
    let (Some(spec), Some(tuple)) = (&task.partition_spec, &task.partition) else {
        return Ok(());
    };
    for (field, value) in spec.fields().iter().zip(tuple.iter()) {
        // A null partition value is not a constant: iceberg reads the column from the file.
        let (Transform::Identity, Some(Literal::Primitive(value))) = (field.transform, value)
        else {
            continue;
        };
        if !task.project_field_ids.contains(&field.source_id) {
            continue;
        }
        let holds = metadata.row_groups().iter().all(|rg| {
            rg.columns()
                .iter()
                .find(|c| {
                    let info = c.column_descr().self_type().get_basic_info();
                    c.column_descr().path().parts().len() == 1
                        && info.has_id()
                        && info.id() == field.source_id
                })
                .is_some_and(|c| holds_only(c.statistics(), value))
        });
        if !holds {
            return Err(DirectError::PartitionConstant {
                field_id: field.source_id,
                value: value.clone(),
            });
        }
    }
    Ok(())
}

/// Whether column statistics say every value is `value` (and none is null).
fn holds_only(stats: Option<&Statistics>, value: &PrimitiveLiteral) -> bool {
    let Some(stats) = stats else {
        return false;
    };
    if stats.null_count_opt() != Some(0) {
        return false;
    }
    match (stats, value) {
        (Statistics::Boolean(s), PrimitiveLiteral::Boolean(v)) => {
            s.min_opt() == Some(v) && s.max_opt() == Some(v)
        }
        (Statistics::Int32(s), PrimitiveLiteral::Int(v)) => {
            s.min_opt() == Some(v) && s.max_opt() == Some(v)
        }
        (Statistics::Int64(s), PrimitiveLiteral::Long(v)) => {
            s.min_opt() == Some(v) && s.max_opt() == Some(v)
        }
        (Statistics::ByteArray(s), PrimitiveLiteral::String(v)) => {
            s.min_is_exact()
                && s.max_is_exact()
                && s.min_bytes_opt() == Some(v.as_bytes())
                && s.max_bytes_opt() == Some(v.as_bytes())
        }
        _ => false,
    }
}

/// A direct reader's decoding error, as the rewrite reports it.
pub(super) fn decode_error(e: arrow_schema::ArrowError) -> iceberg::Error {
    iceberg::Error::new(iceberg::ErrorKind::DataInvalid, "cannot decode a data file").with_source(e)
}

/// Decodes a direct reader's batches on the blocking pool, one batch ahead of the consumer.
/// Dropping the stream ends the decoding at its next batch.
fn decode(reader: ParquetRecordBatchReader) -> BoxStream<'static, iceberg::Result<RecordBatch>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::task::spawn_blocking(move || {
        for batch in reader {
            let batch = batch.map_err(decode_error);
            let failed = batch.is_err();
            if tx.blocking_send(batch).is_err() || failed {
                return;
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}

#[cfg(test)]
mod tests;
