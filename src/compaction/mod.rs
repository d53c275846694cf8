//! Binpack compaction: pure planning ([`plan`]), Spark-compatible options ([`options`]) and their
//! `where` filter ([`filter`]), and the I/O that reads file groups and writes them back
//! ([`rewrite`]).

pub mod filter;
pub mod options;
pub mod plan;
pub mod rewrite;
