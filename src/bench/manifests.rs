//! `icemaint bench rewrite-manifests`: the manifest rewrite of a table with many entries, with
//! synthetic metadata like [`super::plan`]: `entries` data files (column metrics like Spark's)
//! fast-appended in `commits` commits, one manifest each, then
//! [`crate::maintenance::manifests::rewrite_manifests`] into 8 MiB manifests, timed in a fresh
//! child process so its peak RSS (`VmHWM`) is the rewrite's alone.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use super::{Synthetic, Usage, create_synthetic_table, proc_status_mib, round2, synthetic_catalog};
use crate::fence::Fence;
use crate::maintenance::manifests::{ManifestSettings, rewrite_manifests};

const TABLE: &str = "bench.manifests";

/// Options of `icemaint bench rewrite-manifests` (its command-line arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct ManifestsOptions {
    #[arg(long, default_value_t = 1_000_000)]
    pub entries: usize,
    #[arg(long, default_value_t = 1_000)]
    pub partitions: usize,
    /// Fast-append commits (one manifest each) holding the entries.
    #[arg(long, default_value_t = 100)]
    pub commits: usize,
    #[command(flatten)]
    pub dir: super::BenchDir,
}

/// What `icemaint bench rewrite-manifests` measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct ManifestsReport {
    pub entries: usize,
    pub partitions: usize,
    pub commits: usize,
    pub setup_s: Option<f64>,
    pub rewrite_s: f64,
    pub cpu_s: f64,
    pub peak_rss_mib: Option<f64>,
    pub manifests_replaced: usize,
    pub manifests_created: usize,
}

/// `icemaint bench rewrite-manifests`: see the module documentation.
pub async fn manifests(opts: &ManifestsOptions) -> anyhow::Result<ManifestsReport> {
    if opts.entries == 0 || opts.partitions == 0 || opts.commits < 2 {
        bail!("--entries and --partitions must be positive and --commits at least 2");
    }
    let work = opts.dir.open("manifests")?;
    if opts.dir.run_only {
        time_rewrite(work.path(), opts).await
    } else {
        manifests_in(work.path(), opts).await
    }
}

fn synthetic(opts: &ManifestsOptions) -> Synthetic<'static> {
    Synthetic {
        name: TABLE,
        files: opts.entries,
        partitions: opts.partitions,
        commits: opts.commits,
        metrics: true,
    }
}

async fn manifests_in(dir: &Path, opts: &ManifestsOptions) -> anyhow::Result<ManifestsReport> {
    let catalog = synthetic_catalog(dir, None).await?;
    let started = Instant::now();
    let created = create_synthetic_table(&catalog, &synthetic(opts), |_| Ok(())).await?;
    let setup_s = created.map(|_| round2(started.elapsed().as_secs_f64()));
    drop(catalog);
    let args = [
        "--entries".to_string(),
        opts.entries.to_string(),
        "--partitions".to_string(),
        opts.partitions.to_string(),
        "--commits".to_string(),
        opts.commits.to_string(),
    ];
    let mut report: ManifestsReport =
        super::run_child("rewrite-manifests", dir, &args, &[]).await?;
    report.setup_s = setup_s;
    Ok(report)
}

async fn time_rewrite(dir: &Path, opts: &ManifestsOptions) -> anyhow::Result<ManifestsReport> {
    let catalog = synthetic_catalog(dir, None).await?;
    let usage0 = Usage::now();
    let started = Instant::now();
    let table = catalog.load(TABLE).await?;
    let backend = catalog.committer().await?;
    let settings = ManifestSettings::resolve(1, None, table.metadata().properties());
    let r = rewrite_manifests(
        &catalog,
        backend.as_ref(),
        &table,
        settings,
        "bench",
        &Fence::none(),
    )
    .await?
    .context("the rewrite found nothing to do")?;
    let rewrite_s = started.elapsed().as_secs_f64();
    let (user, sys) = Usage::now().cpu_since(&usage0);
    Ok(ManifestsReport {
        entries: opts.entries,
        partitions: opts.partitions,
        commits: opts.commits,
        setup_s: None,
        rewrite_s: round2(rewrite_s),
        cpu_s: round2(user + sys),
        peak_rss_mib: proc_status_mib("VmHWM:"),
        manifests_replaced: r.manifests_replaced,
        manifests_created: r.manifests_created,
    })
}
