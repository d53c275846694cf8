//! Logging set-up and every Prometheus metric icemaint exports, defined once here.
//!
//! Names carry the `icemaint_` prefix and their unit; labels are bounded: `table` ranges over the
//! watched tables, `kind` over the maintenance kinds, `outcome` over job outcomes, `file_kind`
//! over the kinds of files deleted, `operation` over catalog calls, `reason` over why jobs start
//! ([`JOB_REASONS`]).

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Installs the global `tracing` subscriber: `RUST_LOG`-style filter (default `info`), JSON lines
/// when `ICEMAINT_LOG_FORMAT=json`. The S3 request signer (`reqsign*`, under opendal) logs the
/// credentials it loads at debug level, so it is held at `warn` whatever `RUST_LOG` says: vended
/// or configured secrets never reach the log.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| {
            EnvFilter::new("info,iceberg=warn,opendal=warn,sqlx=warn,hyper=warn,reqwest=warn")
        })
        .add_directive("reqsign=warn".parse().expect("static directive"));
    let json = std::env::var("ICEMAINT_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Job kinds (`kind` label), as `JobKind::as_str` spells them.
pub const JOB_KINDS: &[&str] = &[
    "reconcile",
    "compaction",
    "expire",
    "remove-orphans",
    "rewrite-manifests",
];
/// Job outcomes (`outcome` label of `icemaint_jobs_total`), as `JobStatus::as_str` spells them.
pub const JOB_OUTCOMES: &[&str] = &["succeeded", "partial", "failed", "skipped"];
/// Kinds of deleted files (`file_kind` label).
pub const FILE_KINDS: &[&str] = &[
    "data",
    "delete",
    "manifest",
    "manifest_list",
    "metadata",
    "orphan",
];
/// Catalog calls counted by `icemaint_catalog_request_errors_total` (`operation` label).
pub const CATALOG_OPERATIONS: &[&str] = &["list_tables", "load_table"];
/// Why jobs start (`reason` label of `icemaint_job_starts_total`): the triggers
/// (`jobs::Trigger::as_str`) and the health conditions (`trigger::Condition::reason`).
pub const JOB_REASONS: &[&str] = &[
    "schedule",
    "manual",
    "startup",
    "trigger:small-files",
    "trigger:small-file-ratio",
    "trigger:average-file-size",
    "trigger:delete-files",
    "trigger:delete-file-ratio",
    "trigger:manifests",
    "trigger:snapshots",
];
/// Compaction file-group outcomes (`outcome` label of `icemaint_compaction_groups_total`).
pub const GROUP_OUTCOMES: &[&str] = &["planned", "committed", "failed", "conflict"];

/// All metrics, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub table_data_files: IntGaugeVec,
    pub table_small_files: IntGaugeVec,
    pub table_delete_files: IntGaugeVec,
    pub table_snapshots: IntGaugeVec,
    pub table_data_bytes: IntGaugeVec,
    pub table_average_file_bytes: GaugeVec,
    pub table_drifted_properties: IntGaugeVec,
    pub drift_detected_total: IntCounterVec,
    pub drift_corrected_total: IntCounterVec,
    pub jobs_total: IntCounterVec,
    pub job_duration_seconds: HistogramVec,
    pub last_success_timestamp_seconds: GaugeVec,
    pub catalog_request_errors_total: IntCounterVec,
    pub catalog_up: IntGauge,
    pub store_up: IntGauge,
    pub watched_tables: IntGauge,
    pub job_starts_total: IntCounterVec,
    pub due_tables: IntGauge,
    pub queued_jobs: IntGauge,
    pub compaction_bytes_read_total: IntCounterVec,
    pub compaction_bytes_written_total: IntCounterVec,
    pub compaction_files_read_total: IntCounterVec,
    pub compaction_files_written_total: IntCounterVec,
    pub compaction_groups_total: IntCounterVec,
    /// Bytes writers appended (snapshot summaries' `added-files-size` of non-`replace` snapshots),
    /// against which `icemaint_compaction_bytes_read_total` is the write amplification.
    pub writer_bytes_appended_total: IntCounterVec,
    pub compaction_hot_partitions_skipped_total: IntCounterVec,
    /// Per table, the sequence number through which writer appends were counted (see
    /// [`Metrics::count_writer_appends`]).
    writer_appends_counted:
        std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, i64>>>,
    pub commit_conflicts_total: IntCounterVec,
    pub commit_retries_total: IntCounterVec,
    pub snapshots_expired_total: IntCounterVec,
    pub files_deleted_total: IntCounterVec,
    pub deleted_bytes_total: IntCounterVec,
    pub orphan_files_found_total: IntCounterVec,
    pub manifests_rewritten_total: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn fgauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: Vec<f64>,
    labels: &[&str],
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric");
    r.register(Box::new(h.clone()))
        .expect("metric registered once");
    h
}

