//! The state store: job history, property changes, per-table maintenance leases and claimed
//! schedule fires, in SQLite (the default, created on first use) or PostgreSQL, through sqlx's
//! `Any` driver. Migrations in `migrations/` run at start-up.
//!
//! Lease times are the store's: every acquisition, renewal, takeover and expiry check reads the
//! database's clock (`{now}` in the queries below), never the caller's, so replicas whose clocks
//! disagree still agree on whose lease is live.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::pool::Pool;
use utoipa::ToSchema;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};

/// Errors talking to the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("state store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("state store query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("state store: bad row: {0}")]
    BadRow(String),
}

impl StoreError {
    /// Connection-level failures are worth retrying; bad data is not.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Connect { .. } | StoreError::Query(sqlx::Error::Io(_))
        )
    }
}

/// One job row.
// The doc comments and `schema` attributes make the OpenAPI schema `Job` (`utoipa`): every field
// is always written, so nullable ones are `required` too; `deny_unknown_fields` only makes the
// schema say `additionalProperties: false` (serializing ignores it).
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Job)]
pub struct JobRecord {
    #[schema(format = Uuid)]
    pub id: String,
    pub table: String,
    #[schema(schema_with = job_kind)]
    pub kind: String,
    #[schema(schema_with = job_trigger)]
    pub trigger: String,
    #[schema(schema_with = job_status)]
    pub status: String,
    pub created_ms: i64,
    #[schema(required)]
    pub started_ms: Option<i64>,
    #[schema(required)]
    pub finished_ms: Option<i64>,
    /// Kind-specific result (for reconcile: the drift found and the keys corrected).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    #[schema(required)]
    pub error: Option<String>,
    /// The schedule fire time (un-jittered, ms since the epoch) a scheduled job ran for; each
    /// fire runs at most once across replicas.
    #[schema(required)]
    pub fire_ms: Option<i64>,
    /// Why it started: `schedule`, `manual`, `startup`, or the health condition that made the
    /// table due (`trigger:small-files`, ...); null on jobs recorded by older versions.
    #[schema(required)]
    pub reason: Option<String>,
}

// The values of a job's string columns, for the schema. The spellings belong to
// `jobs::{JobKind, Trigger, JobStatus}`, a layer above this one: `server::openapi`'s tests check
// these lists against them.
const JOB_KINDS: &[&str] = &[
    "reconcile",
    "compaction",
    "expire",
    "remove-orphans",
    "rewrite-manifests",
];
const JOB_TRIGGERS: &[&str] = &["schedule", "manual", "startup", "condition"];
// `queued`: a due job waiting for the daemon's budget (never stored; listed from memory).
const JOB_STATUSES: &[&str] = &[
    "queued",
    "running",
    "succeeded",
    "partial",
    "failed",
    "skipped",
];

fn string_enum(values: &[&str]) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .into()
}

fn job_kind() -> RefOr<Schema> {
    string_enum(JOB_KINDS)
}

fn job_trigger() -> RefOr<Schema> {
    string_enum(JOB_TRIGGERS)
}

fn job_status() -> RefOr<Schema> {
    string_enum(JOB_STATUSES)
}

impl JobRecord {
    /// A job that starts now (`now_ms`): `running`, no detail yet.
    pub fn running(id: &str, table: &str, kind: &str, trigger: &str, now_ms: i64) -> Self {
        JobRecord {
            id: id.to_string(),
            table: table.to_string(),
            kind: kind.to_string(),
            trigger: trigger.to_string(),
            status: "running".to_string(),
            created_ms: now_ms,
            started_ms: Some(now_ms),
            finished_ms: None,
            detail: serde_json::json!({}),
            error: None,
            fire_ms: None,
            reason: Some(trigger.to_string()),
        }
    }
}

/// A table's lease as the store sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    pub job_id: String,
    pub epoch: i64,
    /// Milliseconds until it expires by the store's clock; zero or less once expired.
    pub remaining_ms: i64,
}

/// One recorded property change.
// For the OpenAPI schema, as `JobRecord`.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PropertyChange {
    pub table: String,
    pub key: String,
    #[schema(required)]
    pub old: Option<String>,
    #[schema(required)]
    pub new: Option<String>,
    pub changed_ms: i64,
    #[schema(required)]
    pub job_id: Option<String>,
}

