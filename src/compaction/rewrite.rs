//! Reading file groups from the starting snapshot (deletes applied) and writing them as
//! target-size Parquet files.
//!
//! [`collect_candidates`] (in [`candidates`]) turns a snapshot into candidate files for the
//! planner plus what the [`FileScanTask`] of each file is built from when its group is
//! rewritten (a shared template, each partition's tuple, the deletes of files that have any: a
//! million files cost a compact record each, not a task each); [`rewrite_group`] /
//! [`rewrite_file_group`] read one planned group ([`read`]: directly with arrow-rs where a file
//! needs nothing from iceberg's Arrow reader, else through it, which applies position and
//! equality deletes) and write it back through iceberg's writer stack in the table's current
//! schema and the output partition spec. Committing the result (the `replace` snapshot) is done
//! elsewhere ([`crate::commit`]).
//!
//! iceberg-rust 0.10.1 details this module works around:
//! - `FileScanTask` carries neither the data file's partition spec (the field exists but the scan
//!   leaves it `None`) nor delete-file record counts, and its scan decodes every manifest and
//!   clones each entry with all its column metrics. icemaint walks the manifests itself and
//!   builds the tasks from that walk; the scan runs only for what the walk cannot decide (a
//!   `where` filter's selection, and which delete files apply to which data file when the
//!   snapshot has any).
//! - Scan tasks are one per data file (`start` 0, `length` = file size): 0.10.1 does not split by
//!   `read.split.target-size`. Tasks are still merged by path in case a later version does.
//! - Tasks from a filtered scan carry the filter as a row predicate; the reader would then drop
//!   rows. Tasks therefore come from an unfiltered scan of the same snapshot, and the filter only
//!   chooses which files are candidates (Spark's semantics for `where`).
//! - The Parquet writer ignores `write.parquet.*` table properties; [`writer_properties`] maps
//!   them, defaulting to zstd like Java. Its dictionary fallback differs from Java's: columns the
//!   input's writer stored without a dictionary are written without one
//!   ([`plain_encoded_columns`]).
//! - Deletion vectors (v3 Puffin delete files) are not applied by the reader: such tables are
//!   refused rather than resurrecting deleted rows. Encrypted tables are refused too.
//! - The scan attaches every position delete file of a partition to every data file in it, even
//!   when the delete file is scoped to one data file (`referenced_data_file`, or equal
//!   `file_path` bounds); such deletes are dropped from the other files' tasks, as Java's delete
//!   index does, so delete-file counts match Java.
//! - The reader returns identity-partition columns filled from partition metadata as
//!   run-end-encoded constants (once the task carries its spec), which iceberg's own Parquet
//!   writer and partition splitter reject; they are expanded before writing.
//! - `DataFile` has no public getter for its partition spec id: the written files are in
//!   [`RewriteSettings::output_spec_id`] (or the default spec), which the committer must use.
//! - iceberg's Parquet writer buffers each row group in a fresh `Vec` before handing it to
//!   storage; on a local warehouse output files are written by [`writer`] instead (same bytes,
//!   same metrics, streamed through a buffered file and `fsync`ed at close).
//! - The rolling writer's size check counts the in-progress row group's estimated encoded size;
//!   rolling by rows is the primary mechanism and the byte cap only a safety net.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef as ArrowSchemaRef;
use futures::stream::BoxStream;
use iceberg::arrow::{ArrowFileReader, RecordBatchPartitionSplitter};
use iceberg::io::{FileIO, FileMetadata};
use iceberg::scan::FileScanTask;
use iceberg::spec::{
    DataFile, DataFileFormat, Literal, PartitionKey, PartitionSpecRef, Schema, SchemaRef, Struct,
};
use iceberg::table::Table;
use iceberg::writer::base_writer::data_file_writer::{DataFileWriter, DataFileWriterBuilder};
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator, LocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use parquet::basic::{BrotliLevel, Compression, Encoding, GzipLevel, ZstdLevel};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use self::candidates::tasks_for;
pub use self::candidates::{
    Candidates, TaskSource, collect_candidates, current_null_partition, render_partition,
};
pub use self::read::ReadAhead;
use self::read::{FOOTER_PREFETCH_BYTES, READ_BATCH_ROWS, next_batch, to_writer_batch};
use self::writer::ParquetFileWriterBuilder;
use super::plan::{FileGroup, output_file_byte_cap};

