//! What the daemon knows about one watched table: [`TableStatus`] (file counts and sizes, delete
//! files, manifests, snapshots, property drift) computed by [`inspect`] from the table's current
//! metadata and manifests.
//!
//! It only reads: the daemon caches the result for `GET /api/v1/tables`, the status page and the
//! table gauges, and `icemaint tables` prints it.

use std::collections::HashMap;

use iceberg::spec::{Operation, TableMetadata};
use serde::Serialize;

use crate::catalog::stats::{SIZE_BUCKETS, file_stats};
use crate::catalog::{CatalogError, CatalogHandle, format_version_number};
use crate::maintenance::properties;
use crate::policy::Policy;
use crate::telemetry::Metrics;
use crate::trigger::Health;

/// What `icemaint tables` and `GET /api/v1/tables` report for one watched table.
// The doc comments and `schema` attributes make the OpenAPI schema (`utoipa`): every field is
// always written, so nullable ones are `required` too; `deny_unknown_fields` only makes the schema
// say `additionalProperties: false` (serializing ignores it).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TableStatus {
    /// `namespace.table`.
    pub table: String,
    /// Name of the policy that selects the table.
    pub policy: String,
    /// Iceberg format version; null when the table could not be loaded.
    #[schema(minimum = 1, required)]
    pub format_version: Option<u8>,
    /// Live data files in the current snapshot.
    pub data_files: u64,
    /// Live data files under `small_file_threshold_bytes`.
    pub small_files: u64,
    pub small_file_threshold_bytes: u64,
    /// Bytes of the small files (about what compacting them rewrites).
    pub small_file_bytes: u64,
    pub data_bytes: u64,
    #[schema(minimum = 0)]
    pub average_file_bytes: f64,
    /// Live data files by size: < 1 MiB, < 8 MiB, < 32 MiB, < 128 MiB, < 512 MiB, >= 512 MiB.
    // (`catalog::stats::SIZE_BUCKET_UPPER_BYTES`)
    #[schema(min_items = 6, max_items = 6)]
    pub file_size_buckets: [u64; SIZE_BUCKETS],
    pub delete_files: u64,
    pub manifests: u64,
    pub snapshots: u64,
    /// Snapshots in the current snapshot's ancestry committed after the newest compaction (a
    /// `replace` snapshot that removed data files); all of them when none was found.
    pub snapshots_since_compaction: u64,
    /// Commit time (ms since the epoch) of that newest compaction, if any.
    #[schema(required)]
    pub last_compacted_ms: Option<i64>,
    #[schema(required)]
    pub current_snapshot_id: Option<i64>,
    pub properties_in_sync: bool,
    /// Policy properties (and `format-version`) the table does not have.
    pub drifted_keys: Vec<String>,
    /// Why the table could not be inspected.
    #[schema(required)]
    pub error: Option<String>,
}

impl TableStatus {
    /// The status of a table that could not be loaded: reported with its error, never fatal.
    pub fn unavailable(table: &str, policy: &Policy, error: String) -> Self {
        Self {
            table: table.to_string(),
            policy: policy.name.clone(),
            format_version: None,
            data_files: 0,
            small_files: 0,
            small_file_threshold_bytes: 0,
            small_file_bytes: 0,
            data_bytes: 0,
            average_file_bytes: 0.0,
            file_size_buckets: [0; SIZE_BUCKETS],
            delete_files: 0,
            manifests: 0,
            snapshots: 0,
            snapshots_since_compaction: 0,
            last_compacted_ms: None,
            current_snapshot_id: None,
            properties_in_sync: false,
            drifted_keys: vec![],
            error: Some(error),
        }
    }
}

impl TableStatus {
    /// What the health triggers read of this status.
    pub fn health(&self) -> Health {
        Health {
            data_files: self.data_files,
            small_files: self.small_files,
            average_file_bytes: self.average_file_bytes,
            delete_files: self.delete_files,
            manifests: self.manifests,
            snapshots_since_compaction: self.snapshots_since_compaction,
        }
    }
}

/// Walks a snapshot ancestry, newest first, each as (is a compaction, commit time ms): how many
/// snapshots came after the newest compaction, and its time. Pure.
pub fn since_compaction(ancestry: impl IntoIterator<Item = (bool, i64)>) -> (u64, Option<i64>) {
    let mut n = 0;
    for (compaction, ts) in ancestry {
        if compaction {
            return (n, Some(ts));
        }
        n += 1;
    }
    (n, None)
}

/// The current snapshot's ancestry as [`since_compaction`] reads it: a compaction is a `replace`
/// snapshot that removed data files (a manifest rewrite removes none). Bounded by the snapshot
/// count, so a malformed parent chain cannot loop.
fn ancestry(md: &TableMetadata) -> Vec<(bool, i64)> {
    let mut out = Vec::new();
    let bound = md.snapshots().count();
    let mut id = md.current_snapshot_id();
    while let Some(s) = id.and_then(|i| md.snapshot_by_id(i)) {
        if out.len() >= bound {
            break;
        }
        let sum = s.summary();
        let removed = sum
            .additional_properties
            .get("deleted-data-files")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        out.push((
            sum.operation == Operation::Replace && removed > 0,
            s.timestamp_ms(),
        ));
        id = s.parent_snapshot_id();
    }
    out
}

