//! Manifest rewrite as a job: runs [`crate::maintenance::manifests`] when the policy's
//! `[manifests]` thresholds say so.

use crate::jobs::{JobOutcome, JobStatus};
use crate::maintenance::manifests::{ManifestSettings, rewrite_manifests};
use crate::policy::Policy;

use super::Deps;

fn skipped(detail: serde_json::Value) -> JobOutcome {
    JobOutcome {
        status: JobStatus::Skipped,
        detail,
        error: None,
    }
}

/// Rewrites the table's manifests when the policy's `[manifests]` thresholds say so.
pub async fn run(deps: Deps<'_>, table: &str, policy: &Policy, job_id: &str) -> JobOutcome {
    let Some(mp) = &policy.manifests else {
        return skipped(serde_json::json!({"reason": "the policy has no [manifests] section"}));
    };
    let t = match deps.catalog.load(table).await {
        Ok(t) => t,
        Err(e) => return JobOutcome::failed(e.to_string(), serde_json::json!({})),
    };
    let backend = match deps.catalog.committer().await {
        Ok(b) => b,
        Err(e) => return JobOutcome::failed(e.to_string(), serde_json::json!({})),
    };
    let settings = ManifestSettings::resolve(
        mp.min_manifests,
        mp.target_size_bytes,
        t.metadata().properties(),
    );
    match rewrite_manifests(deps.catalog, backend.as_ref(), &t, settings, job_id).await {
        Ok(None) => skipped(
            serde_json::json!({"reason": "manifests are within the policy's thresholds", "settings": settings}),
        ),
        Ok(Some(report)) => {
            deps.metrics
                .manifests_rewritten_total
                .with_label_values(&[table])
                .inc_by(report.manifests_replaced as u64);
            JobOutcome::ok(serde_json::to_value(report).expect("serializable"))
        }
        Err(e) => JobOutcome::failed(e.to_string(), serde_json::json!({"settings": settings})),
    }
}