/// Table property naming the key of an encrypted table.
const ENCRYPTION_KEY_ID: &str = "encryption.key-id";

/// Errors collecting candidates or rewriting a group. Messages are lowercase; iceberg's own
/// messages are quoted as they come.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("snapshot {0} not found in table metadata")]
    SnapshotNotFound(i64),
    #[error("partition spec {0} not found in table metadata")]
    SpecNotFound(i32),
    #[error(
        "table has {count} deletion vector file(s) (v3 puffin deletes), which icemaint cannot apply; refusing to rewrite"
    )]
    DeletionVectors { count: usize },
    #[error("table is encrypted ({0}); icemaint cannot rewrite encrypted tables")]
    Encrypted(String),
    #[error("no scan task for data file {0}")]
    MissingTask(String),
    #[error("empty file group")]
    EmptyGroup,
    #[error("table property {key}={value}: {message}")]
    InvalidTableProperty {
        key: String,
        value: String,
        message: String,
    },
    #[error("invalid rewrite settings: {0}")]
    InvalidSettings(String),
    #[error("read {read} rows but wrote {written}")]
    RowCountMismatch { read: u64, written: u64 },
    #[error("the reader produced nothing for {seconds} s (stalled)")]
    Stalled { seconds: u64 },
    #[error("the rewrite was cancelled")]
    Cancelled,
    #[error("iceberg: {0}")]
    Iceberg(#[from] iceberg::Error),
}

impl RewriteError {
    /// Whether trying again later may succeed. Storage failures surface from iceberg 0.10.1 as
    /// `Unexpected` (opendal and I/O errors are wrapped that way) or are flagged retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            RewriteError::Iceberg(e) => {
                e.retryable() || matches!(e.kind(), iceberg::ErrorKind::Unexpected)
            }
            RewriteError::Stalled { .. } => true,
            _ => false,
        }
    }
}

/// Settings for writing one group, independent of the group itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteSettings {
    pub target_file_size_bytes: u64,
    pub max_file_size_bytes: u64,
    /// `None`: the table's current default spec.
    pub output_spec_id: Option<i32>,
    /// Rows per batch from the reader (default 8192); `None` keeps iceberg's default (1024).
    pub batch_size: Option<usize>,
    /// Data files read concurrently. 1 keeps each file's rows together and in order, which keeps
    /// some of the input clustering; memory grows with it.
    pub data_file_concurrency: usize,
    /// Partition writers open at once when a group from an older spec is split into the output
    /// spec's partitions. Each holds up to one row group in memory; when the limit is reached
    /// the least recently used writer is closed (its partition may then get one more file).
    pub max_open_partition_writers: usize,
    /// How long the reader may go without producing a batch before the attempt is abandoned
    /// (its files removed) and the group read again; see [`READ_STALL_TIMEOUT`].
    pub stall_timeout: Duration,
    /// Which files a group reads ahead of the one it writes (default: on object stores only).
    pub read_ahead: ReadAhead,
    /// Read files that need nothing from iceberg's reader directly with arrow-rs (default; see
    /// [`read`]); `false` reads every file through iceberg's reader.
    pub direct_read: bool,
    /// Rewrite a group whose files and output are local, without deletes and in one output
    /// partition, on one blocking thread (default; see [`local`]); `false` always takes the
    /// async path.
    pub one_thread: bool,
}

/// iceberg-rust 0.10.1's delete loading can lose a wake-up: a task that finds a delete file still
/// loading reads the state, drops the lock, and only then creates its `Notify` future; when the
/// loader finishes in between, `notify_waiters` wakes nobody and the read waits forever
/// (`arrow/delete_filter.rs`, `get_equality_delete_predicate_for_delete_file_path`; the same
/// pattern for position deletes in `caching_delete_file_loader.rs`). It needs a preemption in a
/// window of a few instructions, so it is rare, but a daemon runs compactions for months and a
/// hung job would hold its table's lease forever. A batch normally arrives within milliseconds;
/// a minute without one is treated as this hang and the group is read again.
pub const READ_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Attempts per group when the reader stalls.
const STALL_ATTEMPTS: u32 = 3;

