//! `icemaint bench expire`: snapshot expiry of a table with a long history, on synthetic metadata
//! like [`super::plan`]. A base commit of [`BASE_FILES`] entries (column metrics like Spark's),
//! then `snapshots` overwrite snapshots, each listing the base manifest and one manifest of its
//! own data file (an empty file that exists, so its deletion is real); the current snapshot is the
//! last one. Then [`crate::maintenance::expire::expire_table`] (older than now, retain the last 1)
//! is timed in a fresh child process, which checks the result: one snapshot left, every expired
//! snapshot's own data file, manifest and manifest list deleted, the base manifest and the last
//! snapshot's files kept.
//!
//! Ten thousand catalog commits would each rewrite a growing `metadata.json` (quadratic in the
//! snapshots), so the setup writes the manifests and manifest lists itself and adds the snapshots
//! in batches of [`SNAPSHOTS_PER_COMMIT`] per catalog commit.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use iceberg::TableUpdate;
use iceberg::spec::{
    FormatVersion, ManifestFile, ManifestListWriter, ManifestWriterBuilder, Operation, Snapshot,
    SnapshotReference, SnapshotRetention, Summary,
};
use iceberg::table::Table;
use serde::{Deserialize, Serialize};

use super::{
    Synthetic, Usage, create_synthetic_table, proc_status_mib, round2, synthetic_catalog,
    synthetic_file,
};
use crate::catalog::CatalogHandle;
use crate::fence::Fence;
use crate::maintenance::expire::{ExpireOptions, expire_table};
use crate::maintenance::files::FileKind;
use crate::policy::DEFAULT_MAX_CONCURRENT_DELETES;
use crate::telemetry::Metrics;

const TABLE: &str = "bench.expire";
/// Entries of the base manifest every snapshot lists (never deleted).
pub const BASE_FILES: usize = 100;
const PARTITIONS: usize = 10;
/// Snapshots added per catalog commit during the setup.
pub const SNAPSHOTS_PER_COMMIT: usize = 1_000;
/// Snapshot ids of the synthetic history: this plus the snapshot's number (from 1).
const FIRST_ID: i64 = 1 << 40;

/// Options of `icemaint bench expire` (its command-line arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct ExpireBenchOptions {
    /// Snapshots after the base commit, each with its own data file and manifest (the base
    /// snapshot expires too).
    #[arg(long, default_value_t = 10_000)]
    pub snapshots: usize,
    #[command(flatten)]
    pub dir: super::BenchDir,
}

/// What `icemaint bench expire` measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExpireBenchReport {
    pub snapshots: usize,
    pub setup_s: Option<f64>,
    pub expire_s: f64,
    pub cpu_s: f64,
    pub peak_rss_mib: Option<f64>,
    pub snapshots_expired: usize,
    pub snapshots_after: usize,
    pub files_deleted: u64,
    pub data_files_deleted: u64,
    pub manifests_deleted: u64,
    pub manifest_lists_deleted: u64,
}

/// `icemaint bench expire`: see the module documentation.
pub async fn expire(opts: &ExpireBenchOptions) -> anyhow::Result<ExpireBenchReport> {
    if opts.snapshots == 0 {
        bail!("--snapshots must be positive");
    }
    let work = opts.dir.open("expire")?;
    if opts.dir.run_only {
        time_expire(work.path(), opts).await
    } else {
        expire_in(work.path(), opts).await
    }
}

async fn expire_in(dir: &Path, opts: &ExpireBenchOptions) -> anyhow::Result<ExpireBenchReport> {
    let catalog = synthetic_catalog(dir, None).await?;
    let started = Instant::now();
    let base = Synthetic {
        name: TABLE,
        files: BASE_FILES,
        partitions: PARTITIONS,
        commits: 1,
        metrics: true,
    };
    let setup_s = match create_synthetic_table(&catalog, &base, |_| Ok(())).await? {
        Some(location) => {
            add_history(&catalog, &location, opts.snapshots).await?;
            Some(round2(started.elapsed().as_secs_f64()))
        }
        None => None,
    };
    drop(catalog);
    let args = ["--snapshots".to_string(), opts.snapshots.to_string()];
    let mut report: ExpireBenchReport = super::run_child("expire", dir, &args, &[]).await?;
    report.setup_s = setup_s;
    Ok(report)
}

