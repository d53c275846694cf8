//! The operations, one per job kind, as the dispatcher runs them: each turns a table, its policy
//! and the per-run overrides into a [`crate::jobs::JobOutcome`] (status, JSON detail, error).
//!
//! They take the narrow dependencies they use ([`Deps`]: catalog, state store, metrics, a
//! cancellation token) and never the daemon's context, so each can run from the daemon, the CLI
//! or a test alike. The engines they drive live below: [`crate::compaction`] (pure planning, then
//! rewrite and commit) and [`crate::maintenance`] (properties, expiry, orphans, manifests), or,
//! for a compaction whose engine is Spark, [`crate::spark`] ([`engine`] decides which).

use tokio_util::sync::CancellationToken;

use crate::catalog::CatalogHandle;
use crate::config::SparkConfig;
use crate::fence::Fence;
use crate::store::Store;
use crate::telemetry::Metrics;

pub mod compact;
pub mod engine;
pub mod manifests;
pub mod prune;
pub mod reconcile;

/// What an operation may touch.
#[derive(Debug, Clone, Copy)]
pub struct Deps<'a> {
    pub catalog: &'a CatalogHandle,
    /// For the operation's own records (property changes); job records are the dispatcher's.
    pub store: &'a Store,
    pub metrics: &'a Metrics,
    /// Stops new work from starting; a commit already sent is never cut off. The job's token:
    /// cancelled on shutdown and when the job's table lease is lost.
    pub cancel: &'a CancellationToken,
    /// The job's lease as a fencing token, checked before every commit and deletion.
    pub fence: &'a Fence,
    /// `[spark]`: where compactions handed to Spark are submitted.
    pub spark: &'a SparkConfig,
}
