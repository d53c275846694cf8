//! Table maintenance other than compaction: property reconciliation, snapshot expiry, orphan-file
//! removal and manifest rewrite.
//!
//! [`run`] turns a policy section plus per-run [`Overrides`] (CLI flags, API bodies) into an
//! expiry or orphan-removal run and its [`JobOutcome`]; [`one_shot`] is the CLI entry point that
//! runs one such job under the table's job lock.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use crate::app::Context;
use crate::catalog::{CatalogError, CatalogHandle, parse_ident};
use crate::jobs::{JobKind, JobOutcome, JobStatus, StartError, Trigger};
use crate::policy::Policy;
use crate::telemetry::Metrics;

pub mod expire;
pub mod files;
pub mod manifests;
pub mod orphans;
pub mod properties;

/// Per-run overrides of a policy's `[expire]` / `[orphans]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub older_than: Option<Duration>,
    pub retain_last: Option<u32>,
    pub dry_run: Option<bool>,
    /// Orphans only: allow `older_than` under one day.
    pub force: bool,
}

impl Overrides {
    /// Checks the overrides for `kind`; the message names the offending option.
    pub fn validate(&self, kind: JobKind) -> Result<(), String> {
        match kind {
            JobKind::Expire => {
                if self.retain_last == Some(0) {
                    return Err("retain-last must be at least 1".into());
                }
                if self.force {
                    return Err("force only applies to remove-orphans".into());
                }
            }
            JobKind::RemoveOrphans => {
                if self.retain_last.is_some() {
                    return Err("retain-last only applies to expire".into());
                }
                if let Some(d) = self.older_than
                    && d < orphans::MIN_OLDER_THAN
                    && !self.force
                {
                    return Err(
                        orphans::OrphansError::TooRecent(orphans::human_duration(d)).to_string()
                    );
                }
            }
            other => return Err(format!("{} takes no options", other.as_str())),
        }
        Ok(())
    }
}

fn skipped(reason: String) -> JobOutcome {
    JobOutcome {
        status: JobStatus::Skipped,
        detail: serde_json::json!({"reason": reason}),
        error: None,
    }
}

/// Runs expiry or orphan removal on `table` as its policy says, with `overrides` on top.
pub async fn run(
    catalog: &CatalogHandle,
    metrics: &Metrics,
    table: &str,
    policy: &Policy,
    kind: JobKind,
    overrides: &Overrides,
) -> JobOutcome {
    if let Err(e) = overrides.validate(kind) {
        return JobOutcome::failed(e, serde_json::json!({}));
    }
    match kind {
        JobKind::Expire => {
            let Some(p) = policy.expire.as_ref() else {
                return skipped(format!("policy {} has no [expire] section", policy.name));
            };
            if !p.enabled {
                return skipped(format!("expiry is disabled in policy {}", policy.name));
            }
            let opts = expire::ExpireOptions {
                older_than: overrides.older_than.or(p.older_than),
                retain_last: overrides.retain_last.or(p.retain_last),
                max_concurrent_deletes: p.max_concurrent_deletes,
                dry_run: overrides.dry_run.unwrap_or(false),
            };
            match expire::expire_table(catalog, table, &opts, metrics).await {
                Ok(r) => {
                    let detail = serde_json::to_value(&r).expect("serializable");
                    let problem = r.cleanup_error.clone().or_else(|| {
                        (r.delete_failures > 0)
                            .then(|| format!("{} file(s) could not be deleted", r.delete_failures))
                    });
                    let idle = r.snapshots_expired == 0
                        && r.refs_removed.is_empty()
                        && r.planned.is_empty()
                        && r.files_deleted == 0;
                    JobOutcome {
                        status: match (&problem, idle) {
                            (Some(_), _) => JobStatus::Partial,
                            (None, true) => JobStatus::Skipped,
                            (None, false) => JobStatus::Succeeded,
                        },
                        detail,
                        error: problem,
                    }
                }
                Err(e) => JobOutcome::failed(
                    e.to_string(),
                    serde_json::json!({"retryable": e.is_retryable(), "dry_run": opts.dry_run}),
                ),
            }
        }
        JobKind::RemoveOrphans => {
            let Some(p) = policy.orphans.as_ref() else {
                return skipped(format!("policy {} has no [orphans] section", policy.name));
            };
            if !p.enabled {
                return skipped(format!(
                    "orphan removal is disabled in policy {}",
                    policy.name
                ));
            }
            let opts = orphans::OrphanOptions {
                older_than: overrides
                    .older_than
                    .or(p.older_than)
                    .unwrap_or(orphans::DEFAULT_OLDER_THAN),
                dry_run: overrides.dry_run.unwrap_or(p.dry_run),
                force: overrides.force,
                max_concurrent_deletes: p.max_concurrent_deletes,
            };
            match orphans::remove_orphans(catalog, table, &opts, metrics).await {
                Ok(r) => {
                    let detail = serde_json::to_value(&r).expect("serializable");
                    let problem = (r.delete_failures > 0)
                        .then(|| format!("{} file(s) could not be deleted", r.delete_failures));
                    JobOutcome {
                        status: match (&problem, r.orphan_files_found) {
                            (Some(_), _) => JobStatus::Partial,
                            (None, 0) => JobStatus::Skipped,
                            (None, _) => JobStatus::Succeeded,
                        },
                        detail,
                        error: problem,
                    }
                }
                Err(e) => JobOutcome::failed(
                    e.to_string(),
                    serde_json::json!({"retryable": e.is_retryable(), "dry_run": opts.dry_run}),
                ),
            }
        }
        other => JobOutcome::failed(
            format!("{} is not a pruning job", other.as_str()),
            serde_json::json!({}),
        ),
    }
}