impl RewriteSettings {
    pub fn new(target_file_size_bytes: u64, max_file_size_bytes: u64) -> Self {
        RewriteSettings {
            target_file_size_bytes,
            max_file_size_bytes,
            output_spec_id: None,
            batch_size: Some(READ_BATCH_ROWS),
            data_file_concurrency: 1,
            max_open_partition_writers: 16,
            stall_timeout: READ_STALL_TIMEOUT,
            read_ahead: ReadAhead::Remote,
            direct_read: true,
            one_thread: true,
        }
    }

    /// From resolved options and the resolved output spec.
    pub fn from_options(options: &super::options::CompactionOptions, output_spec_id: i32) -> Self {
        RewriteSettings {
            output_spec_id: Some(output_spec_id),
            ..RewriteSettings::new(options.target_file_size_bytes, options.max_file_size_bytes)
        }
    }

    fn validate(&self) -> Result<(), RewriteError> {
        if self.target_file_size_bytes == 0
            || self.max_file_size_bytes < self.target_file_size_bytes
        {
            return Err(RewriteError::InvalidSettings(format!(
                "need 0 < target ({}) <= max ({})",
                self.target_file_size_bytes, self.max_file_size_bytes
            )));
        }
        if self.data_file_concurrency == 0 || self.max_open_partition_writers == 0 {
            return Err(RewriteError::InvalidSettings(
                "data_file_concurrency and max_open_partition_writers must be > 0".to_string(),
            ));
        }
        Ok(())
    }
}

fn property_error(key: &str, value: &str, message: impl Into<String>) -> RewriteError {
    RewriteError::InvalidTableProperty {
        key: key.to_string(),
        value: value.to_string(),
        message: message.into(),
    }
}

/// Parquet writer properties from the table's `write.parquet.*` properties, with Java's defaults:
/// zstd (level 3), 128 MiB row groups, 1 MiB pages, 20 000-row pages, 2 MiB dictionaries,
/// dictionary encoding on.
pub fn writer_properties(
    properties: &HashMap<String, String>,
) -> Result<WriterProperties, RewriteError> {
    const CODEC: &str = "write.parquet.compression-codec";
    const LEVEL: &str = "write.parquet.compression-level";
    const ROW_GROUP: &str = "write.parquet.row-group-size-bytes";
    const PAGE: &str = "write.parquet.page-size-bytes";
    const PAGE_ROWS: &str = "write.parquet.page-row-limit";
    const DICT: &str = "write.parquet.dict-size-bytes";

    let size = |key: &str, default: usize| -> Result<usize, RewriteError> {
        match properties.get(key) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(property_error(key, v, "expected a positive integer")),
            },
        }
    };
    let level = match properties.get(LEVEL) {
        None => None,
        Some(v) => Some(
            v.trim()
                .parse::<i32>()
                .map_err(|_| property_error(LEVEL, v, "expected an integer"))?,
        ),
    };
    let codec = properties
        .get(CODEC)
        .map(|s| s.trim().to_ascii_lowercase())
        .unwrap_or_else(|| "zstd".to_string());
    let bad_level = |e: parquet::errors::ParquetError| {
        property_error(LEVEL, &format!("{level:?}"), e.to_string())
    };
    let compression = match codec.as_str() {
        "zstd" => Compression::ZSTD(ZstdLevel::try_new(level.unwrap_or(3)).map_err(bad_level)?),
        "gzip" => Compression::GZIP(match level {
            Some(l) => {
                GzipLevel::try_new(u32::try_from(l).unwrap_or(u32::MAX)).map_err(bad_level)?
            }
            None => GzipLevel::default(),
        }),
        "brotli" => Compression::BROTLI(match level {
            Some(l) => {
                BrotliLevel::try_new(u32::try_from(l).unwrap_or(u32::MAX)).map_err(bad_level)?
            }
            None => BrotliLevel::default(),
        }),
        "snappy" => Compression::SNAPPY,
        "lz4" => Compression::LZ4_RAW,
        "uncompressed" | "none" => Compression::UNCOMPRESSED,
        _ => {
            return Err(property_error(
                CODEC,
                &codec,
                "expected one of zstd, gzip, snappy, lz4, brotli, uncompressed",
            ));
        }
    };
    Ok(WriterProperties::builder()
        .set_compression(compression)
        .set_dictionary_enabled(true)
        .set_max_row_group_bytes(Some(size(ROW_GROUP, 128 * 1024 * 1024)?))
        .set_max_row_group_row_count(None)
        .set_data_page_size_limit(size(PAGE, 1024 * 1024)?)
        .set_data_page_row_count_limit(size(PAGE_ROWS, 20_000)?)
        .set_dictionary_page_size_limit(size(DICT, 2 * 1024 * 1024)?)
        .set_statistics_enabled(EnabledStatistics::Page)
        .build())
}

