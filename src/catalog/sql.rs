//! Commit backend for SQL catalogs (the `iceberg_tables` schema shared by Java's `JdbcCatalog`,
//! PyIceberg's `SqlCatalog` and iceberg-catalog-sql).
//!
//! A commit writes the next metadata file next to the current one, then swaps the table's row from
//! the current location to the new one with a single compare-and-swap `UPDATE`. Zero rows updated
//! means another writer got there first. The backend has its own small pool so that commits do not
//! queue behind the catalog client's reads.

use std::str::FromStr;
use std::time::Duration;

use iceberg::spec::TableMetadata;
use iceberg::table::Table;
use iceberg::{ErrorKind, MetadataLocation, TableIdent, TableRequirement, TableUpdate};
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

use super::{CommitBackend, CommitError, table_after_commit};
use crate::config::CatalogConfig;

/// Catalog property choosing the placeholder style (same key and values as iceberg-catalog-sql).
const PROP_BIND_STYLE: &str = "sql_bind_style";
/// Catalog property: connections in the commit pool.
const PROP_POOL_MAX: &str = "pool.max-connections";
const DEFAULT_POOL_MAX: u32 = 2;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

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
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(uri)
            .await
            .map_err(SqlBackendError::Connect)?;
        Ok(Self {
            pool,
            catalog_name: cfg.name.clone(),
            update_sql: update_sql(bind),
            select_sql: select_sql(bind),
        })
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

/// Errors after which the statement certainly did not apply and a retry is reasonable: lock
/// contention and serialization failures.
fn is_contention(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    let Some(code) = db.code() else {
        return false;
    };
    // Postgres SQLSTATEs: serialization_failure, deadlock_detected, lock_not_available.
    if matches!(code.as_ref(), "40001" | "40P01" | "55P03") {
        return true;
    }
    // SQLite (extended) result codes: the primary code is the low byte; BUSY = 5, LOCKED = 6.
    code.parse::<i64>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
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

        // Until the statement is sent nothing can have changed in the catalog.
        let mut conn = match self.pool.acquire().await {
            Ok(c) => c,
            Err(e) => {
                delete_quietly(base, &new_location).await;
                return Err(failed("cannot reach the sql catalog database", e));
            }
        };
        let namespace = ident.namespace().join(".");
        let result = sqlx::query(&self.update_sql)
            .bind(&new_location)
            .bind(&current)
            .bind(&self.catalog_name)
            .bind(&namespace)
            .bind(ident.name())
            .bind(&current)
            .execute(&mut *conn)
            .await;
        drop(conn);

        match result {
            Ok(r) if r.rows_affected() == 0 => {
                delete_quietly(base, &new_location).await;
                let err = self.zero_rows_error(ident, &current).await;
                tracing::info!(table = %ident, error = %err, "sql commit lost the compare-and-swap");
                return Err(err);
            }
            Ok(_) => {}
            Err(e) if is_contention(&e) => {
                delete_quietly(base, &new_location).await;
                return Err(CommitError::Conflict(format!(
                    "{ident}: catalog database busy: {e}"
                )));
            }
            Err(e) => {
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
}
