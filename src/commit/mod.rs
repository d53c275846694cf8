//! Building and validating an Iceberg `replace` snapshot, shared by compaction and manifest rewrite.
//!
//! iceberg-rust 0.10.1 has no RewriteFiles action, so icemaint writes the manifests, the manifest
//! list and the snapshot itself, validates the snapshots committed since the starting one (Java's
//! `validateFromSnapshot`), and hands the resulting metadata updates to a [`crate::catalog`] commit
//! backend.
//!
//! - [`replace`]: compaction's change, [`commit_replace`] with [`ReplaceDataFiles`].
//! - [`producer`]: the reusable part — [`SnapshotChange`] (an operation that writes its manifests
//!   on a freshly loaded table), [`SnapshotProducer`] (manifest writers, manifest list, snapshot,
//!   updates, cleanup) and [`commit_change`] (the attempt / conflict / unknown-state loop).
//! - [`validate`], [`summary`], [`retry`]: pure rules, unit-tested without I/O.

pub mod producer;
pub mod replace;
pub mod retry;
pub mod summary;
pub mod validate;

use std::collections::HashMap;

use iceberg::table::Table;

use crate::fence::FenceError;

pub use producer::{BuiltSnapshot, SnapshotChange, SnapshotProducer, commit_change};
pub use replace::{ReplaceDataFiles, commit_replace};
pub use retry::RetryPolicy;

/// A committed snapshot.
#[derive(Debug, Clone)]
pub struct CommitOutcome {
    /// Id of the new snapshot (now `main`'s head, unless another writer already moved on).
    pub snapshot_id: i64,
    /// Attempts it took, 1 when the first one landed.
    pub attempts: u32,
    /// The table as the catalog returned it after the commit.
    pub table: Table,
    /// The new snapshot's summary (without `operation`).
    pub summary: HashMap<String, String>,
}

/// Why a replace (or other snapshot) commit did not happen.
///
/// For every variant except [`ReplaceError::StateUnknown`] nothing was committed, and the caller
/// should delete the data files it wrote for the change; see [`ReplaceError::may_have_committed`].
#[derive(Debug, thiserror::Error)]
pub enum ReplaceError {
    /// The change neither deletes nor adds files.
    #[error("nothing to commit: the change neither deletes nor adds data files")]
    EmptyChange,
    /// The change itself is malformed (added delete files, duplicates, ...).
    #[error("invalid change: {0}")]
    InvalidChange(String),
    /// The table cannot be committed to safely by this code (format version 1 or 3).
    #[error("unsupported table: {0}")]
    Unsupported(String),
    /// Concurrent changes since the starting snapshot make the rewrite wrong: replaced files are
    /// gone, new deletes apply to them, or the starting snapshot is no longer an ancestor of
    /// `main`. Redo the rewrite from the current snapshot.
    #[error("validation failed: {0}")]
    Validation(String),
    /// Every attempt lost a compare-and-swap race within the retry budget.
    #[error("commit conflicts after {attempts} attempts: {last}")]
    RetriesExhausted { attempts: u32, last: String },
    /// The catalog may or may not hold the snapshot. Do not delete any written file: it may be
    /// part of the table.
    #[error("commit state unknown: {0}")]
    StateUnknown(String),
    #[error("table not found: {0}")]
    NotFound(String),
    /// The catalog definitely refused the commit (bad request, permission, ...).
    #[error("commit failed: {0}")]
    Commit(String),
    /// Loading the table from the catalog failed.
    #[error("cannot load table: {0}")]
    Catalog(#[source] iceberg::Error),
    /// Reading or writing metadata files failed.
    #[error("iceberg: {0}")]
    Iceberg(#[from] iceberg::Error),
    /// The job's table lease was lost: nothing was sent to the catalog.
    #[error(transparent)]
    Fenced(#[from] FenceError),
}

impl ReplaceError {
    /// Whether running the same change again later may succeed without redoing the rewrite.
    pub fn is_retryable(&self) -> bool {
        match self {
            ReplaceError::RetriesExhausted { .. } | ReplaceError::Catalog(_) => true,
            // Reading/writing files: storage hiccups surface as `Unexpected`.
            ReplaceError::Iceberg(e) => e.retryable() || e.kind() == iceberg::ErrorKind::Unexpected,
            _ => false,
        }
    }

    /// Whether the snapshot may be in the table: then the caller must keep its data files.
    pub fn may_have_committed(&self) -> bool {
        matches!(self, ReplaceError::StateUnknown(_))
    }
}

// Crate-visible so the manifest rewrite's tests commit to the same kind of table.
#[cfg(test)]
pub(crate) mod tests;
