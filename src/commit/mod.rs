//! Building and validating an Iceberg `replace` snapshot, shared by compaction and manifest rewrite.
//!
//! iceberg-rust 0.10.1 has no RewriteFiles action, so icemaint writes the manifests, the manifest
//! list and the snapshot itself, validates the snapshots committed since the starting one (Java's
//! `validateFromSnapshot`), and hands the resulting metadata updates to a [`crate::catalog`] commit
//! backend.
