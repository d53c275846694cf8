//! What a group rewrite holds in memory, and the budget that bounds how many run at once.
//!
//! A group's output file is built in memory one row group at a time: arrow-rs's Parquet writer
//! (like Java's) keeps every column chunk of the open row group, encoded and compressed, until
//! the row group is full or the file closes. A row group is at most
//! `write.parquet.row-group-size-bytes` (128 MiB by default) and, for the small files compaction
//! makes large, usually the whole output file. Spark's default of five concurrent groups is five
//! such buffers: at the benchmark's 10x input (~41 MB per output) that alone was ~200 MB of a
//! 339-412 MiB peak. `max-rewrite-memory-bytes` (icemaint's own option) bounds the sum of the
//! estimates of the groups running at once, on top of `max-concurrent-file-group-rewrites`.
//!
//! Pure: sizes in, permits out; [`super::Run`] holds the semaphore.

/// Bytes a running group holds besides its output row group: the input file being decoded (its
/// column chunks), the read-ahead on object stores (up to 8 MiB), two decoded batches and the
/// writer's open pages and dictionaries. A rough constant: it matters only when row groups are
/// small, and then only to stop hundreds of tiny groups from running at once.
pub const GROUP_OVERHEAD_BYTES: u64 = 8 * 1024 * 1024;

/// Java's `PARQUET_ROW_GROUP_SIZE_BYTES_DEFAULT`.
pub const DEFAULT_ROW_GROUP_BYTES: u64 = 128 * 1024 * 1024;

/// One budget unit, so that budgets up to 4 TiB fit the semaphore's `u32` permit counts.
const UNIT_BYTES: u64 = 1024;

/// About what rewriting a group of `input_bytes` holds in memory at its peak: the largest row
/// group it can buffer (its output is about as large as its compressed input, a row group is at
/// most `row_group_bytes`), with a quarter more for the pages and dictionaries not yet flushed,
/// plus [`GROUP_OVERHEAD_BYTES`].
pub fn group_estimate_bytes(input_bytes: u64, row_group_bytes: u64) -> u64 {
    let buffered = input_bytes.min(row_group_bytes);
    buffered
        .saturating_add(buffered / 4)
        .saturating_add(GROUP_OVERHEAD_BYTES)
}

/// The budget in semaphore permits.
pub fn budget_permits(budget_bytes: u64) -> u32 {
    u32::try_from(budget_bytes.div_ceil(UNIT_BYTES).max(1)).unwrap_or(u32::MAX)
}

/// The permits a group takes from a budget of `budget_bytes`: its estimate, but never more than
/// the whole budget, so a group larger than the budget still runs (alone) instead of waiting
/// forever.
pub fn group_permits(estimate_bytes: u64, budget_bytes: u64) -> u32 {
    budget_permits(estimate_bytes.min(budget_bytes))
}

/// The table's `write.parquet.row-group-size-bytes`, or Java's default when unset. A malformed
/// value is refused by the writer before any group starts; here it falls back to the default.
pub fn row_group_bytes(properties: &std::collections::HashMap<String, String>) -> u64 {
    properties
        .get("write.parquet.row-group-size-bytes")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|v| *v > 0)
        .unwrap_or(DEFAULT_ROW_GROUP_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compaction::options::DEFAULT_MAX_REWRITE_MEMORY_BYTES;

    const MIB: u64 = 1024 * 1024;

    /// How many groups of `input_bytes` run at once under the default budget.
    fn concurrent(input_bytes: u64, row_group_bytes: u64) -> u64 {
        let per = u64::from(group_permits(
            group_estimate_bytes(input_bytes, row_group_bytes),
            DEFAULT_MAX_REWRITE_MEMORY_BYTES,
        ));
        u64::from(budget_permits(DEFAULT_MAX_REWRITE_MEMORY_BYTES)) / per
    }

    #[test]
    fn estimates_follow_the_row_group_not_the_input() {
        let table: &[(u64, u64, u64)] = &[
            // (input bytes, row group bytes, estimate)
            (0, 128 * MIB, 8 * MIB),
            (4 * MIB, 128 * MIB, 5 * MIB + 8 * MIB),
            (40 * MIB, 128 * MIB, 50 * MIB + 8 * MIB),
            (100 * 1024 * MIB, 128 * MIB, 160 * MIB + 8 * MIB),
            (100 * 1024 * MIB, 8 * MIB, 10 * MIB + 8 * MIB),
            (u64::MAX, u64::MAX, u64::MAX),
        ];
        for &(input, row_group, want) in table {
            assert_eq!(
                group_estimate_bytes(input, row_group),
                want,
                "{input} {row_group}"
            );
        }
    }

    #[test]
    fn the_default_budget_runs_small_groups_widely_and_large_ones_narrowly() {
        // 1x benchmark groups (~4 MB): far more than Spark's 5 would fit.
        assert!(concurrent(4_140_000, DEFAULT_ROW_GROUP_BYTES) >= 5);
        // 10x benchmark groups (~41 MB): two at once.
        assert_eq!(concurrent(41_400_000, DEFAULT_ROW_GROUP_BYTES), 2);
        // Production groups (GBs, 128 MiB row groups): one at a time, never zero.
        assert_eq!(concurrent(50 * 1024 * MIB, DEFAULT_ROW_GROUP_BYTES), 1);
    }

    #[test]
    fn a_group_larger_than_the_budget_takes_the_whole_budget() {
        let budget = 64 * MIB;
        assert_eq!(
            group_permits(1024 * MIB, budget),
            budget_permits(budget),
            "it must run alone, not wait forever"
        );
        assert_eq!(budget_permits(0), 1);
        assert_eq!(budget_permits(u64::MAX), u32::MAX);
    }

    #[test]
    fn row_group_size_comes_from_the_table() {
        let props = |v: &str| {
            std::collections::HashMap::from([(
                "write.parquet.row-group-size-bytes".to_string(),
                v.to_string(),
            )])
        };
        assert_eq!(row_group_bytes(&props("8388608")), 8 * MIB);
        assert_eq!(row_group_bytes(&props("0")), DEFAULT_ROW_GROUP_BYTES);
        assert_eq!(row_group_bytes(&props("x")), DEFAULT_ROW_GROUP_BYTES);
        assert_eq!(
            row_group_bytes(&Default::default()),
            DEFAULT_ROW_GROUP_BYTES
        );
    }
}