/// The small-file threshold of a policy: `min-file-size-bytes`, else 75% of the target
/// (`target-file-size-bytes`, else the table's `write.target-file-size-bytes`, else 512 MiB).
pub fn small_file_threshold(policy: &Policy, table_props: &HashMap<String, String>) -> u64 {
    let opts = policy.compaction.as_ref().map(|c| &c.options);
    let get = |k: &str| {
        opts.and_then(|o| o.get(k))
            .and_then(|v| v.parse::<u64>().ok())
    };
    if let Some(min) = get("min-file-size-bytes") {
        return min;
    }
    let target = get("target-file-size-bytes")
        .or_else(|| {
            table_props
                .get("write.target-file-size-bytes")
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(536_870_912);
    (target as f64 * 0.75) as u64
}

/// Loads `table` and computes its status against `policy`. A catalog failure other than "no such
/// table" counts in `icemaint_catalog_request_errors_total`; unreadable manifests are reported in
/// the status' `error`, not as an error.
pub async fn inspect(
    catalog: &CatalogHandle,
    metrics: &Metrics,
    table: &str,
    policy: &Policy,
) -> Result<TableStatus, CatalogError> {
    let t = catalog.load(table).await.inspect_err(|e| {
        if !matches!(e, CatalogError::TableNotFound(_)) {
            metrics
                .catalog_request_errors_total
                .with_label_values(&["load_table"])
                .inc();
        }
    })?;
    let md = t.metadata();
    let threshold = small_file_threshold(policy, md.properties());
    let drift = properties::table_drift(&t, policy);
    let (snapshots_since_compaction, last_compacted_ms) = since_compaction(ancestry(md));
    let (stats, error) = match file_stats(&t, threshold).await {
        Ok(s) => (s, None),
        Err(e) => (Default::default(), Some(format!("reading manifests: {e}"))),
    };
    Ok(TableStatus {
        table: table.to_string(),
        policy: policy.name.clone(),
        format_version: Some(format_version_number(md.format_version())),
        data_files: stats.data_files,
        small_files: stats.small_files,
        small_file_threshold_bytes: threshold,
        small_file_bytes: stats.small_file_bytes,
        data_bytes: stats.data_bytes,
        average_file_bytes: stats.average_file_bytes,
        file_size_buckets: stats.size_buckets,
        delete_files: stats.delete_files,
        manifests: stats.manifests,
        snapshots: md.snapshots().count() as u64,
        snapshots_since_compaction,
        last_compacted_ms,
        current_snapshot_id: md.current_snapshot_id(),
        properties_in_sync: drift.is_empty(),
        drifted_keys: drift.keys(),
        error,
    })
}

/// Sets the table gauges from a fresh status.
pub fn publish(metrics: &Metrics, s: &TableStatus) {
    let t = [s.table.as_str()];
    let m = metrics;
    m.init_table(&s.table);
    m.table_data_files
        .with_label_values(&t)
        .set(s.data_files as i64);
    m.table_small_files
        .with_label_values(&t)
        .set(s.small_files as i64);
    m.table_delete_files
        .with_label_values(&t)
        .set(s.delete_files as i64);
    m.table_snapshots
        .with_label_values(&t)
        .set(s.snapshots as i64);
    m.table_data_bytes
        .with_label_values(&t)
        .set(s.data_bytes as i64);
    m.table_average_file_bytes
        .with_label_values(&t)
        .set(s.average_file_bytes);
    m.table_drifted_properties
        .with_label_values(&t)
        .set(s.drifted_keys.len() as i64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn snapshots_since_compaction_count_back_to_the_newest_compaction() {
        for (chain, want) in [
            (vec![], (0, None)),
            (vec![(false, 3), (false, 2), (false, 1)], (3, None)),
            (vec![(true, 3), (false, 2)], (0, Some(3))),
            (
                vec![(false, 5), (false, 4), (true, 3), (true, 2)],
                (2, Some(3)),
            ),
        ] {
            assert_eq!(since_compaction(chain.clone()), want, "{chain:?}");
        }
    }

    #[test]
    fn threshold_follows_options_and_table() {
        let mut p = crate::policy::parse_policy(
            Path::new("p.toml"),
            "version = 1\ntables = [\"a.b\"]\n[compaction]\ntarget-file-size-bytes = 1000\n",
        )
        .unwrap()
        .0;
        let none = HashMap::new();
        assert_eq!(small_file_threshold(&p, &none), 750);
        p.compaction = None;
        assert_eq!(small_file_threshold(&p, &none), 402_653_184);
        let props = [(
            "write.target-file-size-bytes".to_string(),
            "100".to_string(),
        )]
        .into_iter()
        .collect();
        assert_eq!(small_file_threshold(&p, &props), 75);
    }
}
