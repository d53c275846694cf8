//! icemaint: an always-on Apache Iceberg table maintenance daemon.
//!
//! The modules read top-down and import only downwards (ARCHITECTURE.md draws the map; the test
//! `tests/it/layout.rs` checks it):
//! the binary (`src/main.rs`, clap only) → [`cli`] → [`runtime`] → [`server`], [`scheduler`] →
//! [`dispatch`] → [`daemon`] (shared state) → [`ops`] and [`inspect`] → [`compaction`],
//! [`maintenance`] → [`commit`] → [`catalog`], [`jobs`], [`policy`], [`trigger`], [`budget`], [`config`], [`fence`] →
//! [`store`], [`telemetry`] → [`tomlcheck`], [`util`].

pub mod bench;
pub mod budget;
pub mod catalog;
pub mod cli;
pub mod commit;
pub mod compaction;
pub mod config;
pub mod crashpoint;
pub mod daemon;
pub mod demo;
pub mod dispatch;
pub mod fence;
pub mod inspect;
pub mod jobs;
pub mod maintenance;
pub mod ops;
pub mod policy;
pub mod runtime;
pub mod scheduler;
pub mod server;
pub mod spark;
pub mod store;
pub mod telemetry;
pub mod tomlcheck;
pub mod trigger;
pub mod util;
