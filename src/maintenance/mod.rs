//! Table maintenance other than compaction: property reconciliation, snapshot expiry, orphan-file
//! removal and manifest rewrite.

pub mod manifests;
pub mod properties;