/// Leaf columns that the writer of an input file stored without a dictionary in every row group:
/// (column path in that file, Iceberg field id when the file carries ids).
///
/// Java's Parquet writer abandons a column's dictionary after the first page when it does not pay
/// off (mostly distinct values: timestamps, measurements) and rewrites that page plain. parquet-rs
/// only falls back once the dictionary page reaches `write.parquet.dict-size-bytes`, so on such a
/// column it hashes every value into a dictionary that it then abandons, and the dictionary-encoded
/// pages written before the fallback come out larger than plain ones. A compacted file holds at
/// least as many distinct values as each of its inputs, so a column the input's writer found not
/// worth a dictionary is written plain ([`without_dictionary_for`]).
pub fn plain_encoded_columns(metadata: &ParquetMetaData) -> Vec<(ColumnPath, Option<i32>)> {
    let schema = metadata.file_metadata().schema_descr();
    let row_groups = metadata.row_groups();
    (0..schema.num_columns())
        .filter(|&i| {
            !row_groups.is_empty()
                && row_groups.iter().all(|rg| {
                    let c = rg.column(i);
                    c.dictionary_page_offset().is_none()
                        && !c.encodings().any(|e| {
                            matches!(e, Encoding::PLAIN_DICTIONARY | Encoding::RLE_DICTIONARY)
                        })
                })
        })
        .map(|i| {
            let column = schema.column(i);
            let info = column.self_type().get_basic_info();
            (column.path().clone(), info.has_id().then(|| info.id()))
        })
        .collect()
}

/// `props` with dictionary encoding switched off for `columns` (see [`plain_encoded_columns`]).
pub fn without_dictionary_for(
    props: WriterProperties,
    columns: impl IntoIterator<Item = ColumnPath>,
) -> WriterProperties {
    columns
        .into_iter()
        .fold(props.into_builder(), |b, column| {
            b.set_column_dictionary_enabled(column, false)
        })
        .build()
}

/// Location generator that remembers every location it hands out, so a failed rewrite can
/// delete the files it started (including a half-written one).
#[derive(Clone, Debug)]
struct RecordingLocationGenerator {
    inner: DefaultLocationGenerator,
    generated: Arc<Mutex<Vec<String>>>,
}

impl LocationGenerator for RecordingLocationGenerator {
    fn generate_location(&self, partition_key: Option<&PartitionKey>, file_name: &str) -> String {
        let location = self.inner.generate_location(partition_key, file_name);
        self.generated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(location.clone());
        location
    }
}

/// Deletes the files a rewrite wrote unless disarmed: awaited on the error path, spawned on the
/// current runtime if the rewrite future is dropped midway (cancellation).
struct CleanupGuard {
    file_io: FileIO,
    generated: Arc<Mutex<Vec<String>>>,
    armed: bool,
}

impl CleanupGuard {
    fn take_paths(&self) -> Vec<String> {
        std::mem::take(&mut *self.generated.lock().unwrap_or_else(|e| e.into_inner()))
    }

