//! Integration tests: one test binary (`cargo test --test it`). Add a module per area below.

mod api;
mod bench_smoke;
mod commit_rest;
mod compaction;
mod compaction_parity;
mod crash;
mod daemon;
mod deploy;
mod format_v1;
mod harness;
mod layout;
mod observe;
mod ops_util;
mod peers_smoke;
mod postgres;
mod pruning;
mod replicas;
mod soak;
mod spark_cluster;
mod spark_engine;
mod sqlite_busy;
mod status_page;
mod triggers;
mod vended;
mod watching;
