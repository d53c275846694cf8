//! Property reconciliation as a job: compares the table's properties and format version with its
//! policy, commits the difference, and records every change in the state store.

use crate::jobs::{JobOutcome, JobStatus};
use crate::maintenance::properties::{self, Drift};
use crate::policy::Policy;
use crate::store::{PropertyChange, Store};

use super::Deps;

/// Compares the table's properties with its policy and commits the difference.
pub async fn run(deps: Deps<'_>, table: &str, policy: &Policy, job_id: &str) -> JobOutcome {
    let t = match deps.catalog.load(table).await {
        Ok(t) => t,
        Err(e) => return JobOutcome::failed(e.to_string(), serde_json::json!({})),
    };
    let drift = properties::table_drift(&t, policy);
    if drift.is_empty() {
        return JobOutcome {
            status: JobStatus::Skipped,
            detail: serde_json::json!({"drift": drift}),
            error: None,
        };
    }
    let label = [table];
    deps.metrics
        .drift_detected_total
        .with_label_values(&label)
        .inc_by(drift.len() as u64);
    tracing::info!(table, policy = policy.name, keys = ?drift.keys(), "property drift detected");
    match properties::reconcile(deps.catalog, &t, &drift, deps.fence).await {
        Ok(_) => {
            deps.metrics
                .drift_corrected_total
                .with_label_values(&label)
                .inc_by(drift.len() as u64);
            record_changes(deps.store, table, &drift, job_id).await;
            JobOutcome::ok(serde_json::json!({"drift": drift, "corrected": drift.keys()}))
        }
        Err(e) => JobOutcome::failed(e.to_string(), serde_json::json!({"drift": drift})),
    }
}

/// Records each corrected key (and a format upgrade) as a property change of job `job_id`. A
/// store failure is logged: the commit already landed and must not be reported as failed.
pub async fn record_changes(store: &Store, table: &str, drift: &Drift, job_id: &str) {
    let now = chrono::Utc::now().timestamp_millis();
    let change = |key: &str, old: Option<String>, new: String| PropertyChange {
        table: table.to_string(),
        key: key.to_string(),
        old,
        new: Some(new),
        changed_ms: now,
        job_id: Some(job_id.to_string()),
    };
    let mut changes: Vec<PropertyChange> = drift
        .properties
        .iter()
        .map(|d| change(&d.key, d.current.clone(), d.desired.clone()))
        .collect();
    if let Some((old, new)) = drift.format_version {
        changes.push(change(
            "format-version",
            Some(old.to_string()),
            new.to_string(),
        ));
    }
    for c in changes {
        if let Err(e) = store.record_property_change(&c).await {
            tracing::warn!(table, key = c.key, error = %e, "recording property change failed");
        }
    }
}
