//! Orphan-file removal (Spark's `remove_orphan_files`): list everything under the table location,
//! subtract every file the table references, delete what is left and older than `older-than`.
//!
//! Referenced: manifest lists of every snapshot, their manifests, the live (ADDED and EXISTING)
//! entries of those manifests, the current metadata file and the metadata log, statistics and
//! partition-statistics files. A DELETED entry is a tombstone no snapshot reads, and it can stay
//! in a manifest that later snapshots reuse for as long as that manifest lives: counting it would
//! keep a file that an interrupted expiry left behind forever (Java reads live entries only, too). Matching follows Spark's defaults:
//! `s3`, `s3a` and `s3n` are one scheme (`equal-schemes`), `file:/x` is `file:///x`, and a file
//! whose path is referenced under another scheme or bucket is a prefix mismatch: an error, and
//! nothing is deleted (`prefix-mismatch-mode=ERROR`).
//!
//! The age window is the only guard against deleting the files of a commit still in flight (they
//! are written before the catalog names them), so it is at least one day unless forced. The table
//! is re-read after the listing and anything a commit that landed meanwhile references is kept.
//!
//! Listing: S3 through `object_store` (keys come back verbatim). Local directories are walked
//! with `std::fs`, not `object_store`'s `LocalFileSystem`: that one follows symbolic links while
//! listing, so a link inside the table directory would expose (and let us delete) files outside
//! the table, and one file name that is not UTF-8 fails its whole listing. Here links are neither
//! followed nor deleted and such names are skipped. Hidden files and directories (a name starting
//! with `.` or `_` that is not a `key=value` partition directory, e.g. Hadoop's `.crc` files) are
//! skipped, as Spark does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use iceberg::spec::ManifestFile;
use iceberg::table::Table;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Serialize;

use super::files::{
    self, DeleteFailure, FileKind, FileRef, RemoveError, Removed, Remover, WalkError,
};
use crate::catalog::walk::{MANIFEST_ENTRY_BUDGET, manifest_weight};
use crate::catalog::{CatalogError, CatalogHandle};
use crate::fence::Fence;
use crate::telemetry::Metrics;
use crate::util::human_duration;

/// Spark's default `older_than`: three days.
pub const DEFAULT_OLDER_THAN: Duration = Duration::from_secs(3 * 86_400);
/// Below this, `force` is required.
pub const MIN_OLDER_THAN: Duration = Duration::from_secs(86_400);
/// The most orphan paths a report lists.
pub const MAX_LISTED_PATHS: usize = 1000;
const READ_CONCURRENCY: usize = 8;

/// Errors removing orphan files.
#[derive(Debug, thiserror::Error)]
pub enum OrphansError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(
        "older-than {0} is under 1d and could delete files of commits still in flight; use force to allow it"
    )]
    TooRecent(String),
    #[error(
        "table {0} has gc.enabled=false: its files may be shared with other tables, so orphans are not removed"
    )]
    GcDisabled(String),
    #[error("location {0}: orphan removal supports s3://, s3a://, s3n:// and file: locations")]
    UnsupportedLocation(String),
    #[error("object store for {location}: {message}")]
    Store { location: String, message: String },
    #[error("listing {location}: {message}")]
    Listing {
        location: String,
        message: String,
        retryable: bool,
    },
    #[error("{0}")]
    Walk(#[from] WalkError),
    #[error(
        "prefix mismatch: {count} listed file(s) are referenced under another scheme or authority (e.g. {listed} is referenced as {referenced}); nothing was deleted"
    )]
    PrefixMismatch {
        count: u64,
        listed: String,
        referenced: String,
    },
    #[error("the table references files under more than {0} distinct schemes and authorities")]
    TooManyOrigins(usize),
}

impl OrphansError {
    pub fn is_retryable(&self) -> bool {
        match self {
            OrphansError::Catalog(e) => e.is_retryable(),
            OrphansError::Walk(e) => e.is_retryable(),
            OrphansError::Listing { retryable, .. } => *retryable,
            _ => false,
        }
    }
}

/// Options of one run (Spark's names in the policy, API and CLI).
#[derive(Debug, Clone)]
pub struct OrphanOptions {
    pub older_than: Duration,
    pub dry_run: bool,
    /// Allow `older_than` under one day.
    pub force: bool,
    pub max_concurrent_deletes: usize,
}