    async fn cleanup(mut self) {
        self.armed = false;
        delete_all(&self.file_io, self.take_paths()).await;
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

async fn delete_all(file_io: &FileIO, paths: Vec<String>) {
    for path in paths {
        // A location may never have been created (files are opened lazily); only report real
        // failures.
        if let Ok(false) = file_io.exists(&path).await {
            continue;
        }
        if let Err(e) = file_io.delete(&path).await {
            tracing::warn!(path = %path, error = %e, "could not delete a file of a failed rewrite");
        }
    }
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let paths = self.take_paths();
        if paths.is_empty() {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let file_io = self.file_io.clone();
            handle.spawn(async move { delete_all(&file_io, paths).await });
        } else {
            tracing::warn!(
                files = paths.len(),
                "rewrite dropped without a runtime; its files are left for orphan cleanup"
            );
        }
    }
}

type Writer =
    DataFileWriter<ParquetFileWriterBuilder, RecordingLocationGenerator, DefaultFileNameGenerator>;
type WriterBuilder = DataFileWriterBuilder<
    ParquetFileWriterBuilder,
    RecordingLocationGenerator,
    DefaultFileNameGenerator,
>;

/// When a partition's output rolls to a new file: every `rows_per_file` rows (the byte cap
/// inside iceberg's rolling writer is the safety net), except that with a file budget the last
/// budgeted file takes all remaining rows, so a slightly low row estimate never leaves a tiny
/// extra file. Shared by [`PartitionSink`] and the one-thread path ([`local`]), so both cut a
/// group into the same files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileRoll {
    rows_per_file: u64,
    rows_in_file: u64,
    files_closed: usize,
    /// `Some(n)`: at most `n` row-based rolls for this partition.
    file_budget: Option<usize>,
}

impl FileRoll {
    fn new(rows_per_file: u64, file_budget: Option<usize>) -> Self {
        FileRoll {
            rows_per_file: rows_per_file.max(1),
            rows_in_file: 0,
            files_closed: 0,
            file_budget,
        }
    }

    fn on_last_file(&self) -> bool {
        self.file_budget
            .is_some_and(|budget| self.files_closed + 1 >= budget)
    }

    /// How many of a batch's `remaining` rows go to the current file (at least one).
    fn take(&self, remaining: usize) -> usize {
        if self.on_last_file() {
            return remaining;
        }
        let room = self.rows_per_file.saturating_sub(self.rows_in_file).max(1);
        usize::try_from(room).map_or(remaining, |room| remaining.min(room))
    }

    /// Counts `rows` written to the current file; `true` when the file is full and is to be
    /// closed now.
    fn wrote(&mut self, rows: usize) -> bool {
        self.rows_in_file += rows as u64;
        !self.on_last_file() && self.rows_in_file >= self.rows_per_file
    }

    /// The current file was closed.
    fn closed(&mut self) {
        self.files_closed += 1;
        self.rows_in_file = 0;
    }
}

/// The writer for one output partition, rolling as [`FileRoll`] says.
struct PartitionSink {
    key: PartitionKey,
    writer: Option<Writer>,
    roll: FileRoll,
    last_used: u64,
}

impl PartitionSink {
    fn new(key: PartitionKey, roll: FileRoll) -> Self {
        PartitionSink {
            key,
            writer: None,
            roll,
            last_used: 0,
        }
    }

    async fn write(
        &mut self,
        builder: &WriterBuilder,
        batch: &RecordBatch,
        out: &mut Vec<DataFile>,
    ) -> Result<(), RewriteError> {
        let mut offset = 0usize;
        let rows = batch.num_rows();
        while offset < rows {
            if self.writer.is_none() {
                self.writer = Some(builder.build(Some(self.key.clone())).await?);
            }
            let take = self.roll.take(rows - offset);
            let writer = self.writer.as_mut().expect("just built");
            writer.write(batch.slice(offset, take)).await?;
            offset += take;
            if self.roll.wrote(take) {
                self.close(out).await?;
            }
        }
        Ok(())
    }

    async fn close(&mut self, out: &mut Vec<DataFile>) -> Result<(), RewriteError> {
        if let Some(mut writer) = self.writer.take() {
            out.extend(writer.close().await?);
            self.roll.closed();
        }
        Ok(())
    }
}

/// What a rewrite aims for, beyond the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GroupTarget {
    output_files: usize,
    /// Estimated rows after deletes.
    live_records: u64,
    byte_cap: u64,
}

/// Rewrites one group: reads `tasks` with deletes applied and writes about
/// `expected_output_files` Parquet files in the output spec (more when the group's rows belong to
/// several output partitions, or when the byte cap is reached). On error, every file this call
/// created is deleted. Returns the new data files.
///
/// Without the plan at hand the row estimate ignores deletes; prefer [`rewrite_file_group`],
/// which uses the planner's known deleted-row counts.
pub async fn rewrite_group(
    table: &Table,
    tasks: Vec<FileScanTask>,
    expected_output_files: usize,
    opts: &RewriteSettings,
) -> Result<Vec<DataFile>, RewriteError> {
    let input_bytes: u64 = tasks.iter().map(|t| t.file_size_in_bytes).sum();
    let records: u64 = tasks.iter().filter_map(|t| t.record_count).sum();
    let output_files = expected_output_files.max(1);
    let target = GroupTarget {
        output_files,
        live_records: records,
        byte_cap: output_file_byte_cap(
            opts.target_file_size_bytes,
            opts.max_file_size_bytes,
            input_bytes,
            output_files,
        ),
    };
    rewrite(table, tasks, target, opts).await
}

