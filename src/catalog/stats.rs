//! Facts about a table's current state, read from its metadata and manifests: file counts, small
//! files, sizes and snapshots. Used by `icemaint tables`, the API and the per-table gauges.

use futures::{StreamExt, TryStreamExt};
use iceberg::spec::{DataContentType, ManifestContentType};
use iceberg::table::Table;
use serde::Serialize;

/// File-level facts of the current snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FileStats {
    pub data_files: u64,
    pub small_files: u64,
    pub data_bytes: u64,
    pub records: u64,
    pub delete_files: u64,
    pub manifests: u64,
    pub average_file_bytes: f64,
}

/// Reads the current snapshot's manifests; files under `small_threshold` bytes count as small.
pub async fn file_stats(table: &Table, small_threshold: u64) -> Result<FileStats, iceberg::Error> {
    let mut stats = FileStats::default();
    let Some(snapshot) = table.metadata().current_snapshot() else {
        return Ok(stats);
    };
    let list = table.manifest_list_reader(snapshot).load().await?;
    stats.manifests = list.entries().len() as u64;
    let file_io = table.file_io().clone();
    let manifests: Vec<_> = futures::stream::iter(list.entries().iter().cloned())
        .map(|mf| {
            let io = file_io.clone();
            async move { mf.load_manifest(&io).await.map(|m| (mf.content, m)) }
        })
        .buffer_unordered(8)
        .try_collect()
        .await?;
    for (content, manifest) in manifests {
        for entry in manifest.entries().iter().filter(|e| e.is_alive()) {
            let f = entry.data_file();
            match (content, f.content_type()) {
                (ManifestContentType::Data, DataContentType::Data) => {
                    stats.data_files += 1;
                    stats.data_bytes += f.file_size_in_bytes();
                    stats.records += f.record_count();
                    if f.file_size_in_bytes() < small_threshold {
                        stats.small_files += 1;
                    }
                }
                _ => stats.delete_files += 1,
            }
        }
    }
    if stats.data_files > 0 {
        stats.average_file_bytes = stats.data_bytes as f64 / stats.data_files as f64;
    }
    Ok(stats)
}