impl Default for OrphanOptions {
    fn default() -> Self {
        Self {
            older_than: DEFAULT_OLDER_THAN,
            dry_run: false,
            force: false,
            max_concurrent_deletes: 16,
        }
    }
}

/// What a run found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OrphanReport {
    pub table: String,
    pub location: String,
    pub dry_run: bool,
    pub older_than_seconds: u64,
    /// Files last modified before this (ms since the epoch) were eligible.
    pub cutoff_ms: i64,
    pub referenced_files: u64,
    pub files_listed: u64,
    pub hidden_skipped: u64,
    /// Unreferenced but younger than the window: kept (possibly a commit in flight).
    pub too_new: u64,
    /// Unreferenced at listing time but referenced by a commit that landed during the run.
    pub committed_meanwhile: u64,
    pub orphan_files_found: u64,
    pub orphan_bytes: u64,
    /// In dry runs: the orphans (at most [`MAX_LISTED_PATHS`]).
    pub orphan_paths: Vec<String>,
    pub files_deleted: u64,
    pub bytes_deleted: u64,
    pub already_gone: u64,
    pub delete_failures: u64,
    pub delete_errors: Vec<DeleteFailure>,
}

// ---------------------------------------------------------------------------------------------
// Locations
// ---------------------------------------------------------------------------------------------

/// The storage a location lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    File,
    S3,
}

/// A location split into scheme, authority (S3 bucket; empty for local files) and key (the path
/// without a leading slash; for local files with repeated slashes folded).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectUri {
    pub scheme: Scheme,
    pub authority: String,
    pub key: String,
}

impl ObjectUri {
    /// Parses `s3://b/k` (also `s3a`, `s3n`), `file:///p`, `file:/p`, `file://host/p` and `/p`.
    pub fn parse(location: &str) -> Option<ObjectUri> {
        for prefix in ["s3://", "s3a://", "s3n://"] {
            if let Some(rest) = location.strip_prefix(prefix) {
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return None;
                }
                return Some(ObjectUri {
                    scheme: Scheme::S3,
                    authority: bucket.to_string(),
                    key: key.trim_start_matches('/').to_string(),
                });
            }
        }
        let (authority, path) = if let Some(rest) = location.strip_prefix("file:") {
            if let Some(after) = rest.strip_prefix("//")
                && !after.starts_with('/')
            {
                let (host, path) = after.split_once('/').unwrap_or((after, ""));
                let host = if host == "localhost" { "" } else { host };
                (host, path)
            } else {
                ("", rest)
            }
        } else if location.starts_with('/') {
            ("", location)
        } else {
            return None;
        };
        let key = path
            .split('/')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        Some(ObjectUri {
            scheme: Scheme::File,
            authority: authority.to_string(),
            key,
        })
    }

    /// The canonical URI: `s3://bucket/key` or `file:///key`.
    pub fn uri(&self) -> String {
        match self.scheme {
            Scheme::S3 => format!("s3://{}/{}", self.authority, self.key),
            Scheme::File if self.authority.is_empty() => format!("file:///{}", self.key),
            Scheme::File => format!("file://{}/{}", self.authority, self.key),
        }
    }
}

/// Whether a path below the table location is hidden: some segment starts with `.` or `_` and is
/// not a `key=value` partition directory.
pub fn is_hidden(relative: &str) -> bool {
    relative
        .split('/')
        .any(|s| (s.starts_with('.') || s.starts_with('_')) && !s.contains('='))
}

/// How a listed file relates to the references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    Referenced,
    Unreferenced,
    /// The same path is referenced, but under another scheme or authority.
    Mismatch(String),
}

/// Every referenced path, with the schemes/authorities it is referenced under (a bit set over
/// `origins`: a table has a handful).
///
/// Paths are held as 64-bit hashes (keyed per run), not strings: a million references take
/// ~17 MiB instead of ~200. A hash can only err one way: a listed orphan whose hash collides with
/// a referenced path's looks referenced and is kept (odds ~n²/2⁶⁵: 3·10⁻⁸ at a million); a
/// referenced path always hashes to a key in the set, so it is never deleted.
#[derive(Debug, Default)]
pub struct Referenced {
    keys: HashMap<u64, u64>,
    hasher: RandomState,
    origins: Vec<(Scheme, String)>,
    /// References to storage this module does not list (e.g. `gs://`): cannot be orphans here.
    pub foreign: u64,
}

