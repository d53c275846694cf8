//! Catalog access: building the iceberg catalog client from the configuration, loading tables, and
//! the commit backends that send icemaint's own metadata changes (the `replace` snapshot) to the
//! catalog.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use iceberg::spec::TableMetadata;
use iceberg::table::Table;
use iceberg::{Catalog, CatalogBuilder, NamespaceIdent, TableIdent, TableRequirement, TableUpdate};
use iceberg_catalog_rest::RestCatalogBuilder;
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalogBuilder};
use iceberg_storage_opendal::OpenDalResolvingStorageFactory;

use crate::config::{CatalogConfig, CatalogType};

pub mod fenced;
pub mod rest;
pub mod sql;
pub mod stats;
pub mod walk;

/// Errors reaching the catalog or finding tables in it.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("invalid table name '{0}': expected namespace.table")]
    BadName(String),
    #[error("table {0} not found")]
    TableNotFound(String),
    #[error("catalog {uri}: {message}")]
    Unreachable { uri: String, message: String },
    #[error("catalog: {0}")]
    Iceberg(#[source] iceberg::Error),
}

impl CatalogError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, CatalogError::Unreachable { .. })
    }
}

/// The configured catalog, shared by every task.
#[derive(Debug, Clone)]
pub struct CatalogHandle {
    pub catalog: Arc<dyn Catalog>,
    pub config: CatalogConfig,
    /// Created on first use, so the daemon starts (not ready) while the catalog is unreachable.
    committer: Arc<tokio::sync::OnceCell<Arc<dyn CommitBackend>>>,
}

/// Parses `ns.table` (namespace levels separated by dots, the table name after the last dot).
pub fn parse_ident(name: &str) -> Result<TableIdent, CatalogError> {
    let (ns, table) = name
        .rsplit_once('.')
        .ok_or_else(|| CatalogError::BadName(name.to_string()))?;
    if ns.is_empty() || table.is_empty() || ns.split('.').any(str::is_empty) {
        return Err(CatalogError::BadName(name.to_string()));
    }
    let ns = NamespaceIdent::from_strs(ns.split('.')).map_err(CatalogError::Iceberg)?;
    Ok(TableIdent::new(ns, table.to_string()))
}

/// Numeric value of a format version.
pub fn format_version_number(v: iceberg::spec::FormatVersion) -> u8 {
    use iceberg::spec::FormatVersion;
    match v {
        FormatVersion::V1 => 1,
        FormatVersion::V2 => 2,
        FormatVersion::V3 => 3,
    }
}

/// `ns.table` for an identifier.
pub fn ident_name(ident: &TableIdent) -> String {
    format!("{}.{}", ident.namespace().join("."), ident.name())
}

impl CatalogHandle {
    /// Builds the catalog client. REST clients connect lazily; SQL catalogs open their pool here.
    pub async fn connect(config: &CatalogConfig) -> Result<Self, CatalogError> {
        let mut props: HashMap<String, String> = config
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        props.insert("uri".into(), config.uri.clone());
        if let Some(w) = &config.warehouse {
            props.insert("warehouse".into(), w.clone());
        }
        let factory = Arc::new(OpenDalResolvingStorageFactory::new());
        let catalog: Arc<dyn Catalog> = match config.kind {
            CatalogType::Rest => Arc::new(
                RestCatalogBuilder::default()
                    .with_storage_factory(factory)
                    .load(config.name.clone(), props)
                    .await
                    .map_err(|e| unreachable(config, e))?,
            ),
            CatalogType::Sql => {
                let style = || {
                    if config.uri.starts_with("postgres") {
                        SqlBindStyle::DollarNumeric
                    } else {
                        SqlBindStyle::QMark
                    }
                };
                // Loading creates the catalog tables if missing, which waits for (and can fail
                // on) another writer's lock like any read; see `sql::BusyRetryCatalog`.
                let retry = sql::BusyRetry::default();
                let client = sql::retry_busy(&retry, "connect to the sql catalog", || {
                    SqlCatalogBuilder::default()
                        .sql_bind_style(style())
                        .with_storage_factory(Arc::clone(&factory) as _)
                        .load(config.name.clone(), props.clone())
                })
                .await
                .map_err(|e| unreachable(config, e))?;
                Arc::new(sql::BusyRetryCatalog::new(Arc::new(client), retry))
            }
        };
        Ok(Self {
            catalog,
            config: config.clone(),
            committer: Arc::new(tokio::sync::OnceCell::new()),
        })
    }

    /// The same configuration with another catalog client (tests wrap the real one to inject
    /// failures); the commit backend is created anew on first use.
    pub fn with_catalog(&self, catalog: Arc<dyn Catalog>) -> Self {
        Self {
            catalog,
            config: self.config.clone(),
            committer: Arc::new(tokio::sync::OnceCell::new()),
        }
    }