/// Label set of the per-table families.
const TABLE: &[&str] = &["table"];

// The families below are registered by `Metrics::new` in the order they are declared there, one
// function each, so every metric is still defined exactly once and each stays short to read.

/// Gauges describing a watched table's current state, set by reconciliation.
struct TableMetrics {
    data_files: IntGaugeVec,
    small_files: IntGaugeVec,
    delete_files: IntGaugeVec,
    snapshots: IntGaugeVec,
    data_bytes: IntGaugeVec,
    average_file_bytes: GaugeVec,
    drifted_properties: IntGaugeVec,
}

impl TableMetrics {
    fn register(r: &Registry) -> Self {
        Self {
            data_files: gauge_vec(
                r,
                "icemaint_table_data_files",
                "Live data files in the table's current snapshot.",
                TABLE,
            ),
            small_files: gauge_vec(
                r,
                "icemaint_table_small_files",
                "Live data files smaller than the policy's min-file-size-bytes.",
                TABLE,
            ),
            delete_files: gauge_vec(
                r,
                "icemaint_table_delete_files",
                "Live delete files in the table's current snapshot.",
                TABLE,
            ),
            snapshots: gauge_vec(
                r,
                "icemaint_table_snapshots",
                "Snapshots in the table's metadata.",
                TABLE,
            ),
            data_bytes: gauge_vec(
                r,
                "icemaint_table_data_bytes",
                "Bytes of live data files.",
                TABLE,
            ),
            average_file_bytes: fgauge_vec(
                r,
                "icemaint_table_average_file_bytes",
                "Average size of live data files.",
                TABLE,
            ),
            drifted_properties: gauge_vec(
                r,
                "icemaint_table_drifted_properties",
                "Desired properties (and format version) the table does not have right now.",
                TABLE,
            ),
        }
    }
}

/// Property drift found and corrected by reconciliation.
struct DriftMetrics {
    detected_total: IntCounterVec,
    corrected_total: IntCounterVec,
}

impl DriftMetrics {
    fn register(r: &Registry) -> Self {
        Self {
            detected_total: counter_vec(
                r,
                "icemaint_property_drift_detected_total",
                "Property differences found between a table and its policy.",
                TABLE,
            ),
            corrected_total: counter_vec(
                r,
                "icemaint_property_drift_corrected_total",
                "Property differences committed to the table.",
                TABLE,
            ),
        }
    }
}

/// Why jobs start, and the tables waiting for a compaction (triggers and the budget).
struct TriggerMetrics {
    job_starts_total: IntCounterVec,
    due_tables: IntGauge,
    queued_jobs: IntGauge,
}

impl TriggerMetrics {
    fn register(r: &Registry) -> Self {
        Self {
            job_starts_total: counter_vec(
                r,
                "icemaint_job_starts_total",
                "Maintenance jobs started, by why they started (schedule, manual, startup, trigger:<condition>).",
                &["kind", "reason"],
            ),
            due_tables: gauge(
                r,
                "icemaint_due_tables",
                "Watched tables due for a compaction (a trigger met and cooled down, or a schedule fired) that has not started yet.",
            ),
            queued_jobs: gauge(
                r,
                "icemaint_queued_jobs",
                "Due jobs waiting for the daemon's budget (max-concurrent-jobs, max-rewritten-bytes-per-hour).",
            ),
        }
    }
}

