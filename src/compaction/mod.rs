//! Binpack compaction: pure planning ([`plan`]), Spark-compatible options ([`options`]) and the I/O
//! that reads file groups and writes them back ([`rewrite`]).

pub mod options;
pub mod plan;
pub mod rewrite;
