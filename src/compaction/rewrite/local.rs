//! A local group rewritten on one thread, the way the bare arrow-rs loop does it.
//!
//! When a group's input files and its output are on the local file system, no delete file
//! applies and all its rows go to one output partition (the common binpack case), each batch is
//! decoded, encoded and written by the thread that decoded it. The async path instead hands every
//! batch from a decoding thread on the blocking pool to a runtime worker, and every file's open
//! to the blocking pool again: a wake-up per batch and per file, and a batch that is encoded on
//! the core where it is not in cache. A file that cannot be read directly
//! ([`super::read::direct_metadata`]) is read through iceberg's reader from this thread
//! (`Handle::block_on`), so what a file holds never decides which path a group takes.
//!
//! Both paths cut a group into the same files: the same rolling ([`super::FileRoll`], and
//! iceberg's rolling writer's byte-cap check before each write), the same locations and file
//! names, the same `DataFile`s ([`super::writer::data_file_builder`]); a unit test compares them.
//!
//! Groups run on a fixed pool of threads, one per CPU ([`pool`]). The thread looks at a
//! [`Progress`] between batches: when the rewrite's future is dropped
//! (the job is cancelled) or the caller gave up on a stalled read, it stops, deletes the files it
//! created and returns.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arrow_array::RecordBatch;
use futures::StreamExt;
use iceberg::scan::FileScanTask;
use iceberg::spec::{DataFile, PartitionKey};
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, FileNameGenerator, LocationGenerator,
};

use super::read::{FileReader, decode_error, to_writer_batch};
use super::writer::{LocalParquetWriter, ParquetFileWriterBuilder, local_path};
use super::{FileRoll, RecordingLocationGenerator, RewriteError};

/// What the thread shares with the task that waits for it.
#[derive(Debug, Default)]
struct Progress {
    /// Set when nobody waits for the result any more: stop at the next batch.
    cancelled: AtomicBool,
    /// Set when a pool thread took the group (waiting for one is not a stall).
    started: AtomicBool,
    /// Batches read and files finished so far (the caller's stall check).
    batches: AtomicU64,
}

/// Sets [`Progress::cancelled`] when dropped: the rewrite's future was dropped or gave up.
struct CancelOnDrop(Arc<Progress>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancelled.store(true, Ordering::Release);
    }
}

/// Where a local group's output files go and how they are cut.
pub(super) struct Output {
    pub key: PartitionKey,
    pub parquet: ParquetFileWriterBuilder,
    pub locations: RecordingLocationGenerator,
    pub names: DefaultFileNameGenerator,
    /// iceberg's rolling writer's safety net: a file whose written size exceeds this is closed
    /// before the next batch.
    pub byte_cap: usize,
    pub roll: FileRoll,
}

/// Whether `tasks` (one output partition) can be rewritten on one thread: every input file and
/// `output`'s first location are local, and no delete file applies.
pub(super) fn applies(tasks: &[FileScanTask], output: &Output) -> bool {
    let probe = output
        .locations
        .inner
        .generate_location(Some(&output.key), "probe.parquet");
    local_path(&probe).is_some()
        && tasks
            .iter()
            .all(|t| t.deletes.is_empty() && local_path(&t.data_file_path).is_some())
}

/// Rewrites `tasks` into `output` on one blocking thread (see the module docs). No batch for
/// `stall` ends the wait with [`RewriteError::Stalled`]; the thread then stops at its next batch.
pub(super) async fn rewrite(
    tasks: Vec<FileScanTask>,
    files: FileReader,
    output: Output,
    stall: Duration,
) -> Result<Vec<DataFile>, RewriteError> {
    let progress = Arc::new(Progress::default());
    let _cancel = CancelOnDrop(progress.clone());
    let runtime = tokio::runtime::Handle::current();
    let shared = progress.clone();
    let mut done = pool::spawn(move || {
        shared.started.store(true, Ordering::Release);
        let mut group = Group::new(files, output, runtime, shared);
        let result = group.run(tasks);
        if result.is_err() {
            group.remove_created();
        }
        result
    });
    loop {
        let seen = progress.batches.load(Ordering::Acquire);
        match tokio::time::timeout(stall, &mut done).await {
            Ok(Ok(Ok(result))) => return result,
            Ok(Ok(Err(_panic))) => return Err(thread_failed("the rewrite thread panicked")),
            Ok(Err(_)) => return Err(thread_failed("the rewrite thread ended without a result")),
            Err(_) if !progress.started.load(Ordering::Acquire) => {}
            Err(_) if progress.batches.load(Ordering::Acquire) == seen => {
                return Err(RewriteError::Stalled {
                    seconds: stall.as_secs(),
                });
            }
            Err(_) => {}
        }
    }
}

fn thread_failed(message: &str) -> RewriteError {
    RewriteError::Iceberg(iceberg::Error::new(
        iceberg::ErrorKind::Unexpected,
        message.to_string(),
    ))
}

