//! Commit backend for SQL catalogs (the `iceberg_tables` schema shared by Java's `JdbcCatalog`,
//! PyIceberg's `SqlCatalog` and iceberg-catalog-sql).
//!
//! A commit writes the next metadata file next to the current one, then swaps the table's row from
//! the current location to the new one with a single compare-and-swap `UPDATE`. Zero rows updated
//! means another writer got there first. The backend has its own small pool so that commits do not
//! queue behind the catalog client's reads.
//!
//! Another process may hold the database's write lock for a while (Spark's `JdbcCatalog` and
//! PyIceberg's `SqlCatalog` commit in transactions on the same SQLite file). Such a holder must
//! delay a commit, not fail it: every SQLite connection waits for the lock (`busy_timeout`), and a
//! statement that still meets it is retried with a bounded backoff ([`BusyRetry`]). A busy
//! statement did not apply, so it is neither a conflict (the table did not move) nor an unknown
//! outcome. iceberg-catalog-sql's own client, whose pool icemaint cannot configure, gets the same
//! treatment from [`BusyRetryCatalog`].

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iceberg::spec::TableMetadata;
use iceberg::table::Table;
use iceberg::{
    Catalog, ErrorKind, MetadataLocation, Namespace, NamespaceIdent, TableCommit, TableCreation,
    TableIdent, TableRequirement, TableUpdate,
};
use sqlx::any::{AnyPoolOptions, AnyQueryResult};
use sqlx::{AnyPool, Executor};

use super::{CommitBackend, CommitError, table_after_commit};
use crate::config::CatalogConfig;

/// Catalog property choosing the placeholder style (same key and values as iceberg-catalog-sql).
const PROP_BIND_STYLE: &str = "sql_bind_style";
/// Catalog property: connections in the commit pool.
const PROP_POOL_MAX: &str = "pool.max-connections";
const DEFAULT_POOL_MAX: u32 = 2;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// Catalog property (SQLite only): how long one statement waits for a lock another connection
/// holds before it fails with SQLITE_BUSY (and [`BusyRetry`] takes over).
const PROP_BUSY_TIMEOUT_MS: &str = "sqlite.busy-timeout-ms";
/// sqlx's own default, set explicitly so that the wait does not depend on the driver's choice.
const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Table property: delete metadata files that fall out of the metadata log after a commit.
const PROP_DELETE_AFTER_COMMIT: &str = "write.metadata.delete-after-commit.enabled";

/// Errors setting up the SQL commit backend.
#[derive(Debug, thiserror::Error)]
pub enum SqlBackendError {
    #[error("invalid sql catalog configuration: {0}")]
    Config(String),
    #[error("cannot connect to the sql catalog database: {0}")]
    Connect(#[source] sqlx::Error),
}

impl SqlBackendError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, SqlBackendError::Connect(_))
    }
}

