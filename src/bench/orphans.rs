//! `icemaint bench remove-orphans`: orphan-file removal over a table location holding many
//! objects, with synthetic metadata like [`super::plan`].
//!
//! Creates a SQL-catalog table whose manifests reference `objects - orphans` synthetic data files
//! (with column metrics like Spark's, which make manifests heavy), writes every one of them and `orphans`
//! unreferenced ones as empty files straight into the storage's directory (the orphans dated two
//! days back), then times [`remove_orphans`] (older than one day, deleting) in a fresh child
//! process, so its peak RSS (`VmHWM`) is the removal's alone.
//!
//! Local by default (`file://` warehouse). With `--s3-endpoint` and `--s3-data-dir` the warehouse
//! is `s3://BUCKET/warehouse` on an S3 server that serves that directory with one top-level
//! directory per bucket (s3s-fs), and the objects are written into the directory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use super::{Synthetic, Usage, create_synthetic_table, proc_status_mib, round2, synthetic_catalog};
use crate::fence::Fence;
use crate::maintenance::orphans::{OrphanOptions, remove_orphans};
use crate::telemetry::Metrics;

const TABLE: &str = "bench.orphans";
/// The S3 credentials reach the child process through the environment, not its arguments.
pub const S3_ACCESS_KEY_ENV: &str = "ICEMAINT_BENCH_S3_ACCESS_KEY";
pub const S3_SECRET_KEY_ENV: &str = "ICEMAINT_BENCH_S3_SECRET_KEY";

/// An S3 server serving a local directory (one top-level directory per bucket).
#[derive(Debug, Clone)]
pub struct S3Dir {
    pub endpoint: String,
    pub data_dir: PathBuf,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
}

/// Options of `icemaint bench remove-orphans`.
#[derive(Debug, Clone)]
pub struct OrphansOptions {
    /// Objects under the table's data directory, orphans included.
    pub objects: usize,
    pub orphans: usize,
    pub partitions: usize,
    pub commits: usize,
    pub dir: super::BenchDir,
    pub s3: Option<S3Dir>,
}

/// What `icemaint bench remove-orphans` measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct OrphansReport {
    pub storage: String,
    pub objects: usize,
    pub partitions: usize,
    pub commits: usize,
    /// Seconds to create the table and the objects (not part of the target).
    pub setup_s: Option<f64>,
    pub remove_s: f64,
    pub cpu_s: f64,
    pub peak_rss_mib: Option<f64>,
    pub files_listed: u64,
    pub referenced_files: u64,
    pub orphan_files_found: u64,
    pub files_deleted: u64,
}

/// `icemaint bench remove-orphans`: see the module documentation.
pub async fn orphans(opts: &OrphansOptions) -> anyhow::Result<OrphansReport> {
    if opts.objects == 0 || opts.partitions == 0 || opts.commits == 0 {
        bail!("--objects, --partitions and --commits must be positive");
    }
    if opts.orphans >= opts.objects {
        bail!("--orphans must be below --objects");
    }
    let work = opts.dir.open("orphans")?;
    if opts.dir.run_only {
        time_removal(work.path(), opts).await
    } else {
        orphans_in(work.path(), opts).await
    }
}

async fn orphans_in(dir: &Path, opts: &OrphansOptions) -> anyhow::Result<OrphansReport> {
    let setup_s = create_table(dir, opts).await?;
    let mut args: Vec<String> = [
        ("--objects", opts.objects),
        ("--orphans", opts.orphans),
        ("--partitions", opts.partitions),
        ("--commits", opts.commits),
    ]
    .iter()
    .flat_map(|(k, v)| [k.to_string(), v.to_string()])
    .collect();
    let mut envs = Vec::new();
    if let Some(s3) = &opts.s3 {
        args.extend([
            "--s3-endpoint".to_string(),
            s3.endpoint.clone(),
            "--s3-data-dir".to_string(),
            s3.data_dir.display().to_string(),
            "--s3-bucket".to_string(),
            s3.bucket.clone(),
        ]);
        envs.push((S3_ACCESS_KEY_ENV, s3.access_key.clone()));
        envs.push((S3_SECRET_KEY_ENV, s3.secret_key.clone()));
    }
    let mut report: OrphansReport = super::run_child("remove-orphans", dir, &args, &envs).await?;
    report.setup_s = setup_s;
    Ok(report)
}

