//! What the commands print: one line per table or job for people, pretty JSON for scripts, the
//! compaction plan, the demo's banner, and the progress bar of a compaction on a terminal.

use std::io::IsTerminal;
use std::path::Path;

use crate::config::Config;
use crate::dispatch::ProgressObserver;
use crate::inspect::TableStatus;
use crate::jobs::{JobKind, JobOutcome};
use crate::util::human_bytes;

fn pretty(v: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// One line per table for `icemaint tables`.
pub fn table_line(s: &TableStatus) -> String {
    let sync = if let Some(e) = &s.error {
        format!("error: {e}")
    } else if s.properties_in_sync {
        "in sync".to_string()
    } else {
        format!("drift: {}", s.drifted_keys.join(","))
    };
    format!(
        "{:<40} policy={:<14} v{} files={} small={} avg={} snapshots={} {}",
        s.table,
        s.policy,
        s.format_version
            .map(|v| v.to_string())
            .unwrap_or("?".into()),
        s.data_files,
        s.small_files,
        human_bytes(s.average_file_bytes as u64),
        s.snapshots,
        sync
    )
}

/// A compaction plan (`icemaint compact --dry-run`): a summary line and a line per group.
pub fn plan(v: &serde_json::Value, json: bool) -> anyhow::Result<()> {
    if json {
        return pretty(v);
    }
    let p = &v["plan"];
    println!(
        "{}: {} data files, {} candidates, {} groups rewrite {} files ({} bytes) into ~{} files",
        v["table"].as_str().unwrap_or_default(),
        p["total_files"],
        p["candidate_files"],
        p["groups"].as_array().map_or(0, Vec::len),
        p["rewrite_files"],
        p["rewrite_bytes"],
        p["expected_output_files"]
    );
    // hot-partition-age: partitions held back, only when there are any.
    let (hot, unchanged) = (&p["hot_partitions"], &p["unchanged_partitions"]);
    if hot.as_u64().unwrap_or(0) + unchanged.as_u64().unwrap_or(0) > 0 {
        println!(
            "  {hot} hot partitions (fragments only), {unchanged} unchanged partitions not planned"
        );
    }
    for g in p["groups"].as_array().into_iter().flatten() {
        println!(
            "  group {:>3}  {:<40} files={:<5} bytes={:<12} -> {} file(s)",
            g["id"],
            g["partition"].as_str().unwrap_or_default(),
            g["files"].as_array().map_or(0, Vec::len),
            g["input_bytes"],
            g["expected_output_files"]
        );
    }
    Ok(())
}

/// A finished compaction job.
pub fn compaction(v: &serde_json::Value, json: bool) -> anyhow::Result<()> {
    if json {
        return pretty(v);
    }
    let r = &v["result"];
    if v["status"] == "skipped" {
        println!(
            "job {} skipped: {}",
            v["job_id"].as_str().unwrap_or_default(),
            r["reason"].as_str().unwrap_or("nothing to do")
        );
        return Ok(());
    }
    if r["engine"] == "spark" {
        // Spark reports files and bytes, not groups.
        println!(
            "job {} {} on spark ({}): files {} -> {}, bytes {} -> {}, snapshots {}",
            v["job_id"].as_str().unwrap_or_default(),
            v["status"].as_str().unwrap_or_default(),
            r["spark"]["application_id"]
                .as_str()
                .unwrap_or("no application"),
            r["files_read"],
            r["files_written"],
            r["bytes_read"],
            r["bytes_written"],
            r["snapshot_ids"]
        );
        return Ok(());
    }
    println!(
        "job {} {}: groups {}/{} committed, {} conflicts, files {} -> {}, bytes {} -> {}, snapshots {}",
        v["job_id"].as_str().unwrap_or_default(),
        v["status"].as_str().unwrap_or_default(),
        r["groups_committed"],
        r["groups_planned"],
        r["conflicts"],
        r["files_read"],
        r["files_written"],
        r["bytes_read"],
        r["bytes_written"],
        r["snapshot_ids"]
    );
    Ok(())
}

/// A finished job: JSON, or one line with its status and result.
pub fn job(v: &serde_json::Value, json: bool) -> anyhow::Result<()> {
    if json {
        return pretty(v);
    }
    println!(
        "job {} {} {}: {}",
        v["job_id"].as_str().unwrap_or_default(),
        v["kind"].as_str().unwrap_or_default(),
        v["status"].as_str().unwrap_or_default(),
        v["result"]
    );
    Ok(())
}

/// A finished expiry or orphan-removal job.
pub fn pruning(
    job_id: &str,
    table: &str,
    kind: JobKind,
    outcome: &JobOutcome,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        return pretty(&serde_json::json!({
            "job_id": job_id,
            "table": table,
            "kind": kind.as_str(),
            "status": outcome.status.as_str(),
            "error": outcome.error,
            "detail": outcome.detail,
        }));
    }
    println!("{}", pruning_line(table, kind, outcome));
    Ok(())
}

