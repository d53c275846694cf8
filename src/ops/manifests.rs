//! Manifest rewrite as a job: runs [`crate::maintenance::manifests`] when the policy's
//! `[manifests]` thresholds say so, or whenever asked when the policy has no such section.

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
    // Without a `[manifests]` section, Spark's `rewrite_manifests`: rewrite whenever asked (no
    // manifest-count threshold), to the table's `commit.manifest.target-size-bytes`.
    let (min_manifests, target_size_bytes) = policy
        .manifests
        .as_ref()
        .map_or((0, None), |m| (m.min_manifests, m.target_size_bytes));
    let t = match deps.catalog.load(table).await {
        Ok(t) => t,
        Err(e) => return JobOutcome::failed(e.to_string(), serde_json::json!({})),
    };
    let backend = match deps.catalog.committer().await {
        Ok(b) => b,
        Err(e) => return JobOutcome::failed(e.to_string(), serde_json::json!({})),
    };
    let settings =
        ManifestSettings::resolve(min_manifests, target_size_bytes, t.metadata().properties());
    match rewrite_manifests(
        deps.catalog,
        backend.as_ref(),
        &t,
        settings,
        job_id,
        deps.fence,
    )
    .await
    {
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
