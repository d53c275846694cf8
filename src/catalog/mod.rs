//! Catalog access: building the iceberg catalog client from the configuration, loading tables, and
//! the commit backends ([`rest`], [`sql`]) that send icemaint's own metadata changes (the `replace`
//! snapshot) to the catalog.

pub mod rest;
pub mod sql;

use std::fmt::Debug;

use iceberg::TableRequirement;
use iceberg::TableUpdate;
use iceberg::spec::TableMetadata;
use iceberg::table::Table;

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
