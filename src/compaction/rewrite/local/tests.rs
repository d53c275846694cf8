//! The one-thread path against the async path, and its cancellation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use iceberg::scan::FileScanTask;
use iceberg::spec::DataFile;

use super::super::tests::{
    append_files, checksum, file_rows, fixture, parquet_files, read_rows, rows_of, snapshot_id,
    spec_org_day,
};
use super::super::{
    FileRoll, RewriteError, RewriteSettings, collect_candidates, rewrite_group, writer_parts,
};
use super::*;

/// The group's tasks in scan order.
async fn tasks_of(table: &iceberg::table::Table) -> Vec<FileScanTask> {
    let c = collect_candidates(table, snapshot_id(table), None)
        .await
        .unwrap();
    let all = c.tasks();
    c.files.iter().map(|x| all[&*x.path].clone()).collect()
}

fn local_bytes(d: &DataFile) -> Vec<u8> {
    std::fs::read(local_path(d.file_path()).unwrap()).unwrap()
}

/// Same files, byte for byte, and the same `DataFile`s but for the path: with direct reads, and
/// with every file through iceberg's reader (driven from the thread by `block_on`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_thread_writes_what_the_async_path_writes() {
    let mut f = fixture(spec_org_day(), HashMap::new()).await;
    let files = file_rows(0, 6, 250, 1, 0);
    append_files(&mut f, &files).await;
    let tasks = tasks_of(&f.table).await;
    for direct_read in [true, false] {
        let settings = |one_thread| RewriteSettings {
            batch_size: Some(100),
            direct_read,
            one_thread,
            ..RewriteSettings::new(1 << 30, 2 << 30)
        };
        // 1500 rows in 3 files of 500: rolls inside batches and at their ends.
        let one = rewrite_group(&f.table, tasks.clone(), 3, &settings(true))
            .await
            .unwrap();
        let other = rewrite_group(&f.table, tasks.clone(), 3, &settings(false))
            .await
            .unwrap();
        assert_eq!(one.len(), 3, "direct_read {direct_read}");
        assert_eq!(one.len(), other.len());
        let mut all = Vec::new();
        for (a, b) in one.iter().zip(&other) {
            assert_ne!(a.file_path(), b.file_path());
            assert_eq!(a.record_count(), 500);
            assert_eq!(local_bytes(a), local_bytes(b), "direct_read {direct_read}");
            assert_eq!(a.file_size_in_bytes(), b.file_size_in_bytes());
            assert_eq!(a.partition(), b.partition());
            assert_eq!(a.column_sizes(), b.column_sizes());
            assert_eq!(a.value_counts(), b.value_counts());
            assert_eq!(a.null_value_counts(), b.null_value_counts());
            assert_eq!(a.nan_value_counts(), b.nan_value_counts());
            assert_eq!(a.lower_bounds(), b.lower_bounds());
            assert_eq!(a.upper_bounds(), b.upper_bounds());
            assert_eq!(a.split_offsets(), b.split_offsets());
            all.extend(read_rows(a.file_path()));
        }
        assert_eq!(checksum(&all), checksum(&rows_of(&files)));
    }
}

/// A cancelled group stops at its next batch and deletes what it created; the inputs stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_group_stops_and_removes_its_files() {
    let mut f = fixture(spec_org_day(), HashMap::new()).await;
    append_files(&mut f, &file_rows(0, 3, 200, 1, 0)).await;
    let inputs = parquet_files(f.dir.path());
    let tasks = tasks_of(&f.table).await;
    let schema = f.table.metadata().current_schema().clone();
    let target = Arc::new(iceberg::arrow::schema_to_arrow_schema(&schema).unwrap());
    let (parquet, locations, names) = writer_parts(
        &f.table,
        &schema,
        Vec::new(),
        Arc::new(Mutex::new(Vec::new())),
    )
    .unwrap();
    let output = Output {
        key: super::super::single_output_partition(
            &tasks,
            f.table.metadata().default_partition_spec(),
            &schema,
        )
        .unwrap(),
        parquet,
        locations,
        names,
        byte_cap: usize::MAX,
        roll: FileRoll::new(600, Some(1)),
    };
    assert!(applies(&tasks, &output));
    let settings = RewriteSettings::new(1 << 30, 2 << 30);
    let files = FileReader::new(&f.table, target, &settings, false);
    let progress = Arc::new(Progress::default());
    let runtime = tokio::runtime::Handle::current();
    let (first, second) = (tasks[0].clone(), tasks[1].clone());
    let mut group = Group::new(files, output, runtime, progress.clone());
    let group = tokio::task::spawn_blocking(move || {
        assert_eq!(group.copy_file(first).unwrap(), 200);
        assert_eq!(group.created.len(), 1);
        assert!(group.created[0].exists(), "the output file is open");
        progress.cancelled.store(true, Ordering::Release);
        let err = group.copy_file(second).unwrap_err();
        assert!(matches!(err, RewriteError::Cancelled), "{err}");
        assert!(!err.is_retryable());
        group.remove_created();
        group
    })
    .await
    .unwrap();
    assert!(group.created.is_empty());
    assert_eq!(parquet_files(f.dir.path()), inputs);
}