/// Why one compare-and-swap statement did not apply the new metadata location.
#[derive(Debug, thiserror::Error)]
enum SwapError {
    /// No connection could be had: nothing was sent.
    #[error("cannot reach the sql catalog database: {0}")]
    NotSent(#[source] sqlx::Error),
    /// Zero rows updated: the row no longer holds the expected location (or is gone). Told apart
    /// by re-reading the row; the commit layer re-plans on the new table state.
    #[error("compare-and-swap matched no row")]
    Missed,
    /// Another connection held the lock: the statement did not apply (see [`is_busy`]).
    #[error("catalog database busy: {0}")]
    Busy(#[source] sqlx::Error),
    /// The statement was sent and failed otherwise: it may have applied.
    #[error("error after sending the metadata location update: {0}")]
    Unknown(#[source] sqlx::Error),
}

impl SwapError {
    /// Only a busy statement is sent again as it is: it certainly did not apply, and the row is
    /// still expected to hold the base location. A miss needs a new plan, not the same statement.
    fn is_retryable(&self) -> bool {
        matches!(self, SwapError::Busy(_))
    }

    /// The outcome of one compare-and-swap `UPDATE`.
    fn from_update(result: Result<AnyQueryResult, sqlx::Error>) -> Result<(), SwapError> {
        match result {
            Ok(r) if r.rows_affected() == 0 => Err(SwapError::Missed),
            Ok(_) => Ok(()),
            Err(e) if is_busy(&e) => Err(SwapError::Busy(e)),
            Err(e) => Err(SwapError::Unknown(e)),
        }
    }
}

/// How a statement that met another connection's lock is retried. Each attempt already waits up
/// to the connection's busy timeout inside SQLite (so with the default 5 s there are about five
/// attempts); between attempts the wait doubles from `first_wait` up to `max_wait`, and no
/// attempt starts once `budget` has passed since the first. A long-held lock thus delays a commit
/// by up to `budget` plus one busy timeout, then fails it as not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusyRetry {
    pub first_wait: Duration,
    pub max_wait: Duration,
    pub budget: Duration,
}

impl Default for BusyRetry {
    fn default() -> Self {
        Self {
            first_wait: Duration::from_millis(200),
            max_wait: Duration::from_secs(2),
            budget: Duration::from_secs(30),
        }
    }
}

impl BusyRetry {
    /// The wait before attempt `attempt + 1`, after `attempt` (1-based) attempts met a busy
    /// database within `elapsed`; `None` when the budget is spent.
    pub fn wait_after(&self, attempt: u32, elapsed: Duration) -> Option<Duration> {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        let wait = self.first_wait.saturating_mul(factor).min(self.max_wait);
        (elapsed + wait < self.budget).then_some(wait)
    }
}

/// Runs `op` until it succeeds, fails with something other than a busy database (see
/// [`is_busy_error`]), or `retry`'s budget is spent; returns its last result. Only for operations
/// that change nothing when they meet a busy database (reads, `CREATE TABLE IF NOT EXISTS`).
pub async fn retry_busy<T, F, Fut>(retry: &BusyRetry, what: &str, op: F) -> iceberg::Result<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = iceberg::Result<T>>,
{
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match op().await {
            Err(e) if is_busy_error(&e) => match retry.wait_after(attempt, started.elapsed()) {
                Some(wait) => {
                    tracing::info!(what, attempt, wait_ms = wait.as_millis() as u64, error = %first_line(&e), "catalog database busy; retrying");
                    tokio::time::sleep(wait).await;
                }
                None => return Err(e),
            },
            other => return other,
        }
    }
}

/// Placeholder syntax of the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BindStyle {
    /// `?` (SQLite, MySQL).
    QMark,
    /// `$1`, `$2`, ... (Postgres).
    DollarNumeric,
}

/// Commits through the `iceberg_tables` row of a SQL catalog.
#[derive(Debug, Clone)]
pub struct SqlCommitBackend {
    pool: AnyPool,
    catalog_name: String,
    update_sql: String,
    select_sql: String,
    busy_retry: BusyRetry,
}

/// Connects to `cfg.uri` (`sqlite:///abs/path.db`, `sqlite://relative.db`, `postgres://...`)
/// for the catalog named `cfg.name`.
pub async fn connect(cfg: &CatalogConfig) -> Result<SqlCommitBackend, SqlBackendError> {
    SqlCommitBackend::connect(cfg).await
}