/// Maintenance job outcomes and timings.
struct JobMetrics {
    jobs_total: IntCounterVec,
    job_duration_seconds: HistogramVec,
    last_success_timestamp_seconds: GaugeVec,
}

impl JobMetrics {
    fn register(r: &Registry) -> Self {
        Self {
            jobs_total: counter_vec(
                r,
                "icemaint_jobs_total",
                "Finished maintenance jobs.",
                &["kind", "outcome"],
            ),
            job_duration_seconds: histogram_vec(
                r,
                "icemaint_job_duration_seconds",
                "Duration of maintenance jobs.",
                vec![
                    0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
                ],
                &["kind"],
            ),
            last_success_timestamp_seconds: fgauge_vec(
                r,
                "icemaint_last_success_timestamp_seconds",
                "Unix time of the last successful job per table and kind.",
                &["table", "kind"],
            ),
        }
    }
}

/// Health of the daemon's dependencies (catalog, state store) and the size of its watch list.
struct HealthMetrics {
    catalog_request_errors_total: IntCounterVec,
    catalog_up: IntGauge,
    store_up: IntGauge,
    watched_tables: IntGauge,
}

impl HealthMetrics {
    fn register(r: &Registry) -> Self {
        Self {
            catalog_request_errors_total: counter_vec(
                r,
                "icemaint_catalog_request_errors_total",
                "Failed catalog requests.",
                &["operation"],
            ),
            catalog_up: gauge(
                r,
                "icemaint_catalog_up",
                "1 when the last catalog check answered.",
            ),
            store_up: gauge(
                r,
                "icemaint_store_up",
                "1 when the last state store check answered.",
            ),
            watched_tables: gauge(r, "icemaint_watched_tables", "Tables selected by a policy."),
        }
    }
}

/// Work done by compaction, and the commit conflicts and retries it (mostly) runs into.
struct CompactionMetrics {
    bytes_read_total: IntCounterVec,
    bytes_written_total: IntCounterVec,
    files_read_total: IntCounterVec,
    files_written_total: IntCounterVec,
    groups_total: IntCounterVec,
    writer_bytes_appended_total: IntCounterVec,
    hot_partitions_skipped_total: IntCounterVec,
    commit_conflicts_total: IntCounterVec,
    commit_retries_total: IntCounterVec,
}

impl CompactionMetrics {
    fn register(r: &Registry) -> Self {
        Self {
            bytes_read_total: counter_vec(
                r,
                "icemaint_compaction_bytes_read_total",
                "Bytes of data files read by compaction.",
                TABLE,
            ),
            bytes_written_total: counter_vec(
                r,
                "icemaint_compaction_bytes_written_total",
                "Bytes of data files written by compaction.",
                TABLE,
            ),
            files_read_total: counter_vec(
                r,
                "icemaint_compaction_files_read_total",
                "Data files rewritten by compaction.",
                TABLE,
            ),
            files_written_total: counter_vec(
                r,
                "icemaint_compaction_files_written_total",
                "Data files written by compaction.",
                TABLE,
            ),
            groups_total: counter_vec(
                r,
                "icemaint_compaction_groups_total",
                "File groups by outcome (planned, committed, failed, conflict).",
                &["table", "outcome"],
            ),
            writer_bytes_appended_total: counter_vec(
                r,
                "icemaint_writer_bytes_appended_total",
                "Bytes of data files writers appended (non-replace snapshots) since the daemon started watching the table.",
                TABLE,
            ),
            hot_partitions_skipped_total: counter_vec(
                r,
                "icemaint_compaction_hot_partitions_skipped_total",
                "Hot partitions (hot-partition-age) only fragment-merged or left alone by a compaction.",
                TABLE,
            ),
            commit_conflicts_total: counter_vec(
                r,
                "icemaint_commit_conflicts_total",
                "Commits refused by validation against concurrent changes.",
                TABLE,
            ),
            commit_retries_total: counter_vec(
                r,
                "icemaint_commit_retries_total",
                "Commit attempts retried after a catalog conflict.",
                TABLE,
            ),
        }
    }
}