/// `icemaint expire` / `icemaint remove-orphans`: runs one job on `table` under its job lock (so
/// a running daemon's jobs and this one never overlap) and returns its outcome and job id.
pub async fn one_shot(
    config_path: &Path,
    table: &str,
    kind: JobKind,
    overrides: Overrides,
) -> anyhow::Result<(String, JobOutcome)> {
    overrides.validate(kind).map_err(anyhow::Error::msg)?;
    parse_ident(table)?;
    let config = crate::config::Config::load(config_path)?;
    let ctx = Context::new(config).await?;
    if ctx.policy_for(table).is_none() {
        anyhow::bail!("table {table} is not watched by any policy");
    }
    match ctx.catalog.load(table).await {
        Ok(_) => {}
        Err(CatalogError::TableNotFound(_)) => anyhow::bail!("table {table} not found"),
        Err(e) => return Err(e).context(format!("loading {table}")),
    }
    let handle = match ctx.jobs.begin(table, kind, Trigger::Manual).await {
        Ok(h) => h,
        Err(StartError::Busy { job_id, .. }) => {
            anyhow::bail!("table {table} is busy with job {job_id}")
        }
        Err(e) => return Err(e.into()),
    };
    let id = handle.id.clone();
    let outcome = ctx
        .jobs
        .run(handle, ctx.execute_with(table, kind, &overrides))
        .await;
    Ok((id, outcome))
}

/// One line describing a finished pruning job, for the CLI.
pub fn summary_line(table: &str, kind: JobKind, outcome: &JobOutcome) -> String {
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
            crate::app::human_bytes(n("bytes_deleted"))
        ),
        JobKind::RemoveOrphans if dry => format!(
            "found {} orphan file(s) ({}), deleted none (dry run)",
            n("orphan_files_found"),
            crate::app::human_bytes(n("orphan_bytes"))
        ),
        JobKind::RemoveOrphans => format!(
            "found {} orphan file(s), deleted {} ({})",
            n("orphan_files_found"),
            n("files_deleted"),
            crate::app::human_bytes(n("bytes_deleted"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_are_checked_per_kind() {
        let o = |older: Option<u64>, retain: Option<u32>, force: bool| Overrides {
            older_than: older.map(Duration::from_secs),
            retain_last: retain,
            dry_run: None,
            force,
        };
        assert!(o(Some(0), Some(1), false).validate(JobKind::Expire).is_ok());
        assert!(
            o(None, Some(0), false)
                .validate(JobKind::Expire)
                .unwrap_err()
                .contains("at least 1")
        );
        assert!(o(None, None, true).validate(JobKind::Expire).is_err());
        let e = o(Some(3600), None, false)
            .validate(JobKind::RemoveOrphans)
            .unwrap_err();
        assert!(e.contains("under 1d") && e.contains("force"), "{e}");
        assert!(
            o(Some(1), None, true)
                .validate(JobKind::RemoveOrphans)
                .is_ok()
        );
        assert!(
            o(None, Some(2), false)
                .validate(JobKind::RemoveOrphans)
                .is_err()
        );
    }

    #[test]
    fn summary_lines() {
        let out = JobOutcome::ok(serde_json::json!({
            "dry_run": false, "snapshots_expired": 9, "files_deleted": 30, "bytes_deleted": 2048
        }));
        assert_eq!(
            summary_line("db.t", JobKind::Expire, &out),
            "db.t: succeeded; expired 9 snapshot(s), deleted 30 file(s) (2.0KiB)"
        );
        let out = JobOutcome {
            status: JobStatus::Skipped,
            detail: serde_json::json!({"reason": "policy p has no [orphans] section"}),
            error: None,
        };
        assert!(
            summary_line("db.t", JobKind::RemoveOrphans, &out)
                .starts_with("db.t: skipped: policy p has no [orphans] section;")
        );
    }
}
