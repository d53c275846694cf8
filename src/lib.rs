//! icemaint: an always-on Apache Iceberg table maintenance daemon.
//!
//! The binary (`src/main.rs`) only parses the command line and calls [`app`]. Everything else is
//! organised by responsibility: configuration and policies, catalog access and commit backends, the
//! shared `replace` commit, compaction (pure planning plus I/O rewriting), metadata maintenance,
//! one job model with a per-table lock, the scheduler, the state store, and the HTTP server.

pub mod app;
pub mod bench;
pub mod catalog;
pub mod commit;
pub mod compaction;
pub mod config;
pub mod crashpoint;
pub mod demo;
pub mod jobs;
pub mod maintenance;
pub mod policy;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod telemetry;