impl SqlCommitBackend {
    /// See [`connect`].
    pub async fn connect(cfg: &CatalogConfig) -> Result<Self, SqlBackendError> {
        sqlx::any::install_default_drivers();
        let uri = cfg.uri.trim();
        let bind = bind_style(uri, cfg.properties.get(PROP_BIND_STYLE).map(String::as_str))?;
        let max = match cfg.properties.get(PROP_POOL_MAX) {
            Some(v) => v.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                SqlBackendError::Config(format!("{PROP_POOL_MAX} must be a positive integer"))
            })?,
            None => DEFAULT_POOL_MAX,
        };
        let busy_timeout = busy_timeout(&cfg.properties)?;
        let mut options = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(ACQUIRE_TIMEOUT);
        if is_sqlite(uri) {
            // The Any driver builds SQLite's options from the URL alone, which has no busy timeout
            // parameter; the pragma sets the same `sqlite3_busy_timeout` on each new connection.
            let pragma = format!("PRAGMA busy_timeout = {}", busy_timeout.as_millis());
            options = options.after_connect(move |conn, _| {
                let pragma = pragma.clone();
                Box::pin(async move { conn.execute(pragma.as_str()).await.map(|_| ()) })
            });
        }
        let pool = options
            .connect(uri)
            .await
            .map_err(SqlBackendError::Connect)?;
        Ok(Self {
            pool,
            catalog_name: cfg.name.clone(),
            update_sql: update_sql(bind),
            select_sql: select_sql(bind),
            busy_retry: BusyRetry::default(),
        })
    }

    /// Sends the compare-and-swap once.
    async fn swap_once(
        &self,
        ident: &TableIdent,
        expected: &str,
        new_location: &str,
    ) -> Result<(), SwapError> {
        let mut conn = self.pool.acquire().await.map_err(SwapError::NotSent)?;
        let result = sqlx::query(&self.update_sql)
            .bind(new_location)
            .bind(expected)
            .bind(&self.catalog_name)
            .bind(ident.namespace().join("."))
            .bind(ident.name())
            .bind(expected)
            .execute(&mut *conn)
            .await;
        SwapError::from_update(result)
    }

    /// Sends the compare-and-swap, again while the database is busy and the budget lasts.
    ///
    /// Sending the same statement again is safe only because a busy statement did not apply:
    /// SQLite answers SQLITE_BUSY (or LOCKED) from `BEGIN` or from an autocommit write when it
    /// could not take the lock it needs, either before writing anything or at the implicit
    /// commit, where it rolls the statement back before returning; PostgreSQL's serialization,
    /// deadlock and lock-timeout errors abort the transaction. Either way the row still holds
    /// `expected` or whatever another writer put there, and the compare-and-swap decides again.
    /// This is also why a busy error is never reported as an unknown commit state.
    async fn swap(
        &self,
        ident: &TableIdent,
        expected: &str,
        new_location: &str,
    ) -> Result<(), (SwapError, u32, Duration)> {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let err = match self.swap_once(ident, expected, new_location).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let wait = if err.is_retryable() {
                self.busy_retry.wait_after(attempt, started.elapsed())
            } else {
                None
            };
            let Some(wait) = wait else {
                return Err((err, attempt, started.elapsed()));
            };
            tracing::info!(table = %ident, attempt, wait_ms = wait.as_millis() as u64, error = %err, "catalog database busy; retrying the commit");
            tokio::time::sleep(wait).await;
        }
    }

    /// After zero rows were updated: `NotFound` when the table row is gone, `Conflict` otherwise.
    async fn zero_rows_error(&self, ident: &TableIdent, expected: &str) -> CommitError {
        let namespace = ident.namespace().join(".");
        let row: Result<Option<(Option<String>,)>, _> = sqlx::query_as(&self.select_sql)
            .bind(&self.catalog_name)
            .bind(&namespace)
            .bind(ident.name())
            .fetch_optional(&self.pool)
            .await;
        match row {
            Ok(None) => CommitError::NotFound(format!(
                "{ident} is not in sql catalog {}",
                self.catalog_name
            )),
            Ok(Some((current,))) => CommitError::Conflict(format!(
                "{ident} was updated by another writer: metadata location is {} instead of {expected}",
                current.as_deref().unwrap_or("null")
            )),
            Err(e) => CommitError::Conflict(format!(
                "{ident} was updated by another writer (compare-and-swap matched no row; re-reading it failed: {e})"
            )),
        }
    }
}

fn bind_style(uri: &str, explicit: Option<&str>) -> Result<BindStyle, SqlBackendError> {
    match explicit {
        Some("QMark") => return Ok(BindStyle::QMark),
        Some("DollarNumeric") => return Ok(BindStyle::DollarNumeric),
        Some(other) => {
            return Err(SqlBackendError::Config(format!(
                "{PROP_BIND_STYLE} must be QMark or DollarNumeric, not {other:?}"
            )));
        }
        None => {}
    }
    let scheme = uri
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match scheme.as_str() {
        "postgres" | "postgresql" => Ok(BindStyle::DollarNumeric),
        "sqlite" | "mysql" | "mariadb" => Ok(BindStyle::QMark),
        _ => Err(SqlBackendError::Config(format!(
            "unsupported sql catalog uri scheme {scheme:?} (expected sqlite:, postgres: or mysql:)"
        ))),
    }
}

fn placeholders(sql: &str, bind: BindStyle) -> String {
    match bind {
        BindStyle::QMark => sql.to_string(),
        BindStyle::DollarNumeric => crate::store::dollar_placeholders(sql),
    }
}