impl Referenced {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn add(&mut self, location: &str) -> Result<(), OrphansError> {
        let Some(u) = ObjectUri::parse(location) else {
            self.foreign += 1;
            return Ok(());
        };
        let origin = (u.scheme, u.authority);
        let bit = match self.origins.iter().position(|o| *o == origin) {
            Some(i) => i,
            None if self.origins.len() < 64 => {
                self.origins.push(origin);
                self.origins.len() - 1
            }
            None => return Err(OrphansError::TooManyOrigins(64)),
        };
        *self.keys.entry(self.hasher.hash_one(&u.key)).or_default() |= 1 << bit;
        Ok(())
    }

    pub fn lookup(&self, listed: &ObjectUri) -> Match {
        let Some(bits) = self.keys.get(&self.hasher.hash_one(&listed.key)) else {
            return Match::Unreferenced;
        };
        let mut other = None;
        for (i, (scheme, authority)) in self.origins.iter().enumerate() {
            if bits & (1 << i) == 0 {
                continue;
            }
            if *scheme == listed.scheme && *authority == listed.authority {
                return Match::Referenced;
            }
            other.get_or_insert_with(|| {
                ObjectUri {
                    scheme: *scheme,
                    authority: authority.clone(),
                    key: listed.key.clone(),
                }
                .uri()
            });
        }
        Match::Mismatch(other.unwrap_or_default())
    }
}

/// What has been read of a table already, so a re-read only reads what is new.
#[derive(Debug, Default)]
struct Walked {
    snapshots: HashSet<i64>,
    manifests: HashSet<String>,
}

