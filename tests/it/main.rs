//! Integration tests: one test binary (`cargo test --test it`). Add a module per area below.

mod commit_rest;
mod compaction;
mod daemon;
mod harness;
mod peers_smoke;