/// The local path of a `file://` location.
fn local_path(location: &str) -> PathBuf {
    PathBuf::from(location.strip_prefix("file://").unwrap_or(location))
}

/// The data file of history snapshot `n` (from 1).
fn history_file(location: &str, spec_id: i32, n: usize) -> anyhow::Result<iceberg::spec::DataFile> {
    synthetic_file(location, spec_id, BASE_FILES + n, PARTITIONS, true)
}

/// Adds `snapshots` overwrite snapshots on top of the base snapshot, [`SNAPSHOTS_PER_COMMIT`] per
/// catalog commit; `main` moves to each in turn, so the snapshot log holds all of them.
async fn add_history(
    catalog: &CatalogHandle,
    location: &str,
    snapshots: usize,
) -> anyhow::Result<()> {
    let backend = catalog.committer().await?;
    let mut table = catalog.load(TABLE).await?;
    let base = table
        .metadata()
        .current_snapshot()
        .context("no base snapshot")?;
    let base_manifests = table.manifest_list_reader(base).load().await?;
    let base_manifest: ManifestFile = base_manifests
        .entries()
        .first()
        .context("the base snapshot has no manifest")?
        .clone();
    let mut parent = base.snapshot_id();
    let mut n = 1;
    while n <= snapshots {
        let end = (n + SNAPSHOTS_PER_COMMIT - 1).min(snapshots);
        let mut updates = Vec::new();
        for k in n..=end {
            let snapshot = history_snapshot(&table, location, &base_manifest, parent, k).await?;
            parent = snapshot.snapshot_id();
            updates.push(TableUpdate::AddSnapshot { snapshot });
            updates.push(TableUpdate::SetSnapshotRef {
                ref_name: "main".to_string(),
                reference: SnapshotReference::new(
                    parent,
                    SnapshotRetention::branch(None, None, None),
                ),
            });
        }
        table = backend
            .commit(&table, vec![], updates)
            .await
            .context("committing the synthetic history")?;
        n = end + 1;
    }
    Ok(())
}

/// Writes history snapshot `n`'s data file (empty), manifest and manifest list; returns the
/// snapshot, child of `parent`, with sequence number one more than the table's last.
async fn history_snapshot(
    table: &Table,
    location: &str,
    base_manifest: &ManifestFile,
    parent: i64,
    n: usize,
) -> anyhow::Result<Snapshot> {
    let md = table.metadata();
    ensure!(
        md.format_version() == FormatVersion::V2,
        "the synthetic table is v2"
    );
    let io = table.file_io();
    let id = FIRST_ID + n as i64;
    // Sequence numbers follow the base snapshot's (1) in order.
    let seq = 1 + n as i64;
    let file = history_file(location, md.default_partition_spec_id(), n)?;
    let path = local_path(file.file_path());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let metadata = format!("{location}/metadata");
    let output = io.new_output(format!("{metadata}/bench-expire-m{n}.avro"))?;
    let mut writer = ManifestWriterBuilder::new(
        output,
        Some(id),
        md.current_schema().clone(),
        md.default_partition_spec().as_ref().clone(),
    )
    .build_v2_data();
    writer.add_file(file, seq)?;
    let manifest = writer.write_manifest_file().await?;
    let list_path = format!("{metadata}/snap-{id}-bench-expire.avro");
    let mut list = ManifestListWriter::v2(
        io.new_output(&list_path)?.writer().await?,
        id,
        Some(parent),
        seq,
    );
    list.add_manifests([base_manifest.clone(), manifest].into_iter())?;
    list.close().await?;
    // Never behind the table's clock (the metadata builder refuses a snapshot over a minute
    // older than the last); in the past by the time the child runs.
    let timestamp_ms = chrono::Utc::now()
        .timestamp_millis()
        .max(md.last_updated_ms());
    Ok(Snapshot::builder()
        .with_snapshot_id(id)
        .with_parent_snapshot_id(Some(parent))
        .with_sequence_number(seq)
        .with_timestamp_ms(timestamp_ms)
        .with_manifest_list(list_path)
        .with_summary(Summary {
            operation: Operation::Overwrite,
            additional_properties: Default::default(),
        })
        .with_schema_id(md.current_schema_id())
        .build())
}

