//! The daemon's shared state: [`Context`] holds the configuration, the catalog handle, the state
//! store, the metrics, the job registry, the policies (reloadable), the cached status of every
//! watched table and the readiness last checked.
//!
//! It owns state, not work: no job logic lives here. Jobs start through [`crate::dispatch`];
//! the serve runtime ([`crate::runtime`]) owns the tasks and the shutdown. The only I/O here is
//! the background refresh of readiness and the table cache (catalog reads, never writes).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::catalog::{CatalogError, CatalogHandle};
use crate::config::Config;
use crate::inspect::{self, TableStatus};
use crate::jobs::{self, Jobs};
use crate::policy::{Policy, PolicyError, PolicySet};
use crate::store::{JobRecord, Store};
use crate::telemetry::Metrics;

/// Readiness as last checked in the background.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Readiness {
    pub catalog: bool,
    pub store: bool,
    pub reason: Option<String>,
    pub checked_ms: i64,
}

/// Whether a watched table is due for a compaction, and why (not), as the scheduler last saw it
/// (the status page shows it).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Watch {
    /// `due`, `queued`, `cooling-down`, `healthy`, `schedule-only` or `disabled`.
    pub state: &'static str,
    /// Which trigger holds (with what was measured), until when it cools down, what it waits
    /// for, or the schedule it follows.
    pub why: String,
    /// When the table was last compacted (its newest compaction snapshot, or the last
    /// compaction job started), ms since the epoch.
    pub last_compacted_ms: Option<i64>,
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
    watch: RwLock<BTreeMap<String, Watch>>,
    /// Due jobs this replica's scheduler holds back (the budget, a busy table): `queued`.
    queued: RwLock<Vec<JobRecord>>,
    readiness: RwLock<Readiness>,
    /// The root token: cancelled on SIGTERM/Ctrl-C or when a task fails.
    pub shutdown: CancellationToken,
}

impl Context {
    /// Connects to the catalog and the store, runs migrations and loads the policies.
    pub async fn new(config: Config) -> anyhow::Result<Arc<Self>> {
        let policies = PolicySet::load_dir(&config.policies.dir)?;
        let store = Store::connect(&config.store.url).await?;
        let catalog = CatalogHandle::connect(&config.catalog).await?;
        let metrics = Metrics::new();
        let shutdown = CancellationToken::new();
        let lease = config.server.lease_seconds.max(jobs::MIN_LEASE_SECONDS);
        let jobs = Jobs::new(
            store.clone(),
            metrics.clone(),
            Duration::from_secs(lease),
            shutdown.clone(),
        );
        Ok(Arc::new(Self {
            config,
            catalog,
            store,
            metrics,
            jobs,
            policies: RwLock::new(Arc::new(policies)),
            tables: RwLock::new(BTreeMap::new()),
            watch: RwLock::new(BTreeMap::new()),
            queued: RwLock::new(Vec::new()),
            readiness: RwLock::new(Readiness::default()),
            shutdown,
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

    /// The policy governing `table`, or `None` when no policy selects it.
    pub fn policy_for(&self, table: &str) -> Option<Policy> {
        self.policies().resolve(table).cloned()
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

    /// Each watched table's compaction verdict, as the scheduler last evaluated it.
    pub fn watch(&self) -> BTreeMap<String, Watch> {
        self.watch.read().expect("not poisoned").clone()
    }

    /// Replaces the verdicts (tables no longer watched drop out).
    pub fn set_watch(&self, w: BTreeMap<String, Watch>) {
        *self.watch.write().expect("not poisoned") = w;
    }

    /// The jobs this replica holds back, oldest first (`status: queued`).
    pub fn queued_jobs(&self) -> Vec<JobRecord> {
        self.queued.read().expect("not poisoned").clone()
    }

    pub fn set_queued_jobs(&self, q: Vec<JobRecord>) {
        self.metrics.queued_jobs.set(q.len() as i64);
        *self.queued.write().expect("not poisoned") = q;
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

    /// Loads `table` and computes its status against `policy` (not cached).
    pub async fn inspect(&self, table: &str, policy: &Policy) -> Result<TableStatus, CatalogError> {
        inspect::inspect(&self.catalog, &self.metrics, table, policy).await
    }

    /// Re-inspects one table after a job changed it, so gauges do not wait for the next refresh.
    pub async fn refresh_table(&self, table: &str) {
        let Some(policy) = self.policy_for(table) else {
            return;
        };
        if let Ok(s) = self.inspect(table, &policy).await {
            inspect::publish(&self.metrics, &s);
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
        self.set_readiness(
            store_ok.as_ref().err().map(ToString::to_string),
            watched.as_ref().err().map(ToString::to_string),
        );
        let Ok(watched) = watched else { return };
        self.metrics.watched_tables.set(watched.len() as i64);
        let mut fresh = BTreeMap::new();
        for (name, policy) in &watched {
            let status = match self.inspect(name, policy).await {
                Ok(s) => {
                    inspect::publish(&self.metrics, &s);
                    s
                }
                // A table that vanished or fails to load is reported and skipped, never fatal.
                Err(e) => {
                    tracing::warn!(table = name, error = %e, "table could not be inspected");
                    TableStatus::unavailable(name, policy, e.to_string())
                }
            };
            fresh.insert(name.clone(), status);
        }
        let mut tables = self.tables.write().expect("not poisoned");
        for gone in tables.keys().filter(|k| !fresh.contains_key(*k)) {
            self.metrics.forget_table(gone);
        }
        *tables = fresh;
    }

    /// Records the outcome of a readiness check (`None`: that dependency answered).
    fn set_readiness(&self, store_error: Option<String>, catalog_error: Option<String>) {
        let mut r = self.readiness.write().expect("not poisoned");
        r.store = store_error.is_none();
        r.catalog = catalog_error.is_none();
        let reasons: Vec<String> = store_error.into_iter().chain(catalog_error).collect();
        r.reason = (!reasons.is_empty()).then(|| reasons.join("; "));
        r.checked_ms = chrono::Utc::now().timestamp_millis();
        self.metrics.store_up.set(i64::from(r.store));
        self.metrics.catalog_up.set(i64::from(r.catalog));
    }
}