/// The compare-and-swap, as Java's `JdbcTableOperations` and PyIceberg's `SqlCatalog` issue it.
/// Binds: new location, previous location, catalog, namespace, table, expected location.
fn update_sql(bind: BindStyle) -> String {
    placeholders(
        "UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = ? \
         WHERE catalog_name = ? AND table_namespace = ? AND table_name = ? \
         AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL) AND metadata_location = ?",
        bind,
    )
}

fn select_sql(bind: BindStyle) -> String {
    placeholders(
        "SELECT metadata_location FROM iceberg_tables \
         WHERE catalog_name = ? AND table_namespace = ? AND table_name = ? \
         AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL)",
        bind,
    )
}

fn is_sqlite(uri: &str) -> bool {
    uri.trim()
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("sqlite:"))
}

fn busy_timeout(props: &BTreeMap<String, String>) -> Result<Duration, SqlBackendError> {
    match props.get(PROP_BUSY_TIMEOUT_MS) {
        None => Ok(DEFAULT_BUSY_TIMEOUT),
        Some(v) => v
            .trim()
            .parse::<u32>()
            .map(|ms| Duration::from_millis(ms.into()))
            .map_err(|_| {
                SqlBackendError::Config(format!(
                    "{PROP_BUSY_TIMEOUT_MS} must be a whole number of milliseconds, not {v:?}"
                ))
            }),
    }
}

/// Whether a statement failed because another connection held a lock it needed, so that it did
/// not apply and may be sent again (see [`SqlCommitBackend::swap`] for why it did not apply).
/// Decided by the database's own code, never by the message: SQLite's "database is locked" is
/// SQLITE_BUSY (5) and its extended codes.
pub fn is_busy(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    let Some(code) = db.code() else {
        return false;
    };
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        sqlite_code_is_busy(&code)
    } else if db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
    {
        sqlstate_is_busy(&code)
    } else {
        false
    }
}

/// SQLite (extended) result codes: the primary code is the low byte; BUSY = 5 (also
/// BUSY_RECOVERY, BUSY_SNAPSHOT, BUSY_TIMEOUT), LOCKED = 6 (a shared-cache table lock).
fn sqlite_code_is_busy(code: &str) -> bool {
    code.parse::<i64>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
}

/// PostgreSQL SQLSTATEs after which the transaction was rolled back because of another one:
/// serialization_failure, deadlock_detected, lock_not_available.
fn sqlstate_is_busy(code: &str) -> bool {
    matches!(code, "40001" | "40P01" | "55P03")
}

/// [`is_busy`] for an error of iceberg-catalog-sql, which keeps the sqlx error as its source.
pub fn is_busy_error(e: &iceberg::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(sqlx) = s.downcast_ref::<sqlx::Error>() {
            return is_busy(sqlx);
        }
        source = s.source();
    }
    false
}

