//! The application: the shared [`Context`] (configuration, catalog, store, metrics, jobs,
//! policies, cached table status) and the entry points behind each CLI command.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::catalog::CommitBackend;
use crate::catalog::stats::{SIZE_BUCKETS, file_stats};
use crate::catalog::{CatalogError, CatalogHandle};
use crate::compaction::{self, CompactionError};
use crate::config::Config;
use crate::jobs::{JobKind, JobOutcome, JobStatus, Jobs, ProgressSink, StartError, Trigger};
use crate::maintenance::properties::{self, Drift, format_version_number};
use crate::maintenance::{self, Overrides};
use crate::policy::{Policy, PolicyError, PolicySet};
use crate::store::{PropertyChange, Store};
use crate::telemetry::Metrics;

/// What `icemaint tables` and `GET /api/v1/tables` report for one watched table.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TableStatus {
    pub table: String,
    pub policy: String,
    pub format_version: Option<u8>,
    pub data_files: u64,
    pub small_files: u64,
    pub small_file_threshold_bytes: u64,
    pub data_bytes: u64,
    pub average_file_bytes: f64,
    /// Live data files per size bucket (`catalog::stats::SIZE_BUCKET_UPPER_BYTES`).
    pub file_size_buckets: [u64; SIZE_BUCKETS],
    pub delete_files: u64,
    pub manifests: u64,
    pub snapshots: u64,
    pub current_snapshot_id: Option<i64>,
    pub properties_in_sync: bool,
    pub drifted_keys: Vec<String>,
    pub error: Option<String>,
}

/// Readiness as last checked in the background.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Readiness {
    pub catalog: bool,
    pub store: bool,
    pub reason: Option<String>,
    pub checked_ms: i64,
}

/// Everything the daemon's tasks share.
#[derive(Debug)]
pub struct Context {
    pub config: Config,
    pub catalog: CatalogHandle,
    pub store: Store,
    pub metrics: Metrics,
    pub jobs: Arc<Jobs>,
    policies: RwLock<Arc<PolicySet>>,
    tables: RwLock<BTreeMap<String, TableStatus>>,
    readiness: RwLock<Readiness>,
    pub shutdown: CancellationToken,
}

