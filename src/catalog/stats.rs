//! Facts about a table's current state, read from its metadata and manifests: file counts, small
//! files, sizes, a file-size histogram and snapshots. Used by `icemaint tables`, the API, the
//! status page and the per-table gauges.

use futures::{StreamExt, TryStreamExt};
use iceberg::spec::{DataContentType, ManifestContentType};
use iceberg::table::Table;
use serde::Serialize;

const MIB: u64 = 1024 * 1024;

/// Upper bounds (exclusive) of the data-file size buckets: < 1, 8, 32, 128, 512 MiB; a last bucket
/// holds the files of 512 MiB and more. Chosen around the usual 512 MiB compaction target so that a
/// healthy table shows most bytes in the last two buckets and a fragmented one in the first.
pub const SIZE_BUCKET_UPPER_BYTES: [u64; 5] = [MIB, 8 * MIB, 32 * MIB, 128 * MIB, 512 * MIB];

/// Number of size buckets: one per upper bound plus the open-ended last one.
pub const SIZE_BUCKETS: usize = SIZE_BUCKET_UPPER_BYTES.len() + 1;

/// The bucket a data file of `bytes` falls in (index into [`FileStats::size_buckets`]).
pub fn size_bucket(bytes: u64) -> usize {
    SIZE_BUCKET_UPPER_BYTES
        .iter()
        .position(|&upper| bytes < upper)
        .unwrap_or(SIZE_BUCKET_UPPER_BYTES.len())
}

/// File-level facts of the current snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FileStats {
    pub data_files: u64,
    pub small_files: u64,
    /// Bytes of the small files: about what a compaction of them rewrites.
    pub small_file_bytes: u64,
    pub data_bytes: u64,
    pub records: u64,
    pub delete_files: u64,
    pub manifests: u64,
    pub average_file_bytes: f64,
    /// Live data files per size bucket (see [`SIZE_BUCKET_UPPER_BYTES`]).
    pub size_buckets: [u64; SIZE_BUCKETS],
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
                    stats.size_buckets[size_bucket(f.file_size_in_bytes())] += 1;
                    if f.file_size_in_bytes() < small_threshold {
                        stats.small_files += 1;
                        stats.small_file_bytes += f.file_size_in_bytes();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_split_at_their_upper_bounds() {
        assert_eq!(size_bucket(0), 0);
        assert_eq!(size_bucket(MIB - 1), 0);
        assert_eq!(size_bucket(MIB), 1);
        assert_eq!(size_bucket(8 * MIB), 2);
        assert_eq!(size_bucket(128 * MIB - 1), 3);
        assert_eq!(size_bucket(512 * MIB - 1), 4);
        assert_eq!(size_bucket(512 * MIB), 5);
        assert_eq!(size_bucket(u64::MAX), SIZE_BUCKETS - 1);
    }
}
