//! Shared pieces of snapshot expiry and orphan-file removal: the kinds of files a table is made
//! of, walking a snapshot's manifest list and manifests into plain data, and a bounded,
//! retrying, idempotent deleter that reports what it removed by kind.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use iceberg::io::FileIO;
use iceberg::spec::{DataContentType, ManifestFile, SnapshotRef};
use iceberg::table::Table;
use serde::Serialize;

use crate::crashpoint::{self, CrashPoint};
use crate::fence::Fence;
use crate::telemetry::Metrics;

/// What a file is to the table. The names are the `file_kind` label of the deletion metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    Data,
    Delete,
    Manifest,
    ManifestList,
    Metadata,
    Statistics,
    Orphan,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Data => "data",
            FileKind::Delete => "delete",
            FileKind::Manifest => "manifest",
            FileKind::ManifestList => "manifest_list",
            FileKind::Metadata => "metadata",
            FileKind::Statistics => "statistics",
            FileKind::Orphan => "orphan",
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The canonical spelling of a file location, for comparing locations written by different
/// engines: `s3a://` and `s3n://` are `s3://` (Spark's default `equal-schemes`), and `file:/x`
/// (Java's Hadoop paths), `file://localhost/x`, `file:///x` and a bare `/x` are all `file:///x`
/// with repeated slashes folded. Other locations are returned unchanged.
pub fn canonical(location: &str) -> String {
    for alias in ["s3a://", "s3n://"] {
        if let Some(rest) = location.strip_prefix(alias) {
            return format!("s3://{rest}");
        }
    }
    let local = if let Some(rest) = location.strip_prefix("file://localhost/") {
        Some(rest)
    } else if let Some(rest) = location.strip_prefix("file:") {
        // `file:///x` and `file:/x`; `file://host/x` names another host and stays as it is.
        if rest.starts_with("///") || !rest.starts_with("//") {
            Some(rest)
        } else {
            None
        }
    } else if location.starts_with('/') {
        Some(location)
    } else {
        None
    };
    match local {
        Some(path) => {
            let mut out = String::with_capacity(path.len() + 8);
            out.push_str("file://");
            let mut prev_slash = false;
            if !path.starts_with('/') {
                out.push('/');
                prev_slash = true;
            }
            for c in path.chars() {
                if c == '/' && prev_slash {
                    continue;
                }
                prev_slash = c == '/';
                out.push(c);
            }
            out
        }
        None => location.to_string(),
    }
}

/// A file to delete: where, what, and its size when the metadata knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileRef {
    pub path: String,
    pub kind: FileKind,
    pub size: Option<u64>,
}

/// A manifest reduced to what reachability needs: the files its entries name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestReach {
    pub length: u64,
    /// Files of ADDED and EXISTING entries: what a reader of a snapshot using this manifest reads.
    pub live: Vec<FileRef>,
    /// Files of DELETED entries: removed by the snapshot that wrote the manifest, live in its
    /// parent's manifests.
    pub deleted: Vec<String>,
}

/// One snapshot: its manifest list and the manifests that list names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotReach {
    pub snapshot_id: i64,
    pub manifest_list: String,
    pub manifests: Vec<String>,
}

/// Errors reading a table's manifests.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("reading manifest list {path}: {source}")]
    ManifestList {
        path: String,
        #[source]
        source: Box<iceberg::Error>,
    },
    #[error("reading manifest {path}: {source}")]
    Manifest {
        path: String,
        #[source]
        source: Box<iceberg::Error>,
    },
}

impl WalkError {
    pub fn is_retryable(&self) -> bool {
        match self {
            WalkError::ManifestList { source, .. } | WalkError::Manifest { source, .. } => {
                source.retryable()
            }
        }
    }
}