    /// The commit backend for icemaint's own snapshots (REST or SQL, like the catalog).
    pub async fn committer(&self) -> Result<Arc<dyn CommitBackend>, CatalogError> {
        let backend = self
            .committer
            .get_or_try_init(|| async {
                let b: Arc<dyn CommitBackend> = match self.config.kind {
                    CatalogType::Rest => Arc::new(
                        rest::RestCommitBackend::connect(&self.config)
                            .await
                            .map_err(|e| CatalogError::Unreachable {
                                uri: crate::store::redact_url(&self.config.uri),
                                message: e.to_string(),
                            })?,
                    ),
                    CatalogType::Sql => {
                        Arc::new(sql::SqlCommitBackend::connect(&self.config).await.map_err(
                            |e| CatalogError::Unreachable {
                                uri: crate::store::redact_url(&self.config.uri),
                                message: e.to_string(),
                            },
                        )?)
                    }
                };
                Ok::<_, CatalogError>(b)
            })
            .await?;
        Ok(Arc::clone(backend))
    }

    /// Every table of every namespace (nested namespaces included), as `ns.table` names.
    pub async fn list_tables(&self) -> Result<Vec<String>, CatalogError> {
        let mut out = Vec::new();
        let mut pending: Vec<Option<NamespaceIdent>> = vec![None];
        while let Some(parent) = pending.pop() {
            let children = self
                .catalog
                .list_namespaces(parent.as_ref())
                .await
                .map_err(|e| unreachable(&self.config, e))?;
            for ns in children {
                let tables = self
                    .catalog
                    .list_tables(&ns)
                    .await
                    .map_err(|e| unreachable(&self.config, e))?;
                out.extend(tables.iter().map(ident_name));
                // Some catalogs list all levels at once; only descend into true children.
                if parent.as_ref().is_none_or(|p| ns.len() > p.len()) && ns.len() < 8 {
                    pending.push(Some(ns));
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Loads `ns.table`.
    pub async fn load(&self, name: &str) -> Result<Table, CatalogError> {
        let ident = parse_ident(name)?;
        self.catalog
            .load_table(&ident)
            .await
            .map_err(|e| match e.kind() {
                iceberg::ErrorKind::TableNotFound | iceberg::ErrorKind::NamespaceNotFound => {
                    CatalogError::TableNotFound(name.to_string())
                }
                _ if is_not_found_message(&e) => CatalogError::TableNotFound(name.to_string()),
                _ => unreachable(&self.config, e),
            })
    }
}

/// Some catalogs (the SQL catalog) report a missing table as `DataInvalid` with a message.
fn is_not_found_message(e: &iceberg::Error) -> bool {
    let m = e.to_string().to_ascii_lowercase();
    m.contains("no such table") || m.contains("does not exist") || m.contains("not found")
}

fn unreachable(config: &CatalogConfig, e: iceberg::Error) -> CatalogError {
    // iceberg errors can carry request details; keep the first line, it says what failed.
    let message = e.to_string();
    let message = message.lines().next().unwrap_or_default().to_string();
    CatalogError::Unreachable {
        uri: crate::store::redact_url(&config.uri),
        message,
    }
}

/// Why a commit did not land.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The catalog refused the change because the table moved on (REST 409, SQL compare-and-swap
    /// missed): reload, re-validate, rebuild, retry.
    #[error("commit conflict: {0}")]
    Conflict(String),
    /// The catalog may or may not have applied the change (5xx, timeout): reload and look for the
    /// snapshot; never clean up written files in this state.
    #[error("commit state unknown: {0}")]
    StateUnknown(String),
    #[error("table not found: {0}")]
    NotFound(String),
    #[error("commit failed: {0}")]
    Failed(String),
}

impl CommitError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, CommitError::Conflict(_))
    }
}

/// Sends a metadata change computed against `base` to the catalog, atomically guarded by
/// `requirements`.
#[async_trait::async_trait]
pub trait CommitBackend: Send + Sync + Debug {
    async fn commit(
        &self,
        base: &Table,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
    ) -> Result<Table, CommitError>;
}

/// The table a backend returns after a successful commit: the new metadata and location, with the
/// base table's identifier and `FileIO` (the catalog's storage settings do not change on commit).
pub(crate) fn table_after_commit(
    base: &Table,
    metadata: TableMetadata,
    metadata_location: String,
) -> iceberg::Result<Table> {
    Table::builder()
        .identifier(base.identifier().clone())
        .file_io(base.file_io().clone())
        .metadata(metadata)
        .metadata_location(metadata_location)
        .runtime(iceberg::Runtime::try_current()?)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idents() {
        let i = parse_ident("metrics.rollups_1m").unwrap();
        assert_eq!(i.name(), "rollups_1m");
        assert_eq!(ident_name(&i), "metrics.rollups_1m");
        assert_eq!(ident_name(&parse_ident("a.b.c").unwrap()), "a.b.c");
        for bad in ["nodot", ".t", "ns.", "a..b"] {
            assert!(parse_ident(bad).is_err(), "{bad}");
        }
    }
}