/// Rewrites a planned [`FileGroup`], taking its tasks from `tasks` (see [`Candidates::tasks`]).
pub async fn rewrite_file_group(
    table: &Table,
    group: &FileGroup,
    tasks: &HashMap<String, FileScanTask>,
    opts: &RewriteSettings,
) -> Result<Vec<DataFile>, RewriteError> {
    let group_tasks = tasks_for(group, tasks)?;
    rewrite_planned_group(table, group, group_tasks, opts).await
}

/// [`rewrite_file_group`] with the group's tasks already taken out (see
/// [`Candidates::tasks_for`]), so concurrent groups need not share the task map.
pub async fn rewrite_planned_group(
    table: &Table,
    group: &FileGroup,
    group_tasks: Vec<FileScanTask>,
    opts: &RewriteSettings,
) -> Result<Vec<DataFile>, RewriteError> {
    let target = GroupTarget {
        output_files: group.expected_output_files.max(1),
        live_records: group
            .input_records
            .saturating_sub(group.known_deleted_records),
        byte_cap: group.max_output_file_bytes,
    };
    let mut attempt = 1;
    loop {
        match rewrite(table, group_tasks.clone(), target, opts).await {
            Err(RewriteError::Stalled { seconds }) if attempt < STALL_ATTEMPTS => {
                tracing::warn!(
                    table = %table.identifier(),
                    group = group.id,
                    attempt,
                    seconds,
                    "reader stalled; the attempt's files are removed and the group is read again"
                );
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn rewrite(
    table: &Table,
    mut tasks: Vec<FileScanTask>,
    target: GroupTarget,
    opts: &RewriteSettings,
) -> Result<Vec<DataFile>, RewriteError> {
    opts.validate()?;
    if tasks.is_empty() {
        return Err(RewriteError::EmptyGroup);
    }
    let metadata = table.metadata();
    if metadata.properties().contains_key(ENCRYPTION_KEY_ID) {
        return Err(RewriteError::Encrypted(format!(
            "table property {ENCRYPTION_KEY_ID} is set"
        )));
    }
    let schema: SchemaRef = metadata.current_schema().clone();
    let spec: PartitionSpecRef = match opts.output_spec_id {
        Some(id) => metadata
            .partition_spec_by_id(id)
            .ok_or(RewriteError::SpecNotFound(id))?
            .clone(),
        None => metadata.default_partition_spec().clone(),
    };

    // Read every column of the current schema: columns added since a file was written come back
    // as nulls, dropped ones are left out. No row predicate: whole files are rewritten.
    let field_ids: Vec<i32> = schema.as_struct().fields().iter().map(|f| f.id).collect();
    for task in &mut tasks {
        task.schema = schema.clone();
        task.project_field_ids = field_ids.clone();
        task.predicate = None;
    }

    let single_key = single_output_partition(&tasks, &spec, &schema);
    let splitter = match single_key {
        Some(_) => None,
        None => Some(RecordBatchPartitionSplitter::try_new_with_computed_values(
            schema.clone(),
            spec.clone(),
        )?),
    };

    let generated = Arc::new(Mutex::new(Vec::new()));
    let guard = CleanupGuard {
        file_io: table.file_io().clone(),
        generated: generated.clone(),
        armed: true,
    };
    let footer = first_footer(table, &tasks[0]).await;
    let plain = footer
        .as_ref()
        .map(|m| plain_output_columns(m, &schema))
        .unwrap_or_default();
    let (parquet, locations, names) = writer_parts(table, &schema, plain, generated)?;
    let rows_per_file = target
        .live_records
        .div_ceil(target.output_files as u64)
        .max(1);
    let arrow_schema: ArrowSchemaRef = Arc::new(iceberg::arrow::schema_to_arrow_schema(&schema)?);
    let byte_cap = usize::try_from(target.byte_cap).unwrap_or(usize::MAX);

    let one_thread = opts.one_thread
        && opts.data_file_concurrency == 1
        && read::read_ahead_files(&tasks, 1, opts.read_ahead) <= 1;
    let local_output = match &single_key {
        Some(key) if one_thread => Some(local::Output {
            key: key.clone(),
            parquet: parquet.clone(),
            locations: locations.clone(),
            names: names.clone(),
            byte_cap,
            roll: FileRoll::new(rows_per_file, Some(target.output_files)),
        })
        .filter(|output| local::applies(&tasks, output)),
        _ => None,
    };
    let result = if let Some(output) = local_output {
        let files = read::FileReader::new(table, arrow_schema.clone(), opts, false);
        local::rewrite(tasks, files, output, opts.stall_timeout).await
    } else {
        // A whole-object GET pays off when the group's files can be read directly, which the
        // group's first file tells (the others are checked again once fetched).
        let fetch_whole = footer
            .is_some_and(|m| read::direct_metadata(Arc::new(m), &tasks[0], &arrow_schema).is_ok());
        let batches = read::group_batches(table, tasks, arrow_schema.clone(), opts, fetch_whole)?;
        let builder = DataFileWriterBuilder::new(RollingFileWriterBuilder::new(
            parquet,
            byte_cap,
            table.file_io().clone(),
            locations,
            names,
        ));
        write_all(
            batches,
            &arrow_schema,
            &builder,
            single_key,
            splitter,
            rows_per_file,
            target.output_files,
            opts,
        )
        .await
    };
    match result {
        Ok(files) => {
            guard.disarm();
            Ok(files)
        }
        Err(e) => {
            guard.cleanup().await;
            Err(e)
        }
    }
}

/// The one output partition of `tasks` (non-empty), when there is one: the output spec is
/// unpartitioned, or every file is already in the output spec and in the same partition (the
/// planner groups by partition; checking the tuples themselves guards against two tuples that
/// render alike). `None`: rows are split by partition while writing.
fn single_output_partition(
    tasks: &[FileScanTask],
    spec: &PartitionSpecRef,
    schema: &SchemaRef,
) -> Option<PartitionKey> {
    if spec.is_unpartitioned() {
        let nulls = Struct::from_iter(spec.fields().iter().map(|_| None::<Literal>));
        return Some(PartitionKey::new(
            spec.as_ref().clone(),
            schema.clone(),
            nulls,
        ));
    }
    let first = tasks[0].partition.clone();
    let same = tasks.iter().all(|t| {
        t.partition_spec
            .as_ref()
            .is_some_and(|s| s.spec_id() == spec.spec_id())
            && t.partition.is_some()
            && t.partition == first
    });
    match (same, first) {
        (true, Some(p)) => Some(PartitionKey::new(spec.as_ref().clone(), schema.clone(), p)),
        _ => None,
    }
}

/// The footer of a group's first input file (the dictionary hints, and whether the group's
/// files are worth a whole-object GET). Costs one read; `None` when it fails (the read of the
/// group reports the real problem).
async fn first_footer(table: &Table, sample: &FileScanTask) -> Option<ParquetMetaData> {
    let footer = async {
        let reader = table
            .file_io()
            .new_input(&sample.data_file_path)?
            .reader()
            .await?;
        let size = sample.file_size_in_bytes;
        let mut reader = ArrowFileReader::new(FileMetadata { size }, reader);
        ParquetMetaDataReader::new()
            .with_prefetch_hint(Some(FOOTER_PREFETCH_BYTES))
            .load_and_finish(&mut reader, size)
            .await
            .map_err(|e| {
                iceberg::Error::new(iceberg::ErrorKind::Unexpected, "cannot read a footer")
                    .with_source(e)
            })
    };
    match footer.await {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::debug!(path = %sample.data_file_path, error = %e, "no footer of the group's first file");
            None
        }
    }
}

/// The output columns to write without a dictionary: top-level primitive columns of `schema`
/// that `sample` (the footer of the group's first input file) stores plain
/// ([`plain_encoded_columns`], matched by field id).
fn plain_output_columns(sample: &ParquetMetaData, schema: &Schema) -> Vec<ColumnPath> {
    plain_encoded_columns(sample)
        .into_iter()
        .filter_map(|(_, id)| {
            let field = schema
                .as_struct()
                .fields()
                .iter()
                .find(|f| Some(f.id) == id)?;
            field
                .field_type
                .is_primitive()
                .then(|| ColumnPath::new(vec![field.name.clone()]))
        })
        .collect()
}

/// What an output file is written with and where: the Parquet writer (the table's
/// `write.parquet.*` properties, no dictionary for `plain_columns`), the data location (recorded
/// in `generated` for cleanup) and file names unique to this rewrite.
fn writer_parts(
    table: &Table,
    schema: &SchemaRef,
    plain_columns: Vec<ColumnPath>,
    generated: Arc<Mutex<Vec<String>>>,
) -> Result<
    (
        ParquetFileWriterBuilder,
        RecordingLocationGenerator,
        DefaultFileNameGenerator,
    ),
    RewriteError,
> {
    let metadata = table.metadata();
    let props = without_dictionary_for(writer_properties(metadata.properties())?, plain_columns);
    let parquet = ParquetFileWriterBuilder::new(props, schema.clone())?;
    let locations = RecordingLocationGenerator {
        inner: DefaultLocationGenerator::new(metadata)?,
        generated,
    };
    // Unique per call, like Java's per-operation id in file names.
    let names = DefaultFileNameGenerator::new(
        format!("icemaint-{}", uuid::Uuid::now_v7()),
        None,
        DataFileFormat::Parquet,
    );
    Ok((parquet, locations, names))
}

#[allow(clippy::too_many_arguments)]
async fn write_all(
    mut batches: BoxStream<'static, iceberg::Result<RecordBatch>>,
    arrow_schema: &ArrowSchemaRef,
    builder: &WriterBuilder,
    single_key: Option<PartitionKey>,
    splitter: Option<RecordBatchPartitionSplitter>,
    rows_per_file: u64,
    output_files: usize,
    opts: &RewriteSettings,
) -> Result<Vec<DataFile>, RewriteError> {
    let stall = opts.stall_timeout;

    let mut out = Vec::new();
    let mut rows_read = 0u64;
    match (single_key, splitter) {
        (Some(key), _) => {
            let mut sink =
                PartitionSink::new(key, FileRoll::new(rows_per_file, Some(output_files)));
            while let Some(batch) = next_batch(&mut batches, stall).await? {
                let batch = to_writer_batch(batch, arrow_schema)?;
                rows_read += batch.num_rows() as u64;
                sink.write(builder, &batch, &mut out).await?;
            }
            sink.close(&mut out).await?;
        }
        (None, Some(splitter)) => {
            let mut sinks: HashMap<Struct, PartitionSink> = HashMap::new();
            let mut tick = 0u64;
            while let Some(batch) = next_batch(&mut batches, stall).await? {
                let batch = to_writer_batch(batch, arrow_schema)?;
                rows_read += batch.num_rows() as u64;
                for (key, part) in splitter.split(&batch)? {
                    tick += 1;
                    let data = key.data().clone();
                    let needs_writer = sinks.get(&data).is_none_or(|s| s.writer.is_none());
                    if needs_writer {
                        let open = sinks.values().filter(|s| s.writer.is_some()).count();
                        // Bound memory: close the least recently used writer.
                        if open >= opts.max_open_partition_writers
                            && let Some(lru) = sinks
                                .values_mut()
                                .filter(|s| s.writer.is_some())
                                .min_by_key(|s| s.last_used)
                        {
                            lru.close(&mut out).await?;
                        }
                    }
                    let sink = sinks.entry(data).or_insert_with(|| {
                        PartitionSink::new(key, FileRoll::new(rows_per_file, None))
                    });
                    sink.last_used = tick;
                    sink.write(builder, &part, &mut out).await?;
                }
            }
            for sink in sinks.values_mut() {
                sink.close(&mut out).await?;
            }
        }
        (None, None) => unreachable!("either a single partition or a splitter"),
    }

    let written: u64 = out.iter().map(|f| f.record_count()).sum();
    if written != rows_read {
        return Err(RewriteError::RowCountMismatch {
            read: rows_read,
            written,
        });
    }
    Ok(out)
}

mod candidates;
mod committed;
mod local;
mod read;
#[cfg(test)]
mod tests;
mod writer;