/// Adds everything `table` references to `refs`, skipping snapshots and manifests in `walked`.
async fn walk_references(
    table: &Table,
    refs: &mut Referenced,
    walked: &mut Walked,
) -> Result<(), OrphansError> {
    let md = table.metadata();
    if let Some(l) = table.metadata_location() {
        refs.add(l)?;
    }
    for l in md.metadata_log() {
        refs.add(&l.metadata_file)?;
    }
    for s in md.statistics_iter() {
        refs.add(&s.statistics_path)?;
    }
    for s in md.partition_statistics_iter() {
        refs.add(&s.statistics_path)?;
    }
    // Hadoop-style tables point readers at the current metadata through this file (Java's
    // orphan removal keeps it too).
    let metadata_dir = md
        .properties()
        .get("write.metadata.path")
        .map(|p| p.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("{}/metadata", md.location().trim_end_matches('/')));
    refs.add(&format!("{metadata_dir}/version-hint.text"))?;
    let new: Vec<_> = md
        .snapshots()
        .filter(|s| walked.snapshots.insert(s.snapshot_id()))
        .cloned()
        .collect();
    let lists: Vec<(files::SnapshotReach, Vec<ManifestFile>)> = futures::stream::iter(new)
        .map(|s| async move { files::snapshot_reach(table, &s).await })
        .buffer_unordered(READ_CONCURRENCY)
        .try_collect()
        .await?;
    let mut to_read = Vec::new();
    for (reach, manifests) in lists {
        refs.add(&reach.manifest_list)?;
        for m in manifests {
            if walked.manifests.insert(m.manifest_path.clone()) {
                refs.add(&m.manifest_path)?;
                to_read.push(m);
            }
        }
    }
    // Streamed: each manifest's paths go into the set and the manifest is dropped. The entry
    // budget bounds the decoded entries held at once (large manifests are read fewer at a time).
    let io = table.file_io().clone();
    let budget = Arc::new(tokio::sync::Semaphore::new(MANIFEST_ENTRY_BUDGET as usize));
    let mut loaded = futures::stream::iter(to_read)
        .map(|mf| {
            let io = io.clone();
            let budget = Arc::clone(&budget);
            async move {
                let permit = budget
                    .acquire_many_owned(manifest_weight(&mf))
                    .await
                    .expect("the budget is never closed");
                let manifest =
                    mf.load_manifest(&io)
                        .await
                        .map_err(|source| WalkError::Manifest {
                            path: mf.manifest_path.clone(),
                            source: Box::new(source),
                        })?;
                Ok::<_, WalkError>((manifest, permit))
            }
        })
        .buffer_unordered(READ_CONCURRENCY);
    while let Some(loaded) = loaded.next().await {
        let (manifest, _permit) = loaded?;
        for entry in manifest.entries().iter().filter(|e| e.is_alive()) {
            refs.add(entry.data_file().file_path())?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Listing and deleting
// ---------------------------------------------------------------------------------------------

/// One listed file.
#[derive(Debug, Clone)]
pub struct Listed {
    pub uri: ObjectUri,
    pub size: u64,
    pub modified_ms: i64,
}

/// Where the table's files are listed and deleted.
#[derive(Debug, Clone)]
pub enum Storage {
    Local,
    S3 { store: Arc<AmazonS3> },
}

impl Storage {
    /// The storage for `location`, configured from `s3.*` properties (see
    /// [`storage_properties`]).
    pub fn for_location(
        location: &ObjectUri,
        props: &BTreeMap<String, String>,
    ) -> Result<Storage, OrphansError> {
        match location.scheme {
            Scheme::File if location.authority.is_empty() => Ok(Storage::Local),
            Scheme::File => Err(OrphansError::UnsupportedLocation(location.uri())),
            Scheme::S3 => Ok(Storage::S3 {
                store: Arc::new(s3_store(&location.authority, props).map_err(|message| {
                    OrphansError::Store {
                        location: location.uri(),
                        message,
                    }
                })?),
            }),
        }
    }

    /// Every file under `root` (a directory location), streamed.
    pub fn list(&self, root: &ObjectUri) -> BoxStream<'static, Result<Listed, OrphansError>> {
        match self {
            Storage::Local => list_local(root),
            Storage::S3 { store } => {
                let uri = root.uri();
                let bucket = root.authority.clone();
                let prefix = StorePath::from_iter(root.key.split('/').filter(|s| !s.is_empty()));
                store
                    .list(Some(&prefix))
                    .map(move |r| match r {
                        Ok(meta) => Ok(Listed {
                            uri: ObjectUri {
                                scheme: Scheme::S3,
                                authority: bucket.clone(),
                                key: meta.location.as_ref().to_string(),
                            },
                            size: meta.size,
                            modified_ms: meta.last_modified.timestamp_millis(),
                        }),
                        Err(e) => Err(OrphansError::Listing {
                            location: uri.clone(),
                            message: e.to_string(),
                            retryable: !matches!(e, object_store::Error::NotFound { .. }),
                        }),
                    })
                    .boxed()
            }
        }
    }

    pub fn remover(&self) -> Arc<dyn Remover> {
        match self {
            Storage::Local => Arc::new(LocalRemover),
            Storage::S3 { store } => Arc::new(S3Remover {
                store: Arc::clone(store),
            }),
        }
    }
}

/// The storage properties to reach `table`'s files with: the catalog's properties overlaid by
/// those of the table's FileIO, which a REST catalog's LoadTable `config` fills (per-table
/// vended credentials, endpoint, region) exactly as iceberg-rust reads the table with them.
pub fn storage_properties(
    table: &Table,
    catalog_props: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut props = catalog_props.clone();
    props.extend(
        table
            .file_io()
            .config()
            .props()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    props
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `AmazonS3` for `bucket` from iceberg's `s3.*` FileIO properties.
pub fn s3_store(bucket: &str, props: &BTreeMap<String, String>) -> Result<AmazonS3, String> {
    let get = |k: &str| props.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let truthy = |k: &str| get(k).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let region = get("s3.region")
        .or_else(|| get("client.region"))
        .unwrap_or("us-east-1");
    // iceberg (like the AWS SDKs) defaults to virtual-hosted style; local servers need path style.
    let path_style = truthy("s3.path-style-access");
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(region)
        .with_virtual_hosted_style_request(!path_style);
    if let Some(ep) = get("s3.endpoint") {
        let url = url::Url::parse(ep).map_err(|e| format!("s3.endpoint '{ep}': {e}"))?;
        let host = url.host_str().unwrap_or_default().to_string();
        if url.scheme() == "http" {
            if !is_loopback(&host) {
                tracing::warn!(endpoint = ep, "plain http to a non-loopback S3 endpoint");
            }
            b = b.with_allow_http(true);
        }
        let endpoint = if path_style {
            ep.trim_end_matches('/').to_string()
        } else {
            // object_store wants the bucket in a virtual-hosted endpoint; iceberg prefixes it.
            let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{bucket}.{host}{port}", url.scheme())
        };
        b = b.with_endpoint(endpoint);
    }
    if let (Some(id), Some(secret)) = (get("s3.access-key-id"), get("s3.secret-access-key")) {
        b = b.with_access_key_id(id).with_secret_access_key(secret);
        if let Some(token) = get("s3.session-token") {
            b = b.with_token(token);
        }
    }
    if truthy("s3.allow-anonymous") {
        b = b.with_skip_signature(true);
    }
    b.build().map_err(|e| e.to_string())
}

/// Walks `root` on a blocking thread and streams the regular files under it.
fn list_local(root: &ObjectUri) -> BoxStream<'static, Result<Listed, OrphansError>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Listed, OrphansError>>(1024);
    let dir = PathBuf::from(format!("/{}", root.key));
    let uri = root.uri();
    tokio::task::spawn_blocking(move || {
        let fail = |message: String| {
            Err(OrphansError::Listing {
                location: uri.clone(),
                message,
                retryable: false,
            })
        };
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            let entries = match std::fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    let _ = tx.blocking_send(fail(format!("{}: {e}", d.display())));
                    return;
                }
            };
            for entry in entries {
                let item = entry.and_then(|e| {
                    let ft = e.file_type()?;
                    let meta = if ft.is_file() {
                        Some(e.metadata()?)
                    } else {
                        None
                    };
                    Ok((e.path(), ft, meta))
                });
                let (path, ft, meta) = match item {
                    Ok(x) => x,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        let _ = tx.blocking_send(fail(format!("{}: {e}", d.display())));
                        return;
                    }
                };
                if ft.is_dir() {
                    stack.push(path);
                    continue;
                }
                // Symbolic links (and sockets, fifos) are neither followed nor deleted.
                let Some(meta) = meta else { continue };
                let Some(p) = path.to_str() else {
                    // Not UTF-8: no Iceberg location can name it; leave it alone.
                    tracing::warn!(path = %path.display(), "skipping a file name that is not UTF-8");
                    continue;
                };
                let modified_ms = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as i64)
                    // Unknown age: treat as brand new, i.e. never old enough to delete.
                    .unwrap_or(i64::MAX);
                let listed = Listed {
                    uri: ObjectUri {
                        scheme: Scheme::File,
                        authority: String::new(),
                        key: p.trim_start_matches('/').to_string(),
                    },
                    size: meta.len(),
                    modified_ms,
                };
                if tx.blocking_send(Ok(listed)).is_err() {
                    return;
                }
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) }).boxed()
}