/// Reads the manifest list of `snapshot` (which must belong to `table`'s metadata).
pub async fn snapshot_reach(
    table: &Table,
    snapshot: &SnapshotRef,
) -> Result<(SnapshotReach, Vec<ManifestFile>), WalkError> {
    let list = table
        .manifest_list_reader(snapshot)
        .load()
        .await
        .map_err(|source| WalkError::ManifestList {
            path: snapshot.manifest_list().to_string(),
            source: Box::new(source),
        })?;
    let files: Vec<ManifestFile> = list.entries().to_vec();
    let reach = SnapshotReach {
        snapshot_id: snapshot.snapshot_id(),
        manifest_list: snapshot.manifest_list().to_string(),
        manifests: files.iter().map(|m| m.manifest_path.clone()).collect(),
    };
    Ok((reach, files))
}

/// Loads `manifests` (`concurrency` at a time) into plain data, keyed by path.
pub async fn load_manifests(
    io: &FileIO,
    manifests: Vec<ManifestFile>,
    concurrency: usize,
) -> Result<HashMap<String, ManifestReach>, WalkError> {
    futures::stream::iter(manifests)
        .map(|mf| {
            let io = io.clone();
            async move {
                let manifest =
                    mf.load_manifest(&io)
                        .await
                        .map_err(|source| WalkError::Manifest {
                            path: mf.manifest_path.clone(),
                            source: Box::new(source),
                        })?;
                let mut reach = ManifestReach {
                    length: mf.manifest_length.max(0) as u64,
                    ..Default::default()
                };
                for entry in manifest.entries() {
                    let f = entry.data_file();
                    if entry.is_alive() {
                        let kind = match f.content_type() {
                            DataContentType::Data => FileKind::Data,
                            _ => FileKind::Delete,
                        };
                        reach.live.push(FileRef {
                            path: f.file_path().to_string(),
                            kind,
                            size: Some(f.file_size_in_bytes()),
                        });
                    } else {
                        reach.deleted.push(f.file_path().to_string());
                    }
                }
                Ok((mf.manifest_path, reach))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}

// ---------------------------------------------------------------------------------------------
// Deleting
// ---------------------------------------------------------------------------------------------

/// What one delete call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    Deleted,
    /// Nothing was there (deleted by someone else, or by an earlier run).
    AlreadyGone,
}

/// A failed delete or stat.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RemoveError {
    pub message: String,
    pub retryable: bool,
}

impl RemoveError {
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

/// Storage that can delete files (iceberg's `FileIO`, an object store, a local directory).
#[async_trait::async_trait]
pub trait Remover: Send + Sync {
    /// The size of `path`, `None` when it does not exist.
    async fn size(&self, path: &str) -> Result<Option<u64>, RemoveError>;
    /// Deletes `path`; a missing file is [`Removed::AlreadyGone`], not an error.
    async fn remove(&self, path: &str) -> Result<Removed, RemoveError>;
}

/// Deletes through the table's `FileIO`, so the same credentials and endpoints as every read.
#[derive(Debug, Clone)]
pub struct FileIoRemover(pub FileIO);

#[async_trait::async_trait]
impl Remover for FileIoRemover {
    async fn size(&self, path: &str) -> Result<Option<u64>, RemoveError> {
        let input = self.0.new_input(path).map_err(io_err)?;
        match input.metadata().await {
            Ok(m) => Ok(Some(m.size)),
            // FileIO does not expose "not found" as a kind: ask whether the file exists.
            Err(e) => match self.0.exists(path).await {
                Ok(false) => Ok(None),
                _ => Err(io_err(e)),
            },
        }
    }

    async fn remove(&self, path: &str) -> Result<Removed, RemoveError> {
        // opendal's delete is idempotent: a missing file is success.
        self.0.delete(path).await.map_err(io_err)?;
        Ok(Removed::Deleted)
    }
}

/// A remover that checks the job's fence before every delete, so a job whose table lease is
/// lost deletes nothing more (each remaining file fails with the lease error, not retried).
pub struct FencedRemover {
    inner: Arc<dyn Remover>,
    fence: Fence,
}

impl FencedRemover {
    pub fn wrap(inner: Arc<dyn Remover>, fence: &Fence) -> Arc<dyn Remover> {
        Arc::new(Self {
            inner,
            fence: fence.clone(),
        })
    }
}

#[async_trait::async_trait]
impl Remover for FencedRemover {
    async fn size(&self, path: &str) -> Result<Option<u64>, RemoveError> {
        self.inner.size(path).await
    }

    async fn remove(&self, path: &str) -> Result<Removed, RemoveError> {
        self.fence.before_delete().await.map_err(|e| RemoveError {
            message: e.to_string(),
            retryable: e.is_retryable(),
        })?;
        self.inner.remove(path).await
    }
}

fn io_err(e: iceberg::Error) -> RemoveError {
    RemoveError {
        message: e.to_string().lines().next().unwrap_or_default().to_string(),
        // Storage errors are mostly transient (throttling, timeouts); a permanent one just
        // fails every attempt.
        retryable: true,
    }
}

/// How hard to try each delete.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            first_backoff: Duration::from_millis(200),
        }
    }
}