/// A handle to the state store (cheap to clone).
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool<sqlx::Any>,
    postgres: bool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The store's clock in ms since the epoch, as SQL (what `{now}` in a query becomes).
const NOW_SQLITE: &str = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";
const NOW_POSTGRES: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";

const JOB_COLUMNS: &str = "id, table_name, kind, trigger_kind, status, created_ms, started_ms, finished_ms, detail, error, fire_ms, reason";

impl Store {
    /// Connects (creating a missing SQLite file) and runs the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let postgres = url.starts_with("postgres:") || url.starts_with("postgresql:");
        let connect_url = if url.starts_with("sqlite:") && !url.contains("mode=") {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}mode=rwc")
        } else {
            url.to_string()
        };
        // One SQLite connection serializes writers, which avoids SQLITE_BUSY between our own tasks.
        let max = if postgres { 5 } else { 1 };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .connect(&connect_url)
            .await
            .map_err(|source| StoreError::Connect {
                url: redact_url(url),
                source,
            })?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool, postgres })
    }

    /// `?` placeholders as the driver wants them (Postgres needs `$n`), `{now}` as the store's
    /// clock.
    fn sql(&self, q: &str) -> String {
        if self.postgres {
            dollar_placeholders(&q.replace("{now}", NOW_POSTGRES))
        } else {
            q.replace("{now}", NOW_SQLITE)
        }
    }

    /// The store's clock (ms since the epoch).
    pub async fn now_ms(&self) -> Result<i64, StoreError> {
        let row = sqlx::query(&self.sql("SELECT {now}"))
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// A trivial query, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn insert_job(&self, job: &JobRecord) -> Result<(), StoreError> {
        sqlx::query(&self.sql(
            "INSERT INTO jobs (id, table_name, kind, trigger_kind, status, created_ms, started_ms, finished_ms, detail, error, fire_ms, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&job.id)
        .bind(&job.table)
        .bind(&job.kind)
        .bind(&job.trigger)
        .bind(&job.status)
        .bind(job.created_ms)
        .bind(job.started_ms)
        .bind(job.finished_ms)
        .bind(job.detail.to_string())
        .bind(job.error.clone())
        .bind(job.fire_ms)
        .bind(job.reason.clone())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Updates status, finish time, detail and error of a job.
    pub async fn update_job(
        &self,
        id: &str,
        status: &str,
        finished_ms: Option<i64>,
        detail: &serde_json::Value,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(&self.sql(
            "UPDATE jobs SET status = ?, finished_ms = ?, detail = ?, error = ? WHERE id = ?",
        ))
        .bind(status)
        .bind(finished_ms)
        .bind(detail.to_string())
        .bind(error.map(str::to_string))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records progress of a running job; a no-op once the job finished, so a late progress
    /// write can never turn a finished job back into a running one.
    pub async fn update_progress(
        &self,
        id: &str,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query(&self.sql("UPDATE jobs SET detail = ? WHERE id = ? AND status = 'running'"))
            .bind(detail.to_string())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let row = sqlx::query(&self.sql(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| job_from_row(&r)).transpose()
    }

    /// Most recent jobs first, optionally for one table and/or kind.
    pub async fn jobs(
        &self,
        table: Option<&str>,
        kind: Option<&str>,
        limit: i64,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let mut q = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1 = 1");
        if table.is_some() {
            q.push_str(" AND table_name = ?");
        }
        if kind.is_some() {
            q.push_str(" AND kind = ?");
        }
        q.push_str(" ORDER BY created_ms DESC, id DESC LIMIT ?");
        let sql = self.sql(&q);
        let mut query = sqlx::query(&sql);
        if let Some(t) = table {
            query = query.bind(t);
        }
        if let Some(k) = kind {
            query = query.bind(k);
        }
        let rows = query.bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Marks `running` jobs that hold no live lease as failed (crash recovery): a job takes its
    /// table's lease before its row is written and releases it only after recording its outcome,
    /// so a running job without a live lease (by the store's clock) belongs to a process that died
    /// or lost its lease; if that process comes back, its own outcome overwrites this one.
    pub async fn fail_running_jobs(&self, reason: &str) -> Result<u64, StoreError> {
        let r = sqlx::query(&self.sql(
            "UPDATE jobs SET status = 'failed', finished_ms = {now}, error = ? WHERE status = 'running' AND id NOT IN (SELECT job_id FROM table_locks WHERE expires_ms > {now})",
        ))
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    pub async fn record_property_change(&self, c: &PropertyChange) -> Result<(), StoreError> {
        sqlx::query(&self.sql(
            "INSERT INTO property_changes (id, table_name, property_key, old_value, new_value, changed_ms, job_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(&c.table)
        .bind(&c.key)
        .bind(c.old.clone())
        .bind(c.new.clone())
        .bind(c.changed_ms)
        .bind(c.job_id.clone())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn property_changes(&self, table: &str) -> Result<Vec<PropertyChange>, StoreError> {
        let rows = sqlx::query(&self.sql(
            "SELECT table_name, property_key, old_value, new_value, changed_ms, job_id FROM property_changes WHERE table_name = ? ORDER BY changed_ms, id",
        ))
        .bind(table)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PropertyChange {
                    table: r.try_get(0)?,
                    key: r.try_get(1)?,
                    old: r.try_get(2)?,
                    new: r.try_get(3)?,
                    changed_ms: r.try_get(4)?,
                    job_id: r.try_get(5)?,
                })
            })
            .collect()
    }

    /// Takes the maintenance lease of `table` for `job_id` for `ttl_ms` (by the store's clock)
    /// unless another live holder has it: returns the lease's fencing epoch, or the holder's job
    /// id. An expired lease (a crashed or paused holder) is taken over. The epoch grows by one
    /// with every acquisition of the table's lease, across releases and takeovers, so a job can
    /// later prove the lease it holds is still the one it took.
    pub async fn try_lock(
        &self,
        table: &str,
        owner: &str,
        job_id: &str,
        ttl_ms: i64,
    ) -> Result<Result<i64, String>, StoreError> {
        // Each statement is atomic on its own: of several contenders one inserts (or, on an
        // expired row, one updates) and the others see a live lease.
        let fresh = sqlx::query(&self.sql(
            "INSERT INTO table_locks (table_name, owner, job_id, epoch, expires_ms) VALUES (?, ?, ?, 1, {now} + ?) ON CONFLICT (table_name) DO NOTHING",
        ))
        .bind(table)
        .bind(owner)
        .bind(job_id)
        .bind(ttl_ms)
        .execute(&self.pool)
        .await?;
        if fresh.rows_affected() == 1 {
            return Ok(Ok(1));
        }
        let taken = sqlx::query(&self.sql(
            "UPDATE table_locks SET owner = ?, job_id = ?, epoch = epoch + 1, expires_ms = {now} + ? WHERE table_name = ? AND expires_ms <= {now} RETURNING epoch",
        ))
        .bind(owner)
        .bind(job_id)
        .bind(ttl_ms)
        .bind(table)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = taken {
            return Ok(Ok(row.try_get(0)?));
        }
        let holder = self.lease(table).await?;
        Ok(Err(holder.map_or_else(
            || "another process".to_string(),
            |l| l.job_id,
        )))
    }

    /// Extends a held lease to `ttl_ms` from now; false when it is no longer ours (another job or
    /// epoch holds it) or already expired: a lapsed lease is never revived, because another
    /// replica may have judged it dead.
    pub async fn renew_lock(
        &self,
        table: &str,
        job_id: &str,
        epoch: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(&self.sql(
            "UPDATE table_locks SET expires_ms = {now} + ? WHERE table_name = ? AND job_id = ? AND epoch = ? AND expires_ms > {now}",
        ))
        .bind(ttl_ms)
        .bind(table)
        .bind(job_id)
        .bind(epoch)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The lease of `table` now (live or expired), or `None` when it was never taken.
    pub async fn lease(&self, table: &str) -> Result<Option<LeaseView>, StoreError> {
        let row =
            sqlx::query(&self.sql(
                "SELECT job_id, epoch, expires_ms - {now} FROM table_locks WHERE table_name = ?",
            ))
            .bind(table)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(LeaseView {
                job_id: r.try_get(0)?,
                epoch: r.try_get(1)?,
                remaining_ms: r.try_get(2)?,
            })
        })
        .transpose()
    }

    /// Releases a lease we hold by expiring it (the row and its epoch stay).
    pub async fn unlock(&self, table: &str, job_id: &str, epoch: i64) -> Result<(), StoreError> {
        sqlx::query(&self.sql(
            "UPDATE table_locks SET expires_ms = 0 WHERE table_name = ? AND job_id = ? AND epoch = ?",
        ))
        .bind(table)
        .bind(job_id)
        .bind(epoch)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Claims the fire of `kind` on `table` at `fire_ms` for `owner`: true for the one caller
    /// whose insert created the claim, false for every other (the fire is someone else's).
    pub async fn claim_fire(
        &self,
        table: &str,
        kind: &str,
        fire_ms: i64,
        owner: &str,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(&self.sql(
            "INSERT INTO schedule_fires (table_name, kind, fire_ms, owner, claimed_ms) VALUES (?, ?, ?, ?, {now}) ON CONFLICT DO NOTHING",
        ))
        .bind(table)
        .bind(kind)
        .bind(fire_ms)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Forgets fire claims made more than `older_than_ms` ago (by the store's clock); returns how
    /// many. A claim only matters while replicas may still try the same fire (seconds).
    pub async fn prune_fire_claims(&self, older_than_ms: i64) -> Result<u64, StoreError> {
        let r = sqlx::query(&self.sql("DELETE FROM schedule_fires WHERE claimed_ms < {now} - ?"))
            .bind(older_than_ms)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
}

/// Rewrites `?` placeholders as `$1, $2, ...` (our queries have no `?` inside literals).
pub(crate) fn dollar_placeholders(q: &str) -> String {
    let mut out = String::with_capacity(q.len() + 8);
    let mut n = 0;
    for c in q.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

fn job_from_row(r: &AnyRow) -> Result<JobRecord, StoreError> {
    let detail: String = r.try_get(8)?;
    Ok(JobRecord {
        id: r.try_get(0)?,
        table: r.try_get(1)?,
        kind: r.try_get(2)?,
        trigger: r.try_get(3)?,
        status: r.try_get(4)?,
        created_ms: r.try_get(5)?,
        started_ms: r.try_get(6)?,
        finished_ms: r.try_get(7)?,
        detail: serde_json::from_str(&detail).map_err(|e| StoreError::BadRow(e.to_string()))?,
        error: r.try_get(9)?,
        fire_ms: r.try_get(10)?,
        reason: r.try_get(11)?,
    })
}

/// Query parameters of database and catalog URLs whose values are not credentials: SQLite's open
/// options and PostgreSQL's connection settings. Every other value is masked: drivers take
/// credentials there too (`postgres://h/db?password=...`), and a parameter missing from this list
/// only hides a harmless value where one missing from a list of credential names would leak it.
const NON_SECRET_QUERY_PARAMS: &[&str] = &[
    "mode",
    "cache",
    "immutable",
    "vfs",
    "sslmode",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "application_name",
    "statement-cache-capacity",
];

/// Hides a password in a URL, and the value of every query parameter not known to be harmless
/// ([`NON_SECRET_QUERY_PARAMS`]); anything else, and text that is not a URL, is returned as it is.
pub fn redact_url(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return url.to_string();
    };
    let mut changed = false;
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
        changed = true;
    }
    let pairs: Vec<(String, String)> = u.query_pairs().into_owned().collect();
    if pairs
        .iter()
        .any(|(k, _)| !NON_SECRET_QUERY_PARAMS.contains(&k.as_str()))
    {
        u.query_pairs_mut()
            .clear()
            .extend_pairs(pairs.iter().map(|(k, v)| {
                let v = if NON_SECRET_QUERY_PARAMS.contains(&k.as_str()) {
                    v.as_str()
                } else {
                    "***"
                };
                (k.as_str(), v)
            }));
        changed = true;
    }
    if changed {
        u.to_string()
    } else {
        url.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("state.db").display());
        (Store::connect(&url).await.unwrap(), dir)
    }

    fn job(id: &str, table: &str, created: i64) -> JobRecord {
        JobRecord::running(id, table, "compaction", "manual", created)
    }

    #[tokio::test]
    async fn jobs_round_trip_and_filter() {
        let (s, _d) = store().await;
        s.insert_job(&job("a", "m.t1", 1)).await.unwrap();
        s.insert_job(&job("b", "m.t2", 2)).await.unwrap();
        s.insert_job(&job("c", "m.t1", 3)).await.unwrap();
        s.update_job(
            "a",
            "succeeded",
            Some(5),
            &serde_json::json!({"x": 1}),
            None,
        )
        .await
        .unwrap();
        s.update_progress("a", &serde_json::json!({"late": true}))
            .await
            .unwrap();
        let a = s.job("a").await.unwrap().unwrap();
        assert_eq!(a.status, "succeeded");
        assert_eq!(a.finished_ms, Some(5));
        assert_eq!(a.detail, serde_json::json!({"x": 1}));
        let t1: Vec<String> = s
            .jobs(Some("m.t1"), None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(t1, vec!["c", "a"]);
        assert!(s.job("zzz").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn leases_exclude_renew_and_expire_by_the_store_clock() {
        let (s, _d) = store().await;
        assert_eq!(s.try_lock("m.t", "p1", "j1", 60_000).await.unwrap(), Ok(1));
        assert_eq!(
            s.try_lock("m.t", "p2", "j2", 60_000).await.unwrap(),
            Err("j1".to_string())
        );
        assert!(s.renew_lock("m.t", "j1", 1, 60_000).await.unwrap());
        assert!(!s.renew_lock("m.t", "j2", 1, 60_000).await.unwrap());
        assert!(
            !s.renew_lock("m.t", "j1", 2, 60_000).await.unwrap(),
            "wrong epoch"
        );
        let l = s.lease("m.t").await.unwrap().unwrap();
        assert_eq!((l.job_id.as_str(), l.epoch), ("j1", 1));
        assert!(l.remaining_ms > 50_000 && l.remaining_ms <= 60_000, "{l:?}");

        // A lease shorter than the pause below expires by the store's clock, whatever the
        // caller's: it is neither renewed nor counted live, and is taken over.
        assert!(s.renew_lock("m.t", "j1", 1, 30).await.unwrap());
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(s.lease("m.t").await.unwrap().unwrap().remaining_ms <= 0);
        assert!(
            !s.renew_lock("m.t", "j1", 1, 60_000).await.unwrap(),
            "lapsed"
        );
        assert_eq!(s.try_lock("m.t", "p2", "j2", 60_000).await.unwrap(), Ok(2));
        assert!(!s.renew_lock("m.t", "j1", 1, 60_000).await.unwrap());
        // Releasing someone else's lease (or an old epoch of ours) does nothing.
        s.unlock("m.t", "j1", 1).await.unwrap();
        assert_eq!(
            s.try_lock("m.t", "p3", "j3", 60_000).await.unwrap(),
            Err("j2".to_string())
        );
        s.unlock("m.t", "j2", 2).await.unwrap();
        // The epoch keeps growing across releases and takeovers, per table.
        assert_eq!(s.try_lock("m.t", "p3", "j3", 60_000).await.unwrap(), Ok(3));
        assert_eq!(s.try_lock("m.u", "p3", "j4", 60_000).await.unwrap(), Ok(1));
        assert!(s.lease("m.none").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn store_clock_is_close_to_the_wall_clock() {
        let (s, _d) = store().await;
        let now = chrono::Utc::now().timestamp_millis();
        let store_now = s.now_ms().await.unwrap();
        assert!((store_now - now).abs() < 5_000, "{store_now} vs {now}");
    }

    #[tokio::test]
    async fn running_jobs_without_a_live_lease_are_failed() {
        let (s, _d) = store().await;
        // Lease expired (crashed holder), lease taken over by another job, lease live.
        s.insert_job(&job("expired", "m.a", 1)).await.unwrap();
        s.try_lock("m.a", "p1", "expired", -1)
            .await
            .unwrap()
            .unwrap();
        s.insert_job(&job("taken-over", "m.b", 1)).await.unwrap();
        s.try_lock("m.b", "p2", "newer", 60_000)
            .await
            .unwrap()
            .unwrap();
        s.insert_job(&job("live", "m.c", 1)).await.unwrap();
        s.try_lock("m.c", "p3", "live", 60_000)
            .await
            .unwrap()
            .unwrap();
        let mut done = job("done", "m.d", 1);
        done.status = "succeeded".into();
        s.insert_job(&done).await.unwrap();

        let before = s.now_ms().await.unwrap();
        assert_eq!(s.fail_running_jobs("gone").await.unwrap(), 2);
        for (id, status) in [
            ("expired", "failed"),
            ("taken-over", "failed"),
            ("live", "running"),
            ("done", "succeeded"),
        ] {
            let j = s.job(id).await.unwrap().unwrap();
            assert_eq!(j.status, status, "{id}");
        }
        let j = s.job("expired").await.unwrap().unwrap();
        assert_eq!(j.error.as_deref(), Some("gone"));
        assert!(
            j.finished_ms.unwrap() >= before,
            "finished by the store's clock"
        );
        // Idempotent.
        assert_eq!(s.fail_running_jobs("gone").await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_fire_is_claimed_once_and_claims_are_pruned() {
        let (s, _d) = store().await;
        assert!(
            s.claim_fire("m.t", "compaction", 1_000, "r1")
                .await
                .unwrap()
        );
        assert!(
            !s.claim_fire("m.t", "compaction", 1_000, "r2")
                .await
                .unwrap()
        );
        assert!(
            !s.claim_fire("m.t", "compaction", 1_000, "r1")
                .await
                .unwrap()
        );
        // Another fire time, kind or table is another claim.
        assert!(
            s.claim_fire("m.t", "compaction", 2_000, "r2")
                .await
                .unwrap()
        );
        assert!(s.claim_fire("m.t", "expire", 1_000, "r2").await.unwrap());
        assert!(
            s.claim_fire("m.u", "compaction", 1_000, "r3")
                .await
                .unwrap()
        );
        assert_eq!(s.prune_fire_claims(60_000).await.unwrap(), 0);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(s.prune_fire_claims(5).await.unwrap(), 4);
    }

    #[tokio::test]
    async fn a_job_keeps_its_fire_time() {
        let (s, _d) = store().await;
        let fired = JobRecord {
            fire_ms: Some(1_234),
            ..job("f", "m.t", 1)
        };
        s.insert_job(&fired).await.unwrap();
        s.insert_job(&job("m", "m.t", 2)).await.unwrap();
        assert_eq!(s.job("f").await.unwrap().unwrap().fire_ms, Some(1_234));
        assert_eq!(s.job("m").await.unwrap().unwrap().fire_ms, None);
    }

    #[tokio::test]
    async fn property_changes_are_recorded() {
        let (s, _d) = store().await;
        let c = PropertyChange {
            table: "m.t".into(),
            key: "write.distribution-mode".into(),
            old: None,
            new: Some("hash".into()),
            changed_ms: 7,
            job_id: Some("j".into()),
        };
        s.record_property_change(&c).await.unwrap();
        assert_eq!(s.property_changes("m.t").await.unwrap(), vec![c]);
    }

    #[test]
    fn postgres_placeholders() {
        assert_eq!(
            dollar_placeholders("UPDATE t SET a = ? WHERE b = ?"),
            "UPDATE t SET a = $1 WHERE b = $2"
        );
        assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:***@h/db");
    }

    #[test]
    fn redact_url_masks_passwords_and_unknown_query_values() {
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=pw&sslmode=require"),
            "postgres://h/db?user=u&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("http://c:8181/api?apikey=k"),
            "http://c:8181/api?apikey=***"
        );
        for unchanged in [
            "sqlite://state.db",
            "sqlite://state.db?mode=rwc",
            "http://127.0.0.1:8181",
            "not a url",
        ] {
            assert_eq!(redact_url(unchanged), unchanged);
        }
    }
}