/// Deletes local files named by `file:///` URIs.
#[derive(Debug)]
struct LocalRemover;

fn local_path(uri: &str) -> Result<PathBuf, RemoveError> {
    match ObjectUri::parse(uri) {
        Some(u) if u.scheme == Scheme::File && u.authority.is_empty() => {
            Ok(PathBuf::from(format!("/{}", u.key)))
        }
        _ => Err(RemoveError {
            message: format!("not a local file: {uri}"),
            retryable: false,
        }),
    }
}

#[async_trait::async_trait]
impl Remover for LocalRemover {
    async fn size(&self, path: &str) -> Result<Option<u64>, RemoveError> {
        match tokio::fs::symlink_metadata(local_path(path)?).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RemoveError {
                message: e.to_string(),
                retryable: true,
            }),
        }
    }

    async fn remove(&self, path: &str) -> Result<Removed, RemoveError> {
        match tokio::fs::remove_file(local_path(path)?).await {
            Ok(()) => Ok(Removed::Deleted),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Removed::AlreadyGone),
            Err(e) => Err(RemoveError {
                message: format!("{path}: {e}"),
                retryable: e.kind() != std::io::ErrorKind::PermissionDenied,
            }),
        }
    }
}

/// Deletes objects named by `s3://bucket/key` URIs from one bucket.
#[derive(Debug)]
struct S3Remover {
    store: Arc<AmazonS3>,
}

impl S3Remover {
    fn key(uri: &str) -> Result<StorePath, RemoveError> {
        let bad = |m: String| RemoveError {
            message: m,
            retryable: false,
        };
        let u = ObjectUri::parse(uri).ok_or_else(|| bad(format!("not an s3 location: {uri}")))?;
        StorePath::parse(&u.key).map_err(|e| bad(format!("{uri}: {e}")))
    }
}