async fn time_expire(dir: &Path, opts: &ExpireBenchOptions) -> anyhow::Result<ExpireBenchReport> {
    let catalog = synthetic_catalog(dir, None).await?;
    let metrics = Metrics::new();
    let options = ExpireOptions {
        older_than: Some(Duration::ZERO),
        retain_last: Some(1),
        max_concurrent_deletes: DEFAULT_MAX_CONCURRENT_DELETES,
        dry_run: false,
    };
    let usage0 = Usage::now();
    let started = Instant::now();
    let r = expire_table(&catalog, TABLE, &options, &metrics, &Fence::none()).await?;
    let expire_s = started.elapsed().as_secs_f64();
    let (user, sys) = Usage::now().cpu_since(&usage0);
    let peak_rss_mib = proc_status_mib("VmHWM:");
    let deleted = |kind| r.deleted.get(&kind).map_or(0, |t| t.files);
    let report = ExpireBenchReport {
        snapshots: opts.snapshots,
        setup_s: None,
        expire_s: round2(expire_s),
        cpu_s: round2(user + sys),
        peak_rss_mib,
        snapshots_expired: r.snapshots_expired,
        snapshots_after: r.snapshots_after,
        files_deleted: r.files_deleted,
        data_files_deleted: deleted(FileKind::Data),
        manifests_deleted: deleted(FileKind::Manifest),
        manifest_lists_deleted: deleted(FileKind::ManifestList),
    };
    verify(&catalog, opts.snapshots, &report).await?;
    Ok(report)
}

/// Checks the expiry: one snapshot left (the last), every other snapshot's own files gone (the
/// base snapshot's manifest list too), the base manifest and the last snapshot's files kept.
async fn verify(
    catalog: &CatalogHandle,
    snapshots: usize,
    r: &ExpireBenchReport,
) -> anyhow::Result<()> {
    let table = catalog.load(TABLE).await?;
    let md = table.metadata();
    let left: Vec<i64> = md.snapshots().map(|s| s.snapshot_id()).collect();
    ensure!(
        left == [FIRST_ID + snapshots as i64],
        "expected only the last snapshot left, found {} snapshots",
        left.len()
    );
    let expected = (snapshots - 1) as u64;
    ensure!(
        r.snapshots_expired == snapshots
            && r.data_files_deleted == expected
            && r.manifests_deleted == expected
            && r.manifest_lists_deleted == expected + 1,
        "unexpected deletions: {r:?}"
    );
    let location = md.location().trim_end_matches('/');
    let spec_id = md.default_partition_spec_id();
    for n in 1..=snapshots {
        let path = local_path(history_file(location, spec_id, n)?.file_path());
        ensure!(
            path.exists() == (n == snapshots),
            "data file of snapshot {n}: exists = {}",
            path.exists()
        );
    }
    let current = md.current_snapshot().context("no current snapshot")?;
    let list = table.manifest_list_reader(current).load().await?;
    for m in list.entries() {
        let path = local_path(&m.manifest_path);
        ensure!(
            path.exists(),
            "a live manifest was deleted: {}",
            path.display()
        );
    }
    Ok(())
}