/// Files and bytes of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub files: u64,
    pub bytes: u64,
}

/// One file that could not be deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeleteFailure {
    pub path: String,
    pub error: String,
}

/// The most failures a report lists (the count is always exact).
pub const MAX_LISTED_FAILURES: usize = 20;

/// What a batch of deletes did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeleteReport {
    pub deleted: BTreeMap<FileKind, Totals>,
    pub already_gone: u64,
    pub failed: u64,
    pub failures: Vec<DeleteFailure>,
}

impl DeleteReport {
    pub fn files(&self) -> u64 {
        self.deleted.values().map(|t| t.files).sum()
    }

    pub fn bytes(&self) -> u64 {
        self.deleted.values().map(|t| t.bytes).sum()
    }

    /// Adds the totals to `files_deleted_total` / `deleted_bytes_total`.
    pub fn publish(&self, metrics: &Metrics) {
        for (kind, t) in &self.deleted {
            metrics
                .files_deleted_total
                .with_label_values(&[kind.as_str()])
                .inc_by(t.files);
            metrics
                .deleted_bytes_total
                .with_label_values(&[kind.as_str()])
                .inc_by(t.bytes);
        }
    }
}

enum Outcome {
    Deleted(u64),
    Gone,
    Failed(String),
}

/// [`delete_files`] with the default retry, its totals published to `metrics`: what expiry and
/// orphan removal both do with the files they decided to delete.
pub async fn delete_and_publish(
    remover: Arc<dyn Remover>,
    files: Vec<FileRef>,
    concurrency: usize,
    metrics: &Metrics,
) -> DeleteReport {
    let deleted = delete_files(remover, files, concurrency.max(1), RetryPolicy::default()).await;
    deleted.publish(metrics);
    deleted
}