#[async_trait::async_trait]
impl Remover for S3Remover {
    async fn size(&self, path: &str) -> Result<Option<u64>, RemoveError> {
        match self.store.head(&Self::key(path)?).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(RemoveError {
                message: e.to_string(),
                retryable: true,
            }),
        }
    }

    async fn remove(&self, path: &str) -> Result<Removed, RemoveError> {
        match self.store.delete(&Self::key(path)?).await {
            Ok(()) => Ok(Removed::Deleted),
            Err(object_store::Error::NotFound { .. }) => Ok(Removed::AlreadyGone),
            Err(e) => Err(RemoveError {
                message: format!("{path}: {e}"),
                retryable: true,
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The job
// ---------------------------------------------------------------------------------------------

/// Finds (and unless `dry_run` deletes) the orphan files of `name`; `fence` proves the job's
/// lease before each deletion.
pub async fn remove_orphans(
    catalog: &CatalogHandle,
    name: &str,
    opts: &OrphanOptions,
    metrics: &Metrics,
    fence: &Fence,
) -> Result<OrphanReport, OrphansError> {
    if opts.older_than < MIN_OLDER_THAN && !opts.force {
        return Err(OrphansError::TooRecent(human_duration(opts.older_than)));
    }
    let run = OrphanRun {
        name,
        opts,
        metrics,
        fence,
    };
    let table = catalog.load(name).await?;
    let gc = table
        .metadata()
        .properties()
        .get("gc.enabled")
        .is_none_or(|v| !v.eq_ignore_ascii_case("false"));
    if !gc {
        return Err(OrphansError::GcDisabled(name.to_string()));
    }
    let location = table_location(&table)?;
    let props = storage_properties(&table, &catalog.config.properties);
    let storage = Storage::for_location(&location, &props)?;
    let cutoff_ms = chrono::Utc::now().timestamp_millis()
        - i64::try_from(opts.older_than.as_millis()).unwrap_or(i64::MAX / 2);

    let mut refs = Referenced::default();
    let mut walked = Walked::default();
    walk_references(&table, &mut refs, &mut walked).await?;
    let mut report = OrphanReport {
        table: name.to_string(),
        location: location.uri(),
        dry_run: opts.dry_run,
        older_than_seconds: opts.older_than.as_secs(),
        cutoff_ms,
        ..Default::default()
    };
    let mut candidates = list_candidates(&storage, &location, &refs, &mut report).await?;

    // A commit that landed while we listed may reference files that looked orphaned.
    if !candidates.is_empty() {
        let fresh = catalog.load(name).await?;
        if fresh.metadata_location() != table.metadata_location() {
            walk_references(&fresh, &mut refs, &mut walked).await?;
            let before = candidates.len();
            candidates.retain(|(u, _)| refs.lookup(u) == Match::Unreferenced);
            report.committed_meanwhile = (before - candidates.len()) as u64;
        }
    }
    run.record_found(&mut report, &refs, &candidates);
    if opts.dry_run {
        let mut paths: Vec<String> = candidates.iter().map(|(u, _)| u.uri()).collect();
        paths.sort();
        paths.truncate(MAX_LISTED_PATHS);
        report.orphan_paths = paths;
        return Ok(report);
    }
    run.delete(&storage, candidates, &mut report).await;
    Ok(report)
}

/// The table's location, which must be a supported storage location with a non-empty path.
fn table_location(table: &Table) -> Result<ObjectUri, OrphansError> {
    let location_str = table
        .metadata()
        .location()
        .trim_end_matches('/')
        .to_string();
    ObjectUri::parse(&location_str)
        .filter(|l| !l.key.is_empty())
        .ok_or(OrphansError::UnsupportedLocation(location_str))
}

/// Lists everything under `location` and returns the unreferenced files older than the report's
/// cutoff, with their sizes; counts the listed, hidden and too-new files in `report`. A file
/// referenced under another scheme or authority fails the whole run.
async fn list_candidates(
    storage: &Storage,
    location: &ObjectUri,
    refs: &Referenced,
    report: &mut OrphanReport,
) -> Result<Vec<(ObjectUri, u64)>, OrphansError> {
    let dir_prefix = format!("{}/", location.key);
    let mut mismatches = 0u64;
    let mut example = None;
    let mut candidates: Vec<(ObjectUri, u64)> = Vec::new();
    let mut listing = storage.list(location);
    while let Some(item) = listing.next().await {
        let item = item?;
        report.files_listed += 1;
        // Paranoia: object stores list by string prefix; a sibling `t2` must never be touched.
        let Some(relative) = item.uri.key.strip_prefix(&dir_prefix) else {
            continue;
        };
        if is_hidden(relative) {
            report.hidden_skipped += 1;
            continue;
        }
        match refs.lookup(&item.uri) {
            Match::Referenced => {}
            Match::Mismatch(referenced) => {
                mismatches += 1;
                example.get_or_insert((item.uri.uri(), referenced));
            }
            Match::Unreferenced if item.modified_ms < report.cutoff_ms => {
                candidates.push((item.uri, item.size))
            }
            Match::Unreferenced => report.too_new += 1,
        }
    }
    drop(listing);
    if let Some((listed, referenced)) = example {
        return Err(OrphansError::PrefixMismatch {
            count: mismatches,
            listed,
            referenced,
        });
    }
    Ok(candidates)
}

/// The inputs of one [`remove_orphans`] run that its phases share.
struct OrphanRun<'a> {
    name: &'a str,
    opts: &'a OrphanOptions,
    metrics: &'a Metrics,
    fence: &'a Fence,
}

impl OrphanRun<'_> {
    /// Records what was found (the orphans in `candidates`, the references in `refs`) in
    /// `report`, the metrics and the log.
    fn record_found(
        &self,
        report: &mut OrphanReport,
        refs: &Referenced,
        candidates: &[(ObjectUri, u64)],
    ) {
        report.referenced_files = refs.len() as u64;
        report.orphan_files_found = candidates.len() as u64;
        report.orphan_bytes = candidates.iter().map(|(_, s)| s).sum();
        self.metrics
            .orphan_files_found_total
            .with_label_values(&[self.name])
            .inc_by(report.orphan_files_found);
        tracing::info!(
            table = self.name,
            listed = report.files_listed,
            orphans = report.orphan_files_found,
            too_new = report.too_new,
            dry_run = self.opts.dry_run,
            "orphan files found"
        );
    }

    /// Deletes the orphans in `candidates` from `storage` and records the outcome in `report`.
    async fn delete(
        &self,
        storage: &Storage,
        candidates: Vec<(ObjectUri, u64)>,
        report: &mut OrphanReport,
    ) {
        let files: Vec<FileRef> = candidates
            .into_iter()
            .map(|(u, size)| FileRef {
                path: u.uri(),
                kind: FileKind::Orphan,
                size: Some(size),
            })
            .collect();
        let deleted = files::delete_and_publish(
            files::FencedRemover::wrap(storage.remover(), self.fence),
            files,
            self.opts.max_concurrent_deletes,
            self.metrics,
        )
        .await;
        report.files_deleted = deleted.files();
        report.bytes_deleted = deleted.bytes();
        report.already_gone = deleted.already_gone;
        report.delete_failures = deleted.failed;
        report.delete_errors = deleted.failures;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> ObjectUri {
        ObjectUri::parse(s).unwrap()
    }

    #[test]
    fn locations_parse_and_normalize() {
        let a = uri("s3a://lake/wh/db/t/data/x.parquet");
        assert_eq!(a, uri("s3://lake/wh/db/t/data/x.parquet"));
        assert_eq!(a, uri("s3n://lake/wh/db/t/data/x.parquet"));
        assert_eq!(a.key, "wh/db/t/data/x.parquet");
        assert_eq!(a.uri(), "s3://lake/wh/db/t/data/x.parquet");
        let f = uri("file:/tmp/wh/t/x");
        assert_eq!(f, uri("file:///tmp/wh/t/x"));
        assert_eq!(f, uri("/tmp/wh//t/x"));
        assert_eq!(f, uri("file://localhost/tmp/wh/t/x"));
        assert_eq!(f.uri(), "file:///tmp/wh/t/x");
        assert_eq!(uri("file://nas/tmp/x").authority, "nas");
        assert!(ObjectUri::parse("gs://b/x").is_none());
        assert!(ObjectUri::parse("s3:///x").is_none());
        assert!(ObjectUri::parse("relative/x").is_none());
    }

    #[test]
    fn hidden_paths() {
        assert!(is_hidden("data/.x.parquet.crc"));
        assert!(is_hidden("_SUCCESS"));
        assert!(is_hidden("data/_tmp/x.parquet"));
        assert!(!is_hidden("data/_org=3/x.parquet"));
        assert!(!is_hidden("data/org_id=3/x.parquet"));
        assert!(!is_hidden("metadata/00001-a.metadata.json"));
    }

    #[test]
    fn references_match_by_path_then_origin() {
        let mut r = Referenced::default();
        r.add("s3a://lake/wh/t/data/a").unwrap();
        r.add("file:/tmp/wh/t/data/b").unwrap();
        r.add("gs://other/x").unwrap();
        assert_eq!(r.foreign, 1);
        assert_eq!(r.lookup(&uri("s3://lake/wh/t/data/a")), Match::Referenced);
        assert_eq!(r.lookup(&uri("file:///tmp/wh/t/data/b")), Match::Referenced);
        assert_eq!(r.lookup(&uri("s3://lake/wh/t/data/c")), Match::Unreferenced);
        // Same path in another bucket: an error, not a deletion.
        assert_eq!(
            r.lookup(&uri("s3://elsewhere/wh/t/data/a")),
            Match::Mismatch("s3://lake/wh/t/data/a".into())
        );
        // Same path under another scheme.
        assert_eq!(
            r.lookup(&uri("s3://lake/tmp/wh/t/data/b")),
            Match::Mismatch("file:///tmp/wh/t/data/b".into())
        );
    }

    #[test]
    fn hashed_references_find_every_referenced_path() {
        let mut r = Referenced::default();
        let path = |i: u32| format!("s3://lake/wh/t/data/p={}/f-{i:06}.parquet", i % 100);
        for i in (0..20_000).step_by(2) {
            r.add(&path(i)).unwrap();
        }
        assert_eq!(r.len(), 10_000);
        for i in 0..20_000 {
            let expected = if i % 2 == 0 {
                Match::Referenced
            } else {
                Match::Unreferenced
            };
            assert_eq!(r.lookup(&uri(&path(i))), expected, "{}", path(i));
        }
    }

    #[tokio::test]
    async fn local_listing_keeps_names_verbatim_and_skips_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        let part = root.join("data/name=a%2Fb c+d");
        std::fs::create_dir_all(&part).unwrap();
        std::fs::write(part.join("f%20.parquet"), b"x").unwrap();
        std::fs::write(root.join("data/plain.parquet"), b"yy").unwrap();
        std::os::unix::fs::symlink(root.join("data/plain.parquet"), root.join("link")).unwrap();
        // A linked directory outside the table: not followed, so its files are never listed.
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("precious.parquet"), b"z").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("data/linked")).unwrap();
        let loc = uri(&format!("file://{}", root.display()));
        let mut got: Vec<(String, u64)> = Storage::Local
            .list(&loc)
            .map(|r| r.map(|l| (l.uri.uri(), l.size)))
            .try_collect()
            .await
            .unwrap();
        got.sort();
        let base = format!("file://{}", root.display());
        assert_eq!(
            got,
            [
                (format!("{base}/data/name=a%2Fb c+d/f%20.parquet"), 1),
                (format!("{base}/data/plain.parquet"), 2),
            ]
        );
        // Deleting goes to the same file, and a second delete is "already gone".
        let rm = Storage::Local.remover();
        let p = &got[0].0;
        assert_eq!(rm.remove(p).await.unwrap(), Removed::Deleted);
        assert!(!part.join("f%20.parquet").exists());
        assert_eq!(rm.remove(p).await.unwrap(), Removed::AlreadyGone);
        // A missing root lists nothing.
        let none: Vec<_> = Storage::Local
            .list(&uri(&format!("file://{}/nope", dir.path().display())))
            .collect()
            .await;
        assert!(none.is_empty());
    }

    #[test]
    fn s3_store_from_iceberg_properties() {
        let props: BTreeMap<String, String> = [
            ("s3.endpoint", "http://127.0.0.1:9000"),
            ("s3.access-key-id", "AK"),
            ("s3.secret-access-key", "SK"),
            ("s3.path-style-access", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert!(s3_store("lake", &props).is_ok());
        let mut bad = props.clone();
        bad.insert("s3.endpoint".into(), "not a url".into());
        assert!(s3_store("lake", &bad).unwrap_err().contains("s3.endpoint"));
        assert!(is_loopback("127.0.0.1") && is_loopback("[::1]") && is_loopback("localhost"));
        assert!(!is_loopback("minio.internal"));
    }
}
