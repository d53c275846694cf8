//! Snapshot expiry and orphan-file removal as jobs: a policy section plus per-run [`Overrides`]
//! (CLI flags, API bodies) become an [`expire`](crate::maintenance::expire) or
//! [`orphans`](crate::maintenance::orphans) run and its job outcome.
//!
//! A policy section sets a schedule and defaults, not permission: a job asked for by hand runs
//! with Spark's defaults when the policy has no section for it, and `enabled = false` only stops
//! the schedule (the scheduler never fires a disabled section).

use std::time::Duration;

use crate::jobs::{JobKind, JobOutcome, JobStatus};
use crate::maintenance::{expire, orphans};
use crate::policy::{DEFAULT_MAX_CONCURRENT_DELETES, Policy};
use crate::util::human_duration;

use super::Deps;

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
                    return Err(orphans::OrphansError::TooRecent(human_duration(d)).to_string());
                }
            }
            other => return Err(format!("{} takes no options", other.as_str())),
        }
        Ok(())
    }
}

/// Expires `table`'s snapshots as its policy's `[expire]` says, with `overrides` on top.
pub async fn expire(
    deps: Deps<'_>,
    table: &str,
    policy: &Policy,
    overrides: &Overrides,
) -> JobOutcome {
    if let Err(e) = overrides.validate(JobKind::Expire) {
        return JobOutcome::failed(e, serde_json::json!({}));
    }
    // Without an `[expire]` section, Spark's defaults: the table's `history.expire.*`
    // properties (5 days, keep 1).
    let p = policy.expire.as_ref();
    let opts = expire::ExpireOptions {
        older_than: overrides.older_than.or(p.and_then(|p| p.older_than)),
        retain_last: overrides.retain_last.or(p.and_then(|p| p.retain_last)),
        max_concurrent_deletes: p
            .map_or(DEFAULT_MAX_CONCURRENT_DELETES, |p| p.max_concurrent_deletes),
        dry_run: overrides.dry_run.unwrap_or(false),
    };
    match expire::expire_table(deps.catalog, table, &opts, deps.metrics, deps.fence).await {
        Ok(r) => {
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
                detail: serde_json::to_value(&r).expect("serializable"),
                error: problem,
            }
        }
        Err(e) => JobOutcome::failed(
            e.to_string(),
            serde_json::json!({"retryable": e.is_retryable(), "dry_run": opts.dry_run}),
        ),
    }
}

/// Removes `table`'s orphan files as its policy's `[orphans]` says, with `overrides` on top.
pub async fn remove_orphans(
    deps: Deps<'_>,
    table: &str,
    policy: &Policy,
    overrides: &Overrides,
) -> JobOutcome {
    if let Err(e) = overrides.validate(JobKind::RemoveOrphans) {
        return JobOutcome::failed(e, serde_json::json!({}));
    }
    // Without an `[orphans]` section, Spark's defaults: older than 3 days, no dry run.
    let p = policy.orphans.as_ref();
    let opts = orphans::OrphanOptions {
        older_than: overrides
            .older_than
            .or(p.and_then(|p| p.older_than))
            .unwrap_or(orphans::DEFAULT_OLDER_THAN),
        dry_run: overrides.dry_run.unwrap_or(p.is_some_and(|p| p.dry_run)),
        force: overrides.force,
        max_concurrent_deletes: p
            .map_or(DEFAULT_MAX_CONCURRENT_DELETES, |p| p.max_concurrent_deletes),
    };
    match orphans::remove_orphans(deps.catalog, table, &opts, deps.metrics, deps.fence).await {
        Ok(r) => {
            let problem = (r.delete_failures > 0)
                .then(|| format!("{} file(s) could not be deleted", r.delete_failures));
            JobOutcome {
                status: match (&problem, r.orphan_files_found) {
                    (Some(_), _) => JobStatus::Partial,
                    (None, 0) => JobStatus::Skipped,
                    (None, _) => JobStatus::Succeeded,
                },
                detail: serde_json::to_value(&r).expect("serializable"),
                error: problem,
            }
        }
        Err(e) => JobOutcome::failed(
            e.to_string(),
            serde_json::json!({"retryable": e.is_retryable(), "dry_run": opts.dry_run}),
        ),
    }
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
}