/// The small-file threshold of a policy: `min-file-size-bytes`, else 75% of the target
/// (`target-file-size-bytes`, else the table's `write.target-file-size-bytes`, else 512 MiB).
pub fn small_file_threshold(
    policy: &Policy,
    table_props: &std::collections::HashMap<String, String>,
) -> u64 {
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

impl Context {
    /// Connects to the catalog and the store, runs migrations and loads the policies.
    pub async fn new(config: Config) -> anyhow::Result<Arc<Self>> {
        let policies = PolicySet::load_dir(&config.policies.dir)?;
        let store = Store::connect(&config.store.url).await?;
        let catalog = CatalogHandle::connect(&config.catalog).await?;
        let metrics = Metrics::new();
        let jobs = Jobs::new(store.clone(), metrics.clone());
        Ok(Arc::new(Self {
            config,
            catalog,
            store,
            metrics,
            jobs,
            policies: RwLock::new(Arc::new(policies)),
            tables: RwLock::new(BTreeMap::new()),
            readiness: RwLock::new(Readiness::default()),
            shutdown: CancellationToken::new(),
        }))
    }

    pub fn policies(&self) -> Arc<PolicySet> {
        Arc::clone(&self.policies.read().expect("not poisoned"))
    }

    /// Re-reads the policy directory; on error the old policies stay in force.
    pub fn reload_policies(&self) -> Result<usize, PolicyError> {
        let set = PolicySet::load_dir(&self.config.policies.dir)?;
        let n = set.policies.len();
        *self.policies.write().expect("not poisoned") = Arc::new(set);
        tracing::info!(policies = n, "policies reloaded");
        Ok(n)
    }

    pub fn readiness(&self) -> Readiness {
        self.readiness.read().expect("not poisoned").clone()
    }

    /// The cached status of every watched table (refreshed in the background).
    pub fn cached_tables(&self) -> Vec<TableStatus> {
        self.tables
            .read()
            .expect("not poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// Watched tables with their policy: every catalog table some policy selects.
    pub async fn watched_tables(&self) -> Result<Vec<(String, Policy)>, CatalogError> {
        let names = self.catalog.list_tables().await.inspect_err(|_| {
            self.metrics
                .catalog_request_errors_total
                .with_label_values(&["list_tables"])
                .inc();
        })?;
        let policies = self.policies();
        Ok(names
            .into_iter()
            .filter_map(|n| policies.resolve(&n).cloned().map(|p| (n, p)))
            .collect())
    }

    /// The policy governing `table`, or `None` when no policy selects it.
    pub fn policy_for(&self, table: &str) -> Option<Policy> {
        self.policies().resolve(table).cloned()
    }

    /// Loads `table` and computes its status against `policy`.
    pub async fn inspect(&self, table: &str, policy: &Policy) -> Result<TableStatus, CatalogError> {
        let t = self.catalog.load(table).await.inspect_err(|e| {
            if !matches!(e, CatalogError::TableNotFound(_)) {
                self.metrics
                    .catalog_request_errors_total
                    .with_label_values(&["load_table"])
                    .inc();
            }
        })?;
        let md = t.metadata();
        let threshold = small_file_threshold(policy, md.properties());
        let drift = properties::table_drift(&t, policy);
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
            data_bytes: stats.data_bytes,
            average_file_bytes: stats.average_file_bytes,
            file_size_buckets: stats.size_buckets,
            delete_files: stats.delete_files,
            manifests: stats.manifests,
            snapshots: md.snapshots().count() as u64,
            current_snapshot_id: md.current_snapshot_id(),
            properties_in_sync: drift.is_empty(),
            drifted_keys: drift.keys(),
            error,
        })
    }

    fn publish(&self, s: &TableStatus) {
        let t = [s.table.as_str()];
        let m = &self.metrics;
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

    /// Re-inspects one table after a job changed it, so gauges do not wait for the next refresh.
    pub async fn refresh_table(&self, table: &str, policy: &Policy) {
        if let Ok(s) = self.inspect(table, policy).await {
            self.publish(&s);
            self.tables
                .write()
                .expect("not poisoned")
                .insert(table.to_string(), s);
        }
    }

    /// Re-checks readiness and refreshes every watched table's status and gauges.
    pub async fn refresh(&self) {
        let store_ok = self.store.ping().await;
        let watched = self.watched_tables().await;
        let mut reasons = Vec::new();
        if let Err(e) = &store_ok {
            reasons.push(e.to_string());
        }
        if let Err(e) = &watched {
            reasons.push(e.to_string());
        }
        {
            let mut r = self.readiness.write().expect("not poisoned");
            r.store = store_ok.is_ok();
            r.catalog = watched.is_ok();
            r.reason = (!reasons.is_empty()).then(|| reasons.join("; "));
            r.checked_ms = chrono::Utc::now().timestamp_millis();
        }
        self.metrics.store_up.set(i64::from(store_ok.is_ok()));
        self.metrics.catalog_up.set(i64::from(watched.is_ok()));
        let Ok(watched) = watched else { return };
        self.metrics.watched_tables.set(watched.len() as i64);
        let mut fresh = BTreeMap::new();
        for (name, policy) in &watched {
            match self.inspect(name, policy).await {
                Ok(s) => {
                    self.publish(&s);
                    fresh.insert(name.clone(), s);
                }
                // A table that vanished or fails to load is reported and skipped, never fatal.
                Err(e) => {
                    tracing::warn!(table = name, error = %e, "table could not be inspected");
                    fresh.insert(
                        name.clone(),
                        TableStatus {
                            table: name.clone(),
                            policy: policy.name.clone(),
                            format_version: None,
                            data_files: 0,
                            small_files: 0,
                            small_file_threshold_bytes: 0,
                            data_bytes: 0,
                            average_file_bytes: 0.0,
                            file_size_buckets: [0; SIZE_BUCKETS],
                            delete_files: 0,
                            manifests: 0,
                            snapshots: 0,
                            current_snapshot_id: None,
                            properties_in_sync: false,
                            drifted_keys: vec![],
                            error: Some(e.to_string()),
                        },
                    );
                }
            }
        }
        let mut tables = self.tables.write().expect("not poisoned");
        for gone in tables.keys().filter(|k| !fresh.contains_key(*k)) {
            self.metrics.forget_table(gone);
        }
        *tables = fresh;
    }

    /// Starts a job of `kind` on `table` in the background; returns its id.
    pub async fn trigger(
        self: &Arc<Self>,
        table: &str,
        kind: JobKind,
        trigger: Trigger,
    ) -> Result<String, StartError> {
        self.trigger_with(table, kind, trigger, BTreeMap::new())
            .await
    }

    /// [`Context::trigger`] with option overrides (compaction options from the API).
    pub async fn trigger_with(
        self: &Arc<Self>,
        table: &str,
        kind: JobKind,
        trigger: Trigger,
        overrides: BTreeMap<String, String>,
    ) -> Result<String, StartError> {
        let handle = self.jobs.begin(table, kind, trigger).await?;
        let id = handle.id.clone();
        let ctx = Arc::clone(self);
        let table = table.to_string();
        let sink = handle.progress_sink();
        self.jobs.spawn(handle, async move {
            ctx.execute(&table, kind, &sink, &overrides).await
        });
        Ok(id)
    }

    /// Runs a job of `kind` on `table` (the caller holds the table's job lock).
    pub async fn execute(
        self: &Arc<Self>,
        table: &str,
        kind: JobKind,
        progress: &ProgressSink,
        overrides: &BTreeMap<String, String>,
    ) -> JobOutcome {
        let Some(policy) = self.policy_for(table) else {
            return JobOutcome::failed(
                format!("table {table} is not selected by any policy"),
                serde_json::json!({}),
            );
        };
        match kind {
            JobKind::Reconcile => self.reconcile(table, &policy).await,
            JobKind::Compaction => {
                let sink = progress.clone();
                let report = Box::new(move |r: &compaction::Report| {
                    sink.report(serde_json::json!({ "progress": r }))
                });
                self.compact(table, &policy, &progress.job_id, overrides, report)
                    .await
            }
            JobKind::RewriteManifests => {
                self.rewrite_manifests(table, &policy, &progress.job_id)
                    .await
            }
            JobKind::Expire | JobKind::RemoveOrphans => {
                self.execute_with(table, kind, &Overrides::default()).await
            }
        }
    }

    /// The policy's compaction options (empty when the policy has no `[compaction]`).
    pub fn compaction_options(policy: &Policy) -> BTreeMap<String, String> {
        policy
            .compaction
            .as_ref()
            .map(|c| c.options.clone())
            .unwrap_or_default()
    }

    /// Plans `table` without writing anything (`--dry-run`, `POST .../plan`).
    pub async fn plan(
        &self,
        table: &str,
        policy: &Policy,
        overrides: &BTreeMap<String, String>,
    ) -> Result<compaction::Prepared, CompactionError> {
        compaction::prepare(
            &self.catalog,
            table,
            &Self::compaction_options(policy),
            overrides,
        )
        .await
    }

    /// Binpack-compacts `table` and commits `replace` snapshots.
    pub async fn compact(
        &self,
        table: &str,
        policy: &Policy,
        job_id: &str,
        overrides: &BTreeMap<String, String>,
        on_progress: Box<dyn Fn(&compaction::Report) + Send + Sync + '_>,
    ) -> JobOutcome {
        let backend: Arc<dyn CommitBackend> = match self.catalog.committer().await {
            Ok(b) => b,
            Err(e) => return JobOutcome::failed(e.to_string(), serde_json::json!({})),
        };
        if let Err(e) = self.upgrade_format_for_compaction(table, policy).await {
            return JobOutcome::failed(e, serde_json::json!({}));
        }
        let prepared = match self.plan(table, policy, overrides).await {
            Ok(p) => p,
            Err(e) => return JobOutcome::failed(e.to_string(), serde_json::json!({})),
        };
        if prepared.plan.groups.is_empty() {
            let detail = serde_json::json!({
                "plan": prepared.plan,
                "reason": "nothing to compact",
            });
            return JobOutcome {
                status: JobStatus::Skipped,
                detail,
                error: None,
            };
        }
        let env = compaction::Env {
            catalog: &self.catalog,
            backend,
            metrics: &self.metrics,
            cancel: self.shutdown.child_token(),
            job_id: job_id.to_string(),
            progress: on_progress,
        };
        let outcome = match compaction::execute(&env, prepared).await {
            Ok(report) => {
                let detail = serde_json::to_value(&report).expect("serializable");
                let status = if report.groups_committed == report.groups_planned {
                    JobStatus::Succeeded
                } else if report.groups_committed > 0 {
                    JobStatus::Partial
                } else {
                    JobStatus::Failed
                };
                JobOutcome {
                    status,
                    error: (!report.errors.is_empty()).then(|| report.errors.join("; ")),
                    detail,
                }
            }
            Err(e) => JobOutcome::failed(e.to_string(), serde_json::json!({})),
        };
        self.refresh_table(table, policy).await;
        outcome
    }

    /// Rewrites the table's manifests when the policy's `[manifests]` thresholds say so.
    pub async fn rewrite_manifests(
        &self,
        table: &str,
        policy: &Policy,
        job_id: &str,
    ) -> JobOutcome {
        use crate::maintenance::manifests::{ManifestSettings, rewrite_manifests};
        let Some(mp) = &policy.manifests else {
            return JobOutcome {
                status: JobStatus::Skipped,
                detail: serde_json::json!({"reason": "the policy has no [manifests] section"}),
                error: None,
            };
        };
        let t = match self.catalog.load(table).await {
            Ok(t) => t,
            Err(e) => return JobOutcome::failed(e.to_string(), serde_json::json!({})),
        };
        let backend = match self.catalog.committer().await {
            Ok(b) => b,
            Err(e) => return JobOutcome::failed(e.to_string(), serde_json::json!({})),
        };
        let settings = ManifestSettings::resolve(
            mp.min_manifests,
            mp.target_size_bytes,
            t.metadata().properties(),
        );
        let outcome = match rewrite_manifests(&self.catalog, backend.as_ref(), &t, settings, job_id)
            .await
        {
            Ok(None) => JobOutcome {
                status: JobStatus::Skipped,
                detail: serde_json::json!({"reason": "manifests are within the policy's thresholds", "settings": settings}),
                error: None,
            },
            Ok(Some(report)) => {
                self.metrics
                    .manifests_rewritten_total
                    .with_label_values(&[table])
                    .inc_by(report.manifests_replaced as u64);
                JobOutcome::ok(serde_json::to_value(report).expect("serializable"))
            }
            Err(e) => JobOutcome::failed(e.to_string(), serde_json::json!({"settings": settings})),
        };
        self.refresh_table(table, policy).await;
        outcome
    }

    /// Like [`Context::trigger`] for expiry and orphan removal, with per-run overrides of the policy
    /// (API bodies).
    pub async fn trigger_maintenance(
        self: &Arc<Self>,
        table: &str,
        kind: JobKind,
        trigger: Trigger,
        overrides: Overrides,
    ) -> Result<String, StartError> {
        let handle = self.jobs.begin(table, kind, trigger).await?;
        let id = handle.id.clone();
        let ctx = Arc::clone(self);
        let table = table.to_string();
        self.jobs.spawn(handle, async move {
            ctx.execute_with(&table, kind, &overrides).await
        });
        Ok(id)
    }

    /// Runs expiry or orphan removal on `table` (the caller holds its job lock) with `overrides`
    /// on top of the policy, then refreshes the table's status.
    pub async fn execute_with(
        &self,
        table: &str,
        kind: JobKind,
        overrides: &Overrides,
    ) -> JobOutcome {
        let Some(policy) = self.policy_for(table) else {
            return JobOutcome::failed(
                format!("table {table} is not selected by any policy"),
                serde_json::json!({}),
            );
        };
        let outcome = maintenance::run(
            &self.catalog,
            &self.metrics,
            table,
            &policy,
            kind,
            overrides,
        )
        .await;
        if matches!(outcome.status, JobStatus::Succeeded | JobStatus::Partial) {
            self.refresh_table(table, &policy).await;
        }
        outcome
    }

    /// Compaction commits v2 snapshots only. When the policy asks for a format version the table
    /// has not reached yet (e.g. a v1 table whose policy says `format-version = 2`, before the
    /// reconciler got to it), the upgrade is committed first: a metadata-only change the policy
    /// already asks for, recorded like a reconciliation. Other property drift is left to the
    /// reconciler.
    async fn upgrade_format_for_compaction(
        &self,
        table: &str,
        policy: &Policy,
    ) -> Result<(), String> {
        let t = self.catalog.load(table).await.map_err(|e| e.to_string())?;
        let Some(versions) = properties::table_drift(&t, policy).format_version else {
            return Ok(());
        };
        let upgrade = Drift {
            properties: Vec::new(),
            format_version: Some(versions),
        };
        properties::reconcile(&self.catalog, &t, &upgrade)
            .await
            .map_err(|e| {
                format!(
                    "upgrading to format version {} before compacting: {e}",
                    versions.1
                )
            })?;
        tracing::info!(
            table,
            from = versions.0,
            to = versions.1,
            "format version upgraded (policy) before compaction"
        );
        self.record_changes(table, &upgrade).await;
        Ok(())
    }

    /// Compares the table's properties with its policy and commits the difference.
    pub async fn reconcile(&self, table: &str, policy: &Policy) -> JobOutcome {
        let t = match self.catalog.load(table).await {
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
        self.metrics
            .drift_detected_total
            .with_label_values(&label)
            .inc_by(drift.len() as u64);
        tracing::info!(table, policy = policy.name, keys = ?drift.keys(), "property drift detected");
        match properties::reconcile(&self.catalog, &t, &drift).await {
            Ok(_) => {
                self.metrics
                    .drift_corrected_total
                    .with_label_values(&label)
                    .inc_by(drift.len() as u64);
                self.record_changes(table, &drift).await;
                self.refresh_table(table, policy).await;
                JobOutcome::ok(serde_json::json!({"drift": drift, "corrected": drift.keys()}))
            }
            Err(e) => JobOutcome::failed(e.to_string(), serde_json::json!({"drift": drift})),
        }
    }

    async fn record_changes(&self, table: &str, drift: &Drift) {
        let now = chrono::Utc::now().timestamp_millis();
        let job_id = self.jobs.running_on(table);
        let mut changes: Vec<PropertyChange> = drift
            .properties
            .iter()
            .map(|d| PropertyChange {
                table: table.to_string(),
                key: d.key.clone(),
                old: d.current.clone(),
                new: Some(d.desired.clone()),
                changed_ms: now,
                job_id: job_id.clone(),
            })
            .collect();
        if let Some((old, new)) = drift.format_version {
            changes.push(PropertyChange {
                table: table.to_string(),
                key: "format-version".into(),
                old: Some(old.to_string()),
                new: Some(new.to_string()),
                changed_ms: now,
                job_id: job_id.clone(),
            });
        }
        for c in changes {
            if let Err(e) = self.store.record_property_change(&c).await {
                tracing::warn!(table, key = c.key, error = %e, "recording property change failed");
            }
        }
    }
}

/// `icemaint check`: validates the config and every policy file; all problems at once.
pub fn check(config_path: &Path) -> Result<String, Vec<String>> {
    let config = Config::load(config_path).map_err(|e| vec![e.to_string()])?;
    match PolicySet::load_dir(&config.policies.dir) {
        Ok(set) => Ok(format!(
            "{}: ok ({} policies: {})",
            config_path.display(),
            set.policies.len(),
            set.policies
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Err(e) => Err(e.problems().iter().map(|p| p.to_string()).collect()),
    }
}

/// `icemaint tables`: the status of every watched table.
pub async fn tables(config_path: &Path) -> anyhow::Result<Vec<TableStatus>> {
    let config = Config::load(config_path)?;
    let ctx = Context::new(config).await?;
    let watched = ctx.watched_tables().await?;
    let mut out = Vec::new();
    for (name, policy) in watched {
        match ctx.inspect(&name, &policy).await {
            Ok(s) => out.push(s),
            Err(e) => tracing::warn!(table = name, error = %e, "table could not be inspected"),
        }
    }
    Ok(out)
}

/// Parses `--option key=value` arguments.
pub fn parse_option_args(args: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    args.iter()
        .map(|a| {
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--option '{a}': expected key=value"))?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// `icemaint compact`: plans (and unless `dry_run`, runs as a job) a compaction of one table.
/// Returns the JSON result and whether the job succeeded.
pub async fn compact_once(
    config_path: &Path,
    table: &str,
    dry_run: bool,
    options: &[String],
    show_progress: bool,
) -> anyhow::Result<(serde_json::Value, bool)> {
    let overrides = parse_option_args(options)?;
    let config = Config::load(config_path)?;
    crate::catalog::parse_ident(table)?;
    let ctx = Context::new(config).await?;
    let policy = ctx.policy_for(table).ok_or_else(|| {
        anyhow::anyhow!(
            "table {table} is not watched by any policy in {}",
            ctx.config.policies.dir.display()
        )
    })?;
    if dry_run {
        let prepared = ctx.plan(table, &policy, &overrides).await?;
        return Ok((serde_json::to_value(prepared.view())?, true));
    }
    // Bad input (option values, the `where` filter's columns, a missing table) fails before a
    // job is recorded.
    compaction::check_request(
        &ctx.catalog,
        table,
        &Context::compaction_options(&policy),
        &overrides,
    )
    .await?;
    let handle = ctx
        .jobs
        .begin(table, JobKind::Compaction, Trigger::Manual)
        .await?;
    let job_id = handle.id.clone();
    let bar = show_progress.then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} groups {msg}",
            )
            .expect("valid template"),
        );
        b
    });
    let bar_ref = bar.clone();
    let sink = handle.progress_sink();
    let on_progress = Box::new(move |r: &compaction::Report| {
        if let Some(b) = &bar_ref {
            b.set_length(r.groups_planned as u64);
            b.set_position((r.groups_rewritten + r.groups_failed) as u64);
            b.set_message(format!(
                "{} committed, {} in",
                r.groups_committed,
                human_bytes(r.bytes_read)
            ));
        }
        sink.report(serde_json::json!({ "progress": r }));
    });
    let ctx2 = Arc::clone(&ctx);
    let outcome = ctx
        .jobs
        .run(handle, async {
            ctx2.compact(table, &policy, &job_id, &overrides, on_progress)
                .await
        })
        .await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let ok = matches!(outcome.status, JobStatus::Succeeded | JobStatus::Skipped);
    let mut v = serde_json::json!({
        "job_id": job_id,
        "status": outcome.status.as_str(),
        "result": outcome.detail,
    });
    if let Some(e) = outcome.error {
        v["error"] = serde_json::Value::String(e);
    }
    Ok((v, ok))
}

/// Runs one maintenance job of `kind` on `table` now, in this process, under the table's job
/// lock (so it never overlaps a running daemon's job on that table).
pub async fn run_job_once(
    config_path: &Path,
    table: &str,
    kind: JobKind,
    overrides: &BTreeMap<String, String>,
) -> anyhow::Result<(serde_json::Value, bool)> {
    let config = Config::load(config_path)?;
    crate::catalog::parse_ident(table)?;
    let ctx = Context::new(config).await?;
    if ctx.policy_for(table).is_none() {
        anyhow::bail!(
            "table {table} is not watched by any policy in {}",
            ctx.config.policies.dir.display()
        );
    }
    ctx.catalog.load(table).await?;
    let handle = ctx.jobs.begin(table, kind, Trigger::Manual).await?;
    let job_id = handle.id.clone();
    let sink = handle.progress_sink();
    let outcome = ctx
        .jobs
        .run(handle, ctx.execute(table, kind, &sink, overrides))
        .await;
    let ok = matches!(outcome.status, JobStatus::Succeeded | JobStatus::Skipped);
    let mut v = serde_json::json!({
        "job_id": job_id,
        "kind": kind.as_str(),
        "status": outcome.status.as_str(),
        "result": outcome.detail,
    });
    if let Some(e) = outcome.error {
        v["error"] = serde_json::Value::String(e);
    }
    Ok((v, ok))
}

/// One line per table for `icemaint tables`.
pub fn format_table_line(s: &TableStatus) -> String {
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

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

/// `icemaint serve`: runs the daemon until SIGTERM / Ctrl-C.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.server.listen.clone();
    let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
    let ctx = Context::new(config).await?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, tables_policies = ctx.policies().policies.len(), "icemaint serving");
    run(ctx, listener, grace).await
}

/// Runs the server, refresher and scheduler on `listener` until the context's shutdown token is
/// cancelled (signals cancel it), then drains jobs for at most `grace`.
pub async fn run(
    ctx: Arc<Context>,
    listener: tokio::net::TcpListener,
    grace: Duration,
) -> anyhow::Result<()> {
    let mut tasks: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();
    let token = ctx.shutdown.clone();
    {
        let token = token.clone();
        tasks.spawn(async move { ("signals", wait_for_signals(token).await) });
    }
    {
        let ctx = Arc::clone(&ctx);
        tasks.spawn(async move { ("signals-hup", reload_on_sighup(ctx).await) });
    }
    {
        let app = crate::server::router(Arc::clone(&ctx));
        let token = token.clone();
        tasks.spawn(async move {
            let r = axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await
                .map_err(anyhow::Error::from);
            ("http", r)
        });
    }
    {
        let ctx = Arc::clone(&ctx);
        tasks.spawn(async move { ("scheduler", crate::scheduler::run(ctx).await) });
    }
    {
        let ctx = Arc::clone(&ctx);
        tasks.spawn(async move { ("job-sweeper", sweep_abandoned_jobs(ctx).await) });
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((name, Ok(()))) => tracing::debug!(task = name, "task finished"),
            Ok((name, Err(e))) => {
                tracing::error!(task = name, error = %e, "task failed; shutting down");
                first_error.get_or_insert(e);
                token.cancel();
            }
            Err(e) if e.is_panic() => {
                tracing::error!(error = %e, "task panicked; shutting down");
                token.cancel();
            }
            Err(_) => {}
        }
        if token.is_cancelled() && tasks.len() <= 1 {
            // Only the signal watcher may remain; it ends on cancellation too.
            tasks.abort_all();
        }
    }
    tracing::info!(grace_seconds = grace.as_secs(), "draining running jobs");
    if !ctx.jobs.drain(grace).await {
        tracing::warn!(
            "jobs still running after the grace period; exiting (commits already sent are not cut off)"
        );
    }
    tracing::info!("icemaint stopped");
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Fails the jobs of processes that died (this one's predecessor, a crashed CLI run, another
/// replica) so the job history does not show them running forever. A
/// store error is logged and retried at the next tick: it must not stop the daemon.
async fn sweep_abandoned_jobs(ctx: Arc<Context>) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(crate::jobs::Jobs::sweep_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = ctx.jobs.fail_abandoned().await {
                    tracing::warn!(error = %e, "looking for abandoned jobs failed");
                }
            }
            _ = ctx.shutdown.cancelled() => return Ok(()),
        }
    }
}

async fn wait_for_signals(token: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received; shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
        _ = token.cancelled() => {}
    }
    token.cancel();
    Ok(())
}

async fn reload_on_sighup(ctx: Arc<Context>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                if let Err(e) = ctx.reload_policies() {
                    tracing::error!(error = %e, "policy reload failed; keeping the old policies");
                }
            }
            _ = ctx.shutdown.cancelled() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(1536), "1.5KiB");
        assert_eq!(human_bytes(536_870_912), "512.0MiB");
    }

    #[test]
    fn threshold_follows_options_and_table() {
        let mut p = crate::policy::parse_policy(
            Path::new("p.toml"),
            "version = 1\ntables = [\"a.b\"]\n[compaction]\ntarget-file-size-bytes = 1000\n",
        )
        .unwrap()
        .0;
        let none = std::collections::HashMap::new();
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