/// Where an object of the table lives on this machine's disk.
fn local_path(location: &str, s3: Option<&S3Dir>) -> anyhow::Result<PathBuf> {
    match s3 {
        None => location
            .strip_prefix("file://")
            .map(PathBuf::from)
            .with_context(|| format!("{location} is not a file:// location")),
        Some(s3) => {
            let key = location
                .strip_prefix(&format!("s3://{}/", s3.bucket))
                .with_context(|| format!("{location} is not in bucket {}", s3.bucket))?;
            Ok(s3.data_dir.join(&s3.bucket).join(key))
        }
    }
}

/// Creates the table and its objects unless the table exists already; returns the seconds
/// spent, `None` when reused.
async fn create_table(dir: &Path, opts: &OrphansOptions) -> anyhow::Result<Option<f64>> {
    if let Some(s3) = &opts.s3 {
        std::fs::create_dir_all(s3.data_dir.join(&s3.bucket))?;
    }
    let catalog = synthetic_catalog(dir, opts.s3.as_ref()).await?;
    let started = Instant::now();
    let table = Synthetic {
        name: TABLE,
        files: opts.objects - opts.orphans,
        partitions: opts.partitions,
        commits: opts.commits,
        metrics: true,
    };
    let s3 = opts.s3.as_ref();
    let Some(location) = create_synthetic_table(&catalog, &table, |f| {
        touch(&local_path(f.file_path(), s3)?, None)
    })
    .await?
    else {
        return Ok(None);
    };
    let old = SystemTime::now() - Duration::from_secs(2 * 86_400);
    for i in 0..opts.orphans {
        let p = i % opts.partitions;
        let path = format!(
            "{location}/data/org_id={}/ts_day={}/orphan-{i:08}.parquet",
            p / 10,
            super::DAY0 + (p % 10) as i32
        );
        touch(&local_path(&path, s3)?, Some(old))?;
    }
    Ok(Some(round2(started.elapsed().as_secs_f64())))
}

/// Creates an empty file (and its directory), dated `modified` when given.
fn touch(path: &Path, modified: Option<SystemTime>) -> anyhow::Result<()> {
    let create = || File::create(path);
    let file = match create() {
        Ok(f) => f,
        Err(_) => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            create().with_context(|| format!("creating {}", path.display()))?
        }
    };
    if let Some(t) = modified {
        file.set_modified(t)
            .with_context(|| format!("dating {}", path.display()))?;
    }
    Ok(())
}

async fn time_removal(dir: &Path, opts: &OrphansOptions) -> anyhow::Result<OrphansReport> {
    let catalog = synthetic_catalog(dir, opts.s3.as_ref()).await?;
    let metrics = Metrics::new();
    let usage0 = Usage::now();
    let started = Instant::now();
    let options = OrphanOptions {
        older_than: Duration::from_secs(86_400),
        ..OrphanOptions::default()
    };
    let r = remove_orphans(&catalog, TABLE, &options, &metrics, &Fence::none()).await?;
    let remove_s = started.elapsed().as_secs_f64();
    let (user, sys) = Usage::now().cpu_since(&usage0);
    if r.orphan_files_found != opts.orphans as u64 || r.files_deleted != opts.orphans as u64 {
        bail!(
            "found {} orphans and deleted {}, {} were planted",
            r.orphan_files_found,
            r.files_deleted,
            opts.orphans
        );
    }
    Ok(OrphansReport {
        storage: if opts.s3.is_some() { "s3" } else { "local" }.to_string(),
        objects: opts.objects,
        partitions: opts.partitions,
        commits: opts.commits,
        setup_s: None,
        remove_s: round2(remove_s),
        cpu_s: round2(user + sys),
        peak_rss_mib: proc_status_mib("VmHWM:"),
        files_listed: r.files_listed,
        referenced_files: r.referenced_files,
        orphan_files_found: r.orphan_files_found,
        files_deleted: r.files_deleted,
    })
}