/// What snapshot expiry, orphan removal and manifest rewrite removed or replaced.
struct PruningMetrics {
    snapshots_expired_total: IntCounterVec,
    files_deleted_total: IntCounterVec,
    deleted_bytes_total: IntCounterVec,
    orphan_files_found_total: IntCounterVec,
    manifests_rewritten_total: IntCounterVec,
}

impl PruningMetrics {
    fn register(r: &Registry) -> Self {
        Self {
            snapshots_expired_total: counter_vec(
                r,
                "icemaint_snapshots_expired_total",
                "Snapshots removed by expiry.",
                TABLE,
            ),
            files_deleted_total: counter_vec(
                r,
                "icemaint_files_deleted_total",
                "Files deleted by maintenance, by kind (data, delete, manifest, manifest_list, metadata, orphan).",
                &["file_kind"],
            ),
            deleted_bytes_total: counter_vec(
                r,
                "icemaint_deleted_bytes_total",
                "Bytes deleted by maintenance, by kind.",
                &["file_kind"],
            ),
            orphan_files_found_total: counter_vec(
                r,
                "icemaint_orphan_files_found_total",
                "Files under a table location that no snapshot or metadata references.",
                TABLE,
            ),
            manifests_rewritten_total: counter_vec(
                r,
                "icemaint_manifests_rewritten_total",
                "Manifests replaced by manifest rewrite.",
                TABLE,
            ),
        }
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        // Sequential `let`s keep the registration order of the families.
        let table = TableMetrics::register(&r);
        let drift = DriftMetrics::register(&r);
        let jobs = JobMetrics::register(&r);
        let health = HealthMetrics::register(&r);
        let triggers = TriggerMetrics::register(&r);
        let compaction = CompactionMetrics::register(&r);
        let pruning = PruningMetrics::register(&r);
        let m = Self {
            table_data_files: table.data_files,
            table_small_files: table.small_files,
            table_delete_files: table.delete_files,
            table_snapshots: table.snapshots,
            table_data_bytes: table.data_bytes,
            table_average_file_bytes: table.average_file_bytes,
            table_drifted_properties: table.drifted_properties,
            drift_detected_total: drift.detected_total,
            drift_corrected_total: drift.corrected_total,
            jobs_total: jobs.jobs_total,
            job_duration_seconds: jobs.job_duration_seconds,
            last_success_timestamp_seconds: jobs.last_success_timestamp_seconds,
            catalog_request_errors_total: health.catalog_request_errors_total,
            catalog_up: health.catalog_up,
            store_up: health.store_up,
            watched_tables: health.watched_tables,
            job_starts_total: triggers.job_starts_total,
            due_tables: triggers.due_tables,
            queued_jobs: triggers.queued_jobs,
            compaction_bytes_read_total: compaction.bytes_read_total,
            compaction_bytes_written_total: compaction.bytes_written_total,
            compaction_files_read_total: compaction.files_read_total,
            compaction_files_written_total: compaction.files_written_total,
            compaction_groups_total: compaction.groups_total,
            writer_bytes_appended_total: compaction.writer_bytes_appended_total,
            compaction_hot_partitions_skipped_total: compaction.hot_partitions_skipped_total,
            writer_appends_counted: Default::default(),
            commit_conflicts_total: compaction.commit_conflicts_total,
            commit_retries_total: compaction.commit_retries_total,
            snapshots_expired_total: pruning.snapshots_expired_total,
            files_deleted_total: pruning.files_deleted_total,
            deleted_bytes_total: pruning.deleted_bytes_total,
            orphan_files_found_total: pruning.orphan_files_found_total,
            manifests_rewritten_total: pruning.manifests_rewritten_total,
            registry: r,
        };
        let build = gauge_vec(
            &m.registry,
            "icemaint_build_info",
            "Build information.",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        m.init_known_series();
        m
    }

    /// Creates the zero series of every label combination known up front. The text format omits a
    /// family without series (no `# TYPE` line either), so without this a counter that never fired
    /// is invisible: dashboards show "no data" instead of 0, `rate()` misses the first increment,
    /// and nothing tells a scraper the metric exists.
    fn init_known_series(&self) {
        for kind in JOB_KINDS {
            for outcome in JOB_OUTCOMES {
                self.jobs_total.with_label_values(&[kind, outcome]);
            }
            self.job_duration_seconds.with_label_values(&[kind]);
        }
        for reason in JOB_REASONS {
            let kinds = if reason.starts_with("trigger:") {
                &["compaction"][..]
            } else {
                JOB_KINDS
            };
            for kind in kinds {
                self.job_starts_total.with_label_values(&[kind, reason]);
            }
        }
        for kind in FILE_KINDS {
            self.files_deleted_total.with_label_values(&[kind]);
            self.deleted_bytes_total.with_label_values(&[kind]);
        }
        for op in CATALOG_OPERATIONS {
            self.catalog_request_errors_total.with_label_values(&[op]);
        }
    }

    /// Counts a job start of `kind` for `reason` (one of [`JOB_REASONS`]; anything else counts as
    /// `manual`, keeping the label bounded).
    pub fn count_start(&self, kind: &str, reason: &str) {
        let reason = if JOB_REASONS.contains(&reason) {
            reason
        } else {
            "manual"
        };
        self.job_starts_total
            .with_label_values(&[kind, reason])
            .inc();
    }

    /// Creates the zero series of a watched table's counters (see [`Metrics::init_known_series`]).
    /// `icemaint_last_success_timestamp_seconds` is left alone: a 0 there would read as "never
    /// succeeded" and fire the staleness alerts for a table that was only just discovered.
    pub fn init_table(&self, table: &str) {
        let t = [table];
        for c in [
            &self.drift_detected_total,
            &self.drift_corrected_total,
            &self.compaction_bytes_read_total,
            &self.compaction_bytes_written_total,
            &self.compaction_files_read_total,
            &self.compaction_files_written_total,
            &self.writer_bytes_appended_total,
            &self.compaction_hot_partitions_skipped_total,
            &self.commit_conflicts_total,
            &self.commit_retries_total,
            &self.snapshots_expired_total,
            &self.orphan_files_found_total,
            &self.manifests_rewritten_total,
        ] {
            c.with_label_values(&t);
        }
        for outcome in GROUP_OUTCOMES {
            self.compaction_groups_total
                .with_label_values(&[table, outcome]);
        }
    }

    /// Adds the writer appends of `snapshots` (`(sequence number, added bytes)` of the table's
    /// non-`replace` snapshots) not counted yet. The first call for a table only records where
    /// counting starts, so the counter covers what writers appended while the daemon watched,
    /// like the compaction counters it is compared with.
    pub fn count_writer_appends(&self, table: &str, snapshots: &[(i64, u64)]) {
        let newest = snapshots.iter().map(|(seq, _)| *seq).max();
        let mut counted = self
            .writer_appends_counted
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(newest) = newest else {
            return;
        };
        match counted.insert(table.to_string(), newest) {
            None => {}
            Some(through) => {
                let bytes: u64 = snapshots
                    .iter()
                    .filter(|(seq, _)| *seq > through)
                    .map(|(_, b)| *b)
                    .sum();
                counted.insert(table.to_string(), newest.max(through));
                self.writer_bytes_appended_total
                    .with_label_values(&[table])
                    .inc_by(bytes);
            }
        }
    }

    /// Drops the per-table series of a table that is no longer watched (keeps labels bounded).
    pub fn forget_table(&self, table: &str) {
        for g in [
            &self.table_data_files,
            &self.table_small_files,
            &self.table_delete_files,
            &self.table_snapshots,
            &self.table_data_bytes,
            &self.table_drifted_properties,
        ] {
            let _ = g.remove_label_values(&[table]);
        }
        let _ = self.table_average_file_bytes.remove_label_values(&[table]);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding never fails");
        String::from_utf8(buf).expect("prometheus text is utf-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_appends_are_counted_once_from_the_first_sight() {
        let m = Metrics::new();
        let c = || {
            m.writer_bytes_appended_total
                .with_label_values(&["t"])
                .get()
        };
        m.count_writer_appends("t", &[(1, 10), (2, 20)]);
        assert_eq!(c(), 0);
        m.count_writer_appends("t", &[(1, 10), (2, 20), (4, 40)]);
        assert_eq!(c(), 40);
        // Nothing new, or an older view of the table: nothing counted again.
        m.count_writer_appends("t", &[(1, 10), (2, 20), (4, 40)]);
        m.count_writer_appends("t", &[(2, 20)]);
        m.count_writer_appends("t", &[]);
        m.count_writer_appends("t", &[(5, 5), (6, 6)]);
        assert_eq!(c(), 51);
    }

    #[test]
    fn names_are_prefixed_and_rendered() {
        let m = Metrics::new();
        m.table_data_files.with_label_values(&["m.t"]).set(3);
        m.jobs_total
            .with_label_values(&["compaction", "succeeded"])
            .inc();
        let text = m.render();
        assert!(
            text.contains("icemaint_table_data_files{table=\"m.t\"} 3"),
            "{text}"
        );
        assert!(text.contains("icemaint_jobs_total{kind=\"compaction\",outcome=\"succeeded\"} 1"));
        for fam in m.registry.gather() {
            assert!(fam.name().starts_with("icemaint_"), "{}", fam.name());
        }
        m.forget_table("m.t");
        assert!(!m.render().contains("table=\"m.t\""));
    }

    /// Every family is exported (with a `# TYPE` line) once a table is watched.
    #[test]
    fn every_family_has_a_series_once_a_table_is_watched() {
        let m = Metrics::new();
        m.init_table("m.t");
        m.last_success_timestamp_seconds
            .with_label_values(&["m.t", "reconcile"])
            .set(1.0);
        m.table_data_files.with_label_values(&["m.t"]).set(0);
        let text = m.render();
        let declared = |name: &str| text.contains(&format!("# TYPE {name} "));
        for name in [
            "icemaint_jobs_total",
            "icemaint_job_duration_seconds",
            "icemaint_files_deleted_total",
            "icemaint_deleted_bytes_total",
            "icemaint_catalog_request_errors_total",
            "icemaint_commit_conflicts_total",
            "icemaint_compaction_groups_total",
            "icemaint_compaction_bytes_written_total",
            "icemaint_property_drift_corrected_total",
        ] {
            assert!(declared(name), "{name} not declared:\n{text}");
        }
        assert!(text.contains("icemaint_jobs_total{kind=\"compaction\",outcome=\"failed\"} 0"));
    }

    /// The label lists match the enums they mirror; the exhaustive matches fail to compile when a
    /// variant is added, which is the reminder to extend the list.
    #[test]
    fn label_lists_match_the_job_model() {
        use crate::jobs::{JobKind, JobStatus};
        let kinds = [
            JobKind::Reconcile,
            JobKind::Compaction,
            JobKind::Expire,
            JobKind::RemoveOrphans,
            JobKind::RewriteManifests,
        ];
        for k in kinds {
            match k {
                JobKind::Reconcile
                | JobKind::Compaction
                | JobKind::Expire
                | JobKind::RemoveOrphans
                | JobKind::RewriteManifests => assert!(JOB_KINDS.contains(&k.as_str())),
            }
        }
        assert_eq!(JOB_KINDS.len(), kinds.len());
        let outcomes = [
            JobStatus::Succeeded,
            JobStatus::Partial,
            JobStatus::Failed,
            JobStatus::Skipped,
        ];
        for s in outcomes {
            match s {
                JobStatus::Succeeded
                | JobStatus::Partial
                | JobStatus::Failed
                | JobStatus::Skipped => assert!(JOB_OUTCOMES.contains(&s.as_str())),
            }
        }
        assert_eq!(JOB_OUTCOMES.len(), outcomes.len());
    }
}
