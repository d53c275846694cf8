//! The maintenance engines other than compaction: property drift and reconciliation
//! ([`properties`]), snapshot expiry ([`expire`]), orphan-file removal ([`orphans`]), manifest
//! rewrite ([`manifests`]) and the file deletion they share ([`files`]).
//!
//! Each takes the catalog handle and what else it needs, and returns a report; turning a policy
//! and per-run overrides into a run and its job outcome is [`crate::ops`]'s work.

pub mod expire;
pub mod files;
pub mod manifests;
pub mod orphans;
pub mod properties;