/// Deletes `files`, at most `concurrency` at a time, each tried up to `retry.attempts` times.
/// Files whose size the metadata does not know are measured first (for the byte counts); a file
/// that is already gone counts as neither deleted nor failed.
pub async fn delete_files(
    remover: Arc<dyn Remover>,
    files: Vec<FileRef>,
    concurrency: usize,
    retry: RetryPolicy,
) -> DeleteReport {
    let results: Vec<(FileRef, Outcome)> = futures::stream::iter(files)
        .map(|f| {
            let remover = Arc::clone(&remover);
            async move {
                let outcome = delete_one(remover.as_ref(), &f, retry).await;
                if matches!(outcome, Outcome::Deleted(_)) {
                    crashpoint::reached(CrashPoint::DeleteAfterFirst);
                }
                (f, outcome)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut report = DeleteReport::default();
    for (f, outcome) in results {
        match outcome {
            Outcome::Deleted(bytes) => {
                let t = report.deleted.entry(f.kind).or_default();
                t.files += 1;
                t.bytes += bytes;
            }
            Outcome::Gone => report.already_gone += 1,
            Outcome::Failed(error) => {
                report.failed += 1;
                if report.failures.len() < MAX_LISTED_FAILURES {
                    report.failures.push(DeleteFailure {
                        path: f.path.clone(),
                        error,
                    });
                }
            }
        }
    }
    report.failures.sort_by(|a, b| a.path.cmp(&b.path));
    report
}

async fn delete_one(remover: &dyn Remover, f: &FileRef, retry: RetryPolicy) -> Outcome {
    let mut backoff = retry.first_backoff;
    let mut last = String::new();
    for attempt in 1..=retry.attempts.max(1) {
        let size = match f.size {
            Some(s) => Ok(Some(s)),
            None => remover.size(&f.path).await,
        };
        let result = match size {
            Ok(None) => return Outcome::Gone,
            Ok(Some(size)) => remover.remove(&f.path).await.map(|r| (r, size)),
            Err(e) => Err(e),
        };
        match result {
            Ok((Removed::Deleted, size)) => {
                tracing::debug!(path = f.path, kind = %f.kind, size, "deleted");
                return Outcome::Deleted(size);
            }
            Ok((Removed::AlreadyGone, _)) => return Outcome::Gone,
            Err(e) => {
                last = e.message.clone();
                if !e.is_retryable() || attempt == retry.attempts {
                    break;
                }
                tracing::debug!(path = f.path, attempt, error = %e, "delete failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
    }
    tracing::warn!(path = f.path, kind = %f.kind, error = last, "delete failed");
    Outcome::Failed(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Mutex;

    /// In-memory storage whose paths listed in `flaky` fail their first delete and in `broken`
    /// always fail.
    #[derive(Default)]
    struct Fake {
        files: Mutex<HashMap<String, u64>>,
        flaky: Mutex<HashSet<String>>,
        broken: HashSet<String>,
        calls: Mutex<u32>,
    }

    #[async_trait::async_trait]
    impl Remover for Fake {
        async fn size(&self, path: &str) -> Result<Option<u64>, RemoveError> {
            Ok(self.files.lock().unwrap().get(path).copied())
        }
        async fn remove(&self, path: &str) -> Result<Removed, RemoveError> {
            *self.calls.lock().unwrap() += 1;
            if self.broken.contains(path) || self.flaky.lock().unwrap().remove(path) {
                return Err(RemoveError {
                    message: format!("boom {path}"),
                    retryable: true,
                });
            }
            Ok(match self.files.lock().unwrap().remove(path) {
                Some(_) => Removed::Deleted,
                None => Removed::AlreadyGone,
            })
        }
    }

    fn f(path: &str, kind: FileKind, size: Option<u64>) -> FileRef {
        FileRef {
            path: path.into(),
            kind,
            size,
        }
    }

    #[test]
    fn canonical_locations() {
        for (a, b) in [
            ("s3a://b/k/x.parquet", "s3://b/k/x.parquet"),
            ("s3n://b/k", "s3://b/k"),
            ("s3://b/k//x", "s3://b/k//x"),
            ("file:/tmp/wh/t/x", "file:///tmp/wh/t/x"),
            ("file:///tmp/wh/t/x", "file:///tmp/wh/t/x"),
            ("file://localhost/tmp/x", "file:///tmp/x"),
            ("/tmp//wh/x", "file:///tmp/wh/x"),
            ("file:////tmp/x", "file:///tmp/x"),
            ("file://otherhost/tmp/x", "file://otherhost/tmp/x"),
            ("gs://b/x", "gs://b/x"),
        ] {
            assert_eq!(canonical(a), b, "{a}");
        }
    }

    #[tokio::test]
    async fn deletes_retry_count_by_kind_and_tolerate_missing_files() {
        let fake = Fake {
            broken: ["b".to_string()].into(),
            ..Default::default()
        };
        for (p, s) in [
            ("d1", 10),
            ("d2", 20),
            ("m", 5),
            ("ml", 7),
            ("b", 1),
            ("x", 3),
        ] {
            fake.files.lock().unwrap().insert(p.into(), s);
        }
        fake.flaky.lock().unwrap().insert("d2".into());
        let fake = Arc::new(fake);
        let files = vec![
            f("d1", FileKind::Data, Some(10)),
            f("d2", FileKind::Data, Some(20)),
            f("m", FileKind::Manifest, Some(5)),
            // Size unknown: measured before deleting.
            f("ml", FileKind::ManifestList, None),
            // Unknown size and gone: not an error, not counted.
            f("gone", FileKind::Metadata, None),
            // Known size but gone: the remover says so.
            f("gone2", FileKind::Data, Some(99)),
            f("b", FileKind::Delete, Some(1)),
        ];
        let retry = RetryPolicy {
            attempts: 3,
            first_backoff: Duration::from_millis(1),
        };
        let r = delete_files(fake.clone(), files, 2, retry).await;
        assert_eq!(
            r.deleted[&FileKind::Data],
            Totals {
                files: 2,
                bytes: 30
            }
        );
        assert_eq!(
            r.deleted[&FileKind::Manifest],
            Totals { files: 1, bytes: 5 }
        );
        assert_eq!(
            r.deleted[&FileKind::ManifestList],
            Totals { files: 1, bytes: 7 }
        );
        assert!(!r.deleted.contains_key(&FileKind::Metadata));
        assert_eq!(r.already_gone, 2);
        assert_eq!(r.failed, 1);
        assert_eq!(r.failures[0].path, "b");
        assert!(r.failures[0].error.contains("boom"));
        assert_eq!((r.files(), r.bytes()), (4, 42));
        // "x" was never asked for; "b" still there.
        let left: HashSet<String> = fake.files.lock().unwrap().keys().cloned().collect();
        assert_eq!(left, ["b".to_string(), "x".to_string()].into());
        let m = Metrics::new();
        r.publish(&m);
        let text = m.render();
        assert!(text.contains("icemaint_files_deleted_total{file_kind=\"data\"} 2"));
        assert!(text.contains("icemaint_deleted_bytes_total{file_kind=\"manifest_list\"} 7"));
    }

    /// A job whose lease was lost deletes nothing more: every file fails with the lease error
    /// at once (not retried), and the storage is never asked.
    #[tokio::test]
    async fn a_fenced_remover_stops_deleting_once_the_lease_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = crate::store::Store::connect(&url).await.unwrap();
        let epoch = store.try_lock("m.t", "p", "j1", 60_000).await.unwrap();
        let lease = crate::fence::Lease {
            table: "m.t".into(),
            job_id: "j1".into(),
            epoch: epoch.unwrap(),
        };
        let fence = Fence::new(
            store,
            lease,
            Duration::from_secs(60),
            tokio_util::sync::CancellationToken::new(),
        );
        let fake = Arc::new(Fake::default());
        for p in ["a", "b", "c"] {
            fake.files.lock().unwrap().insert(p.into(), 1);
        }
        let files = || {
            vec![
                f("a", FileKind::Data, Some(1)),
                f("b", FileKind::Data, Some(1)),
            ]
        };
        let remover = FencedRemover::wrap(fake.clone(), &fence);
        let report = delete_files(remover.clone(), files(), 2, RetryPolicy::default()).await;
        assert_eq!((report.files(), report.failed), (2, 0), "lease held");

        fence.lose("taken over by job j2");
        let last = vec![f("c", FileKind::Data, Some(1))];
        let report = delete_files(remover, last, 2, RetryPolicy::default()).await;
        assert_eq!((report.files(), report.failed), (0, 1));
        assert_eq!(
            report.failures[0].error,
            "lease on m.t lost: taken over by job j2"
        );
        assert_eq!(
            *fake.calls.lock().unwrap(),
            2,
            "storage asked only while held"
        );
        assert!(fake.files.lock().unwrap().contains_key("c"));
    }
}