/// iceberg errors carry request details on further lines; the first says what failed.
fn first_line(e: &impl std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

fn failed(what: &str, e: impl std::fmt::Display) -> CommitError {
    CommitError::Failed(format!("{what}: {e}"))
}

fn requirement_error(e: iceberg::Error) -> CommitError {
    if e.kind() == ErrorKind::CatalogCommitConflicts {
        CommitError::Conflict(e.to_string())
    } else {
        CommitError::Failed(e.to_string())
    }
}

async fn delete_quietly(table: &Table, path: &str) {
    if let Err(e) = table.file_io().delete(path).await {
        tracing::warn!(path = %path, error = %e, "could not delete uncommitted metadata file");
    }
}

/// Java `deleteRemovedMetadataFiles`: after a successful commit, metadata files that fell out of
/// the metadata log are deleted when the table asks for it. Best effort.
async fn delete_expired_metadata(base: &Table, new: &TableMetadata, expired: &[String]) {
    let enabled = new
        .properties()
        .get(PROP_DELETE_AFTER_COMMIT)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if !enabled {
        return;
    }
    for path in expired {
        match base.file_io().delete(path).await {
            Ok(()) => tracing::debug!(path = %path, "deleted expired metadata file"),
            Err(e) => {
                tracing::warn!(path = %path, error = %e, "could not delete expired metadata file")
            }
        }
    }
}

#[async_trait::async_trait]
impl CommitBackend for SqlCommitBackend {
    async fn commit(
        &self,
        base: &Table,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
    ) -> Result<Table, CommitError> {
        let ident = base.identifier();
        let current = base
            .metadata_location()
            .ok_or_else(|| {
                CommitError::Failed(format!("{ident}: base table has no metadata location"))
            })?
            .to_string();

        // The requirements are checked against `base`; the compare-and-swap below then makes sure
        // `base` is still what the catalog holds, so they hold for the committed state too.
        for r in &requirements {
            r.check(Some(base.metadata())).map_err(requirement_error)?;
        }
        let mut builder = base.metadata().clone().into_builder(Some(current.clone()));
        for u in updates {
            builder = u
                .apply(builder)
                .map_err(|e| failed("cannot apply update", e))?;
        }
        let built = builder
            .build()
            .map_err(|e| failed("cannot build new metadata", e))?;
        let metadata = built.metadata;
        let expired: Vec<String> = built
            .expired_metadata_logs
            .into_iter()
            .map(|l| l.metadata_file)
            .collect();

        let location = MetadataLocation::from_str(&current)
            .map_err(|e| failed("cannot derive the next metadata file name", e))?
            .with_next_version()
            .with_new_metadata(&metadata);
        let new_location = location.to_string();
        if let Err(e) = metadata.write_to(base.file_io(), &location).await {
            delete_quietly(base, &new_location).await;
            return Err(failed("cannot write metadata file", e));
        }

        match self.swap(ident, &current, &new_location).await {
            Ok(()) => {}
            Err((SwapError::NotSent(e), _, _)) => {
                // Until the statement is sent nothing can have changed in the catalog.
                delete_quietly(base, &new_location).await;
                return Err(failed("cannot reach the sql catalog database", e));
            }
            Err((SwapError::Missed, _, _)) => {
                delete_quietly(base, &new_location).await;
                let err = self.zero_rows_error(ident, &current).await;
                tracing::info!(table = %ident, error = %err, "sql commit lost the compare-and-swap");
                return Err(err);
            }
            Err((SwapError::Busy(e), attempts, elapsed)) => {
                // Not applied (see `swap`): the file is ours alone, and this is no conflict, as
                // the table did not move; re-planning would only meet the same lock.
                delete_quietly(base, &new_location).await;
                tracing::warn!(table = %ident, attempts, error = %e, "sql commit gave up on a busy catalog database");
                return Err(CommitError::Failed(format!(
                    "{ident}: catalog database stayed locked by another connection \
                     ({attempts} attempts in {:.1} s), the change was not applied: {e}",
                    elapsed.as_secs_f64()
                )));
            }
            Err((SwapError::Unknown(e), _, _)) => {
                // The statement may have been applied: keep the metadata file, it may be current.
                tracing::warn!(table = %ident, metadata_location = %new_location, error = %e, "sql commit outcome unknown");
                return Err(CommitError::StateUnknown(format!(
                    "{ident}: error after sending the metadata location update: {e}"
                )));
            }
        }
        tracing::debug!(table = %ident, metadata_location = %new_location, "sql commit applied");

        delete_expired_metadata(base, &metadata, &expired).await;
        table_after_commit(base, metadata, new_location)
            .map_err(|e| CommitError::StateUnknown(format!("{ident}: committed, but {e}")))
    }
}

/// iceberg-catalog-sql's client with a busy database waited out. Its pool is built inside the crate
/// from the URL alone, so its SQLite connections keep sqlx's default busy timeout (5 s) and cannot
/// be given ours; what meets a lock held longer is handled here instead:
///
/// - reads are retried with [`BusyRetry`] (they change nothing);
/// - a busy `update_table` (iceberg's own commits: expiry, property reconciliation) is marked
///   retryable, so iceberg's `Transaction::commit` retries it from a fresh load within the table's
///   `commit.retry.*` budget. The crate's `update_table` loads, writes the next metadata file and
///   sends one autocommit compare-and-swap `UPDATE`, its last statement; a busy error from any of
///   them means the `UPDATE` did not apply (see [`SqlCommitBackend`]'s `swap`), so the retry
///   cannot apply the change twice. The attempt's metadata file stays behind unreferenced (the
///   crate does not delete it) for orphan removal.
///
/// Other writes are passed through untouched: icemaint does not use them on watched tables.
#[derive(Debug)]
pub struct BusyRetryCatalog {
    inner: Arc<dyn Catalog>,
    retry: BusyRetry,
}

impl BusyRetryCatalog {
    pub fn new(inner: Arc<dyn Catalog>, retry: BusyRetry) -> Self {
        Self { inner, retry }
    }
}

#[async_trait::async_trait]
impl Catalog for BusyRetryCatalog {
    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> iceberg::Result<Vec<NamespaceIdent>> {
        retry_busy(&self.retry, "list namespaces", move || {
            self.inner.list_namespaces(parent)
        })
        .await
    }

    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<Namespace> {
        self.inner.create_namespace(namespace, properties).await
    }

    async fn get_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<Namespace> {
        retry_busy(&self.retry, "get namespace", move || {
            self.inner.get_namespace(namespace)
        })
        .await
    }

    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> iceberg::Result<bool> {
        retry_busy(&self.retry, "check namespace", move || {
            self.inner.namespace_exists(namespace)
        })
        .await
    }

    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<()> {
        self.inner.update_namespace(namespace, properties).await
    }

    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<()> {
        self.inner.drop_namespace(namespace).await
    }

    async fn list_tables(&self, namespace: &NamespaceIdent) -> iceberg::Result<Vec<TableIdent>> {
        retry_busy(&self.retry, "list tables", move || {
            self.inner.list_tables(namespace)
        })
        .await
    }

    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> iceberg::Result<Table> {
        self.inner.create_table(namespace, creation).await
    }

    async fn load_table(&self, table: &TableIdent) -> iceberg::Result<Table> {
        retry_busy(&self.retry, "load table", move || {
            self.inner.load_table(table)
        })
        .await
    }

    async fn drop_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.inner.drop_table(table).await
    }

    async fn purge_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.inner.purge_table(table).await
    }

    async fn table_exists(&self, table: &TableIdent) -> iceberg::Result<bool> {
        retry_busy(&self.retry, "check table", move || {
            self.inner.table_exists(table)
        })
        .await
    }

    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> iceberg::Result<()> {
        self.inner.rename_table(src, dest).await
    }

    async fn register_table(
        &self,
        table: &TableIdent,
        metadata_location: String,
    ) -> iceberg::Result<Table> {
        self.inner.register_table(table, metadata_location).await
    }

    async fn update_table(&self, commit: TableCommit) -> iceberg::Result<Table> {
        let ident = commit.identifier().clone();
        self.inner.update_table(commit).await.map_err(|e| {
            if is_busy_error(&e) {
                tracing::info!(table = %ident, error = %first_line(&e), "catalog database busy; the commit did not apply, marked retryable");
                e.with_retryable(true)
            } else {
                e
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_style_from_scheme_or_property() {
        assert_eq!(
            bind_style("sqlite:///data/catalog.db", None).unwrap(),
            BindStyle::QMark
        );
        assert_eq!(
            bind_style("sqlite://rel.db", None).unwrap(),
            BindStyle::QMark
        );
        assert_eq!(
            bind_style("postgres://u@h/db", None).unwrap(),
            BindStyle::DollarNumeric
        );
        assert_eq!(
            bind_style("postgresql://u@h/db", None).unwrap(),
            BindStyle::DollarNumeric
        );
        assert_eq!(
            bind_style("postgres://u@h/db", Some("QMark")).unwrap(),
            BindStyle::QMark
        );
        assert!(bind_style("oracle://x", None).is_err());
        assert!(bind_style("sqlite://x", Some("dollar")).is_err());
    }

    #[test]
    fn cas_statement_in_both_styles() {
        let q = update_sql(BindStyle::QMark);
        assert_eq!(q.matches('?').count(), 6);
        assert!(q.contains("AND metadata_location = ?"));
        assert!(q.contains("(iceberg_type = 'TABLE' OR iceberg_type IS NULL)"));
        let d = update_sql(BindStyle::DollarNumeric);
        assert!(!d.contains('?'));
        assert!(d.contains("SET metadata_location = $1, previous_metadata_location = $2"));
        assert!(d.ends_with("metadata_location = $6"));
        assert!(select_sql(BindStyle::DollarNumeric).contains("table_name = $3"));
    }

    #[test]
    fn busy_codes_by_database() {
        // SQLite: BUSY and its extended codes (RECOVERY, SNAPSHOT, TIMEOUT), LOCKED (SHAREDCACHE).
        for code in ["5", "261", "517", "773", "6", "262"] {
            assert!(sqlite_code_is_busy(code), "{code}");
        }
        // ERROR, CONSTRAINT (and PRIMARYKEY, UNIQUE), IOERR, CANTOPEN, not a number.
        for code in ["1", "19", "1555", "2067", "10", "14", "", "SQLITE_BUSY"] {
            assert!(!sqlite_code_is_busy(code), "{code}");
        }
        for code in ["40001", "40P01", "55P03"] {
            assert!(sqlstate_is_busy(code), "{code}");
        }
        // unique_violation, connection_failure, and 22021 whose low byte is 5: a SQLSTATE is
        // never read as a SQLite code.
        for code in ["23505", "08006", "22021", "5"] {
            assert!(!sqlstate_is_busy(code), "{code}");
        }
    }

    #[test]
    fn busy_retry_backs_off_within_its_budget() {
        let r = BusyRetry::default();
        let ms = Duration::from_millis;
        assert_eq!(r.wait_after(1, ms(0)), Some(ms(200)));
        assert_eq!(r.wait_after(2, ms(5_000)), Some(ms(400)));
        assert_eq!(r.wait_after(4, ms(10_000)), Some(ms(1_600)));
        assert_eq!(r.wait_after(5, ms(10_000)), Some(ms(2_000)));
        assert_eq!(r.wait_after(40, ms(10_000)), Some(ms(2_000)));
        assert_eq!(
            r.wait_after(3, ms(29_500)),
            None,
            "would start after the budget"
        );
        // With SQLite's default 5 s busy wait inside each attempt: a few attempts in 30 s.
        let (mut elapsed, mut attempts) = (Duration::ZERO, 1);
        while let Some(w) = r.wait_after(attempts, elapsed + DEFAULT_BUSY_TIMEOUT) {
            elapsed += DEFAULT_BUSY_TIMEOUT + w;
            attempts += 1;
        }
        assert!((4..=6).contains(&attempts), "{attempts}");
    }

    #[test]
    fn busy_timeout_property() {
        let props = |v: &str| BTreeMap::from([(PROP_BUSY_TIMEOUT_MS.to_string(), v.to_string())]);
        assert_eq!(
            busy_timeout(&BTreeMap::new()).unwrap(),
            DEFAULT_BUSY_TIMEOUT
        );
        assert_eq!(
            busy_timeout(&props(" 250 ")).unwrap(),
            Duration::from_millis(250)
        );
        assert!(busy_timeout(&props("5s")).is_err());
        assert!(busy_timeout(&props("-1")).is_err());
        assert!(is_sqlite("sqlite:///x.db") && is_sqlite(" SQLite://x.db"));
        assert!(!is_sqlite("postgres://h/db") && !is_sqlite("sql"));
    }

    /// A SQLite catalog database with one table row, and icemaint's backend on it.
    struct Db {
        _dir: tempfile::TempDir,
        url: String,
        backend: SqlCommitBackend,
        ident: TableIdent,
    }

    async fn sqlite_db(busy_timeout_ms: u32) -> Db {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("catalog.db").display());
        let setup = sqlx::AnyPool::connect(&format!("{url}?mode=rwc"))
            .await
            .unwrap();
        for sql in [
            "CREATE TABLE iceberg_tables (catalog_name VARCHAR(255) NOT NULL, \
             table_namespace VARCHAR(255) NOT NULL, table_name VARCHAR(255) NOT NULL, \
             metadata_location VARCHAR(1000), previous_metadata_location VARCHAR(1000), \
             iceberg_type VARCHAR(5), PRIMARY KEY (catalog_name, table_namespace, table_name))",
            "INSERT INTO iceberg_tables VALUES ('default', 'db', 't', 'v1', NULL, 'TABLE')",
        ] {
            setup.execute(sql).await.unwrap();
        }
        setup.close().await;
        let cfg = CatalogConfig {
            kind: crate::config::CatalogType::Sql,
            uri: url.clone(),
            name: "default".into(),
            warehouse: None,
            properties: BTreeMap::from([(
                PROP_BUSY_TIMEOUT_MS.to_string(),
                busy_timeout_ms.to_string(),
            )]),
        };
        let backend = SqlCommitBackend::connect(&cfg).await.unwrap();
        let ident = TableIdent::from_strs(["db", "t"]).unwrap();
        Db {
            _dir: dir,
            url,
            backend,
            ident,
        }
    }

    impl Db {
        /// A second connection holding the write lock, as `BEGIN IMMEDIATE` in another process.
        async fn hold_lock(&self) -> sqlx::AnyConnection {
            use sqlx::Connection;
            let mut conn = sqlx::AnyConnection::connect(&self.url).await.unwrap();
            conn.execute("BEGIN IMMEDIATE").await.unwrap();
            conn
        }

        async fn location(&self) -> String {
            let pool = &self.backend.pool;
            let (loc,): (String,) = sqlx::query_as("SELECT metadata_location FROM iceberg_tables")
                .fetch_one(pool)
                .await
                .unwrap();
            loc
        }
    }

    /// Busy versus conflict on a real SQLite file: a held lock makes the compare-and-swap fail
    /// as busy (retryable, not applied), a stale expected location as a miss (the conflict the
    /// commit layer re-plans on), anything else as unknown; and a lock released within the
    /// budget only delays the swap.
    #[tokio::test]
    async fn busy_is_told_apart_from_a_conflict_on_sqlite() {
        let mut db = sqlite_db(50).await;
        let ident = db.ident.clone();

        // Busy through every attempt of a short budget: not applied, reported as busy.
        db.backend.busy_retry = BusyRetry {
            budget: Duration::from_millis(300),
            ..BusyRetry::default()
        };
        let holder = db.hold_lock().await;
        let (err, attempts, _) = db.backend.swap(&ident, "v1", "v2").await.unwrap_err();
        assert!(matches!(err, SwapError::Busy(_)), "{err:?}");
        assert!(err.is_retryable());
        assert!(attempts >= 2, "{attempts}");
        let SwapError::Busy(sqlx_err) = err else {
            unreachable!()
        };
        assert!(is_busy(&sqlx_err));
        assert!(
            sqlx_err.to_string().contains("database is locked"),
            "{sqlx_err}"
        );
        // iceberg-catalog-sql wraps the sqlx error; expiry must not read it as an unknown state.
        let wrapped = iceberg::Error::new(
            ErrorKind::Unexpected,
            "operation failed for hitting sqlx error",
        )
        .with_source(sqlx_err);
        assert!(is_busy_error(&wrapped));
        assert!(matches!(
            crate::maintenance::expire::classify_commit_error(&wrapped),
            CommitError::Failed(_)
        ));
        drop(holder);
        assert_eq!(db.location().await, "v1");

        // Released within the budget: the same swap only waits, and applies once.
        db.backend.busy_retry = BusyRetry::default();
        let mut holder = db.hold_lock().await;
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            holder.execute("ROLLBACK").await.unwrap();
        });
        db.backend.swap(&ident, "v1", "v2").await.unwrap();
        release.await.unwrap();
        assert_eq!(db.location().await, "v2");

        // A stale expected location: a miss, which is the conflict, never retried as busy.
        let (err, attempts, _) = db.backend.swap(&ident, "v1", "v3").await.unwrap_err();
        assert!(matches!(err, SwapError::Missed), "{err:?}");
        assert!(!err.is_retryable());
        assert_eq!(attempts, 1);
        assert!(matches!(
            db.backend.zero_rows_error(&ident, "v1").await,
            CommitError::Conflict(_)
        ));

        // Any other database error after sending: the outcome is unknown, not busy.
        let other = db
            .backend
            .pool
            .execute("UPDATE no_such_table SET x = 1")
            .await;
        let err = SwapError::from_update(other).unwrap_err();
        assert!(matches!(err, SwapError::Unknown(_)), "{err:?}");
        assert!(!err.is_retryable());
        let wrapped = iceberg::Error::new(ErrorKind::Unexpected, "x").with_source(match err {
            SwapError::Unknown(e) => e,
            _ => unreachable!(),
        });
        assert!(!is_busy_error(&wrapped));
        assert_eq!(db.location().await, "v2");
    }
}
