//! `icemaint bench limit|plan|remove-orphans|rewrite-manifests|expire|latency-proxy` (hidden,
//! for `bench/run.sh`): runs one benchmark of [`crate::bench`] and prints its report as one JSON
//! object (the proxy: its port, then its counts when it stops).

use std::io::Write as _;
use std::net::SocketAddr;
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

/// The latency proxy: prints its port on stdout, serves until SIGTERM or SIGINT, then prints
/// its counts as JSON on stderr (and into `log`).
pub async fn latency_proxy(
    listen: SocketAddr,
    upstream: SocketAddr,
    latency_ms: f64,
    log: Option<PathBuf>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let proxy = bench::latency_proxy::LatencyProxy::bind(listen, upstream, latency_ms).await?;
    // Signal handlers first: run.sh may stop the proxy as soon as it read the port.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", proxy.local_addr()?.port())?;
    out.flush()?;
    drop(out);
    let stop = tokio_util::sync::CancellationToken::new();
    let serving = tokio::spawn(proxy.run(stop.clone()));
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    stop.cancel();
    let counts = serde_json::to_string(&serving.await?)?;
    eprintln!("{counts}");
    if let Some(log) = log {
        std::fs::write(&log, format!("{counts}\n"))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", log.display()))?;
    }
    Ok(())
}