/// The thread's state: the open output file, the files it created, the finished `DataFile`s.
struct Group {
    files: FileReader,
    output: Output,
    runtime: tokio::runtime::Handle,
    progress: Arc<Progress>,
    writer: Option<LocalParquetWriter>,
    created: Vec<PathBuf>,
    out: Vec<DataFile>,
}

impl Group {
    fn new(
        files: FileReader,
        output: Output,
        runtime: tokio::runtime::Handle,
        progress: Arc<Progress>,
    ) -> Self {
        Group {
            files,
            output,
            runtime,
            progress,
            writer: None,
            created: Vec::new(),
            out: Vec::new(),
        }
    }

    fn run(&mut self, tasks: Vec<FileScanTask>) -> Result<Vec<DataFile>, RewriteError> {
        self.check_cancelled()?;
        let mut rows_read = 0u64;
        for task in tasks {
            rows_read += self.copy_file(task)?;
        }
        self.close()?;
        self.check_cancelled()?;
        let written: u64 = self.out.iter().map(|f| f.record_count()).sum();
        if written != rows_read {
            return Err(RewriteError::RowCountMismatch {
                read: rows_read,
                written,
            });
        }
        Ok(std::mem::take(&mut self.out))
    }

    /// Reads one input file into the output; its row count.
    fn copy_file(&mut self, task: FileScanTask) -> Result<u64, RewriteError> {
        let path = local_path(&task.data_file_path).expect("applies() checked every path");
        let mut rows = 0u64;
        match self.files.open_local(&path, &task) {
            Ok(reader) => {
                for batch in reader {
                    let batch = batch.map_err(decode_error)?;
                    rows += self.write(&batch)?;
                }
            }
            Err(why) => {
                tracing::debug!(path = %task.data_file_path, %why, "read through iceberg's reader");
                let mut batches = self.files.through_iceberg(task);
                while let Some(batch) = self.runtime.block_on(batches.next()) {
                    let batch = to_writer_batch(batch?, self.files.target())?;
                    rows += self.write(&batch)?;
                }
            }
        }
        Ok(rows)
    }

    /// Writes `batch` across as many output files as [`FileRoll`] and the byte cap cut it into.
    fn write(&mut self, batch: &RecordBatch) -> Result<u64, RewriteError> {
        self.check_cancelled()?;
        self.progress.batches.fetch_add(1, Ordering::AcqRel);
        let rows = batch.num_rows();
        let mut offset = 0usize;
        while offset < rows {
            if self
                .writer
                .as_ref()
                .is_some_and(|w| w.written_size() > self.output.byte_cap)
            {
                // iceberg's rolling writer: a new file, the same row-based file for FileRoll.
                self.finish_file()?;
            }
            if self.writer.is_none() {
                self.open_file()?;
            }
            let take = self.output.roll.take(rows - offset);
            let writer = self.writer.as_mut().expect("just opened");
            writer.write_blocking(&batch.slice(offset, take))?;
            offset += take;
            if self.output.roll.wrote(take) {
                self.close()?;
            }
        }
        Ok(rows as u64)
    }

    fn open_file(&mut self) -> Result<(), RewriteError> {
        let name = self.output.names.generate_file_name();
        let location = self
            .output
            .locations
            .generate_location(Some(&self.output.key), &name);
        let path = local_path(&location).ok_or_else(|| {
            iceberg::Error::new(
                iceberg::ErrorKind::Unexpected,
                format!("output location {location} is not on the local file system"),
            )
        })?;
        self.created.push(path.clone());
        self.writer = Some(LocalParquetWriter::new(
            &self.output.parquet,
            path,
            location,
        ));
        Ok(())
    }

    /// Closes the open file as [`FileRoll`]'s file: the next one starts a new row count.
    fn close(&mut self) -> Result<(), RewriteError> {
        if self.writer.is_some() {
            self.finish_file()?;
            self.output.roll.closed();
        }
        Ok(())
    }

    /// Finishes the open file (footer, `fsync`) and keeps its `DataFile`.
    fn finish_file(&mut self) -> Result<(), RewriteError> {
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        for mut builder in writer.close_blocking()? {
            builder
                .partition(self.output.key.data().clone())
                .partition_spec_id(self.output.key.spec().spec_id());
            let file = builder.build().map_err(|e| {
                iceberg::Error::new(
                    iceberg::ErrorKind::DataInvalid,
                    format!("failed to build data file: {e}"),
                )
            })?;
            self.out.push(file);
        }
        // A long `fsync` is progress too, not a stalled read.
        self.progress.batches.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    fn check_cancelled(&self) -> Result<(), RewriteError> {
        if self.progress.cancelled.load(Ordering::Acquire) {
            return Err(RewriteError::Cancelled);
        }
        Ok(())
    }

    /// Deletes every file this thread created (after an error or a cancellation); a file
    /// already gone is fine.
    fn remove_created(&mut self) {
        drop(self.writer.take());
        for path in self.created.drain(..) {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not delete a file of a failed rewrite");
                }
            }
        }
    }
}

mod pool;
#[cfg(test)]
mod tests;