/// One line describing a finished pruning job.
pub fn pruning_line(table: &str, kind: JobKind, outcome: &JobOutcome) -> String {
    let d = &outcome.detail;
    let n = |k: &str| d.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    let dry = d.get("dry_run").and_then(|v| v.as_bool()).unwrap_or(false);
    let status = outcome.status.as_str();
    let body = match kind {
        JobKind::Expire if dry => {
            let planned: u64 = d
                .get("planned")
                .and_then(|p| p.as_object())
                .map(|o| o.values().filter_map(|t| t["files"].as_u64()).sum())
                .unwrap_or(0);
            format!(
                "would expire {} snapshot(s) and delete {planned} file(s)",
                n("snapshots_expired")
            )
        }
        JobKind::Expire => format!(
            "expired {} snapshot(s), deleted {} file(s) ({})",
            n("snapshots_expired"),
            n("files_deleted"),
            human_bytes(n("bytes_deleted"))
        ),
        JobKind::RemoveOrphans if dry => format!(
            "found {} orphan file(s) ({}), deleted none (dry run)",
            n("orphan_files_found"),
            human_bytes(n("orphan_bytes"))
        ),
        JobKind::RemoveOrphans => format!(
            "found {} orphan file(s), deleted {} ({})",
            n("orphan_files_found"),
            n("files_deleted"),
            human_bytes(n("bytes_deleted"))
        ),
        other => other.as_str().to_string(),
    };
    let reason = d
        .get("reason")
        .and_then(|r| r.as_str())
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    format!("{table}: {status}{reason}; {body}")
}

/// Where the demo lives and how to reach it.
pub fn demo_banner(
    config: &Config,
    dir: &Path,
    listen: &str,
    setup_only: bool,
) -> anyhow::Result<()> {
    let abs = dir.canonicalize()?;
    let uri = &config.catalog.uri;
    let warehouse = config.catalog.warehouse.clone().unwrap_or_default();
    println!("icemaint demo in {}", abs.display());
    println!("  config:     {}", abs.join("icemaint.toml").display());
    println!("  policies:   {}", config.policies.dir.display());
    println!("  catalog:    {uri} (SQL catalog 'default'), warehouse {warehouse}");
    println!(
        "  PyIceberg:  load_catalog('default', type='sql', uri='{}', warehouse='{}')",
        uri.replacen("sqlite://", "sqlite:///", 1),
        warehouse
    );
    if !setup_only {
        let base = format!("http://{listen}");
        println!("  status:     {base}/api/v1/tables   jobs: {base}/api/v1/jobs");
        println!("  health:     {base}/healthz  {base}/readyz   metrics: {base}/metrics");
        println!("  Ctrl-C stops it.");
    }
    Ok(())
}

/// A compaction's progress on stderr, only when stderr is a terminal.
pub struct ProgressBar(indicatif::ProgressBar);

impl ProgressBar {
    pub fn on_terminal() -> Option<Self> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} groups {msg}",
            )
            .expect("valid template"),
        );
        Some(Self(b))
    }

    /// Moves the bar with each report of the running compaction.
    pub fn observer(&self) -> ProgressObserver {
        let b = self.0.clone();
        std::sync::Arc::new(move |r| {
            b.set_length(r.groups_planned as u64);
            b.set_position((r.groups_rewritten + r.groups_failed) as u64);
            b.set_message(format!(
                "{} committed, {} in",
                r.groups_committed,
                human_bytes(r.bytes_read)
            ));
        })
    }

    pub fn finish(self) {
        self.0.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobStatus;

    #[test]
    fn pruning_lines() {
        let out = JobOutcome::ok(serde_json::json!({
            "dry_run": false, "snapshots_expired": 9, "files_deleted": 30, "bytes_deleted": 2048
        }));
        assert_eq!(
            pruning_line("db.t", JobKind::Expire, &out),
            "db.t: succeeded; expired 9 snapshot(s), deleted 30 file(s) (2.0KiB)"
        );
        let out = JobOutcome {
            status: JobStatus::Skipped,
            detail: serde_json::json!({"reason": "policy p has no [orphans] section"}),
            error: None,
        };
        assert!(
            pruning_line("db.t", JobKind::RemoveOrphans, &out)
                .starts_with("db.t: skipped: policy p has no [orphans] section;")
        );
    }
}
