//! `icemaint bench limit|plan|remove-orphans|rewrite-manifests|expire` (hidden, for `bench/run.sh`): runs one benchmark of
//! [`crate::bench`] and prints its report as one JSON object.

use std::path::PathBuf;

use crate::bench::{self, Dictionary, LimitOptions, PlanOptions};

use super::parse_key_values;

/// The machine's limit: the bare Parquet read/write loop over `input`.
pub async fn limit(
    input: PathBuf,
    output: PathBuf,
    threads: Option<usize>,
    batch_size: usize,
    properties: &[String],
    dictionary: Dictionary,
) -> anyhow::Result<()> {
    let opts = LimitOptions {
        input,
        output,
        threads: threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }),
        batch_size,
        properties: parse_key_values("property", properties)?,
        dictionary,
    };
    // CPU-bound and synchronous: off the async runtime's workers.
    let report = tokio::task::spawn_blocking(move || bench::limit(&opts)).await??;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Compaction planning of a synthetic table.
pub async fn plan(opts: PlanOptions) -> anyhow::Result<()> {
    let report = bench::plan(&opts).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Orphan-file removal over a synthetic table location.
pub async fn orphans(opts: bench::orphans::OrphansOptions) -> anyhow::Result<()> {
    let report = bench::orphans::orphans(&opts).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// The manifest rewrite of a synthetic table.
pub async fn manifests(opts: bench::manifests::ManifestsOptions) -> anyhow::Result<()> {
    let report = bench::manifests::manifests(&opts).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Snapshot expiry of a synthetic table with a long history.
pub async fn expire(opts: bench::expire::ExpireBenchOptions) -> anyhow::Result<()> {
    let report = bench::expire::expire(&opts).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
