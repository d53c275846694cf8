//! Hot partitions (`hot-partition-age`): pure planning rules for partitions a writer is still
//! appending to. No I/O and no clock: the caller puts the cutoff instant in
//! [`PlanSettings::hot_cutoff_ms`].
//!
//! Spark's binpack is stateless: a compacted file that is still below `min-file-size-bytes` is a
//! candidate again at the next run, so a growing partition is rewritten whole on every run (the
//! write amplification grows with the number of runs per day). A hot partition is planned
//! differently:
//!
//! - Only *fragments* (files below `min-file-size-bytes`) are considered; files inside the size
//!   range, too large, or with deletes wait until the partition is cold.
//! - When the fragments add up to at least `target-file-size-bytes`, they are enough for a
//!   well-sized file: the partition is planned with Spark's rules (they become target-size files
//!   that are never rewritten again).
//! - Otherwise fragments are merged in size tiers (LSM size-tiered merging): a fragment's tier is
//!   how many factors of [`TIER_FILES`] it lies below the target; a tier holding at least
//!   [`TIER_FILES`] fragments is merged into one file, which lands about one tier up. A byte is
//!   rewritten at most once per tier it climbs (at most log_k(target / append size) times) and a
//!   partition holds fewer than [`TIER_FILES`] files per tier at a compaction point. A tier whose
//!   merge would reach `min-file-size-bytes` waits for the target instead (its output would be a
//!   file below the target that Spark never merges again, leaving the partition with more files
//!   than a binpack of its data).
//!
//! Once the newest data of a partition is older than the age, it is cold and planned with Spark's
//! rules, which merge the remaining fragments into target-size files once, with one deliberate
//! difference: in a *settled* partition (cold, and no data since the last compaction planned,
//! since another partition received data, or for twice the age) any two fragments are enough for
//! a group ([`min_input_files`]), so the tail a hot partition leaves
//! (fewer than `min-input-files` fragments after its last target-size file) is merged too and the
//! partition ends with the file count a binpack of its data would give. An age much shorter
//! than the writer's pauses makes a partition still being appended to settled, and its growing
//! tail is then merged on every run (see the README's `1s` rows). Without
//! `hot-partition-age` no partition is hot and planning is exactly Spark's.

use std::collections::BTreeMap;

/// Fragments of one size tier merged together, and the size ratio between tiers (Amoro's minor
/// optimizing merges 12 fragments; 10 keeps a day of 15-minute appends under 20 files per
/// partition while rewriting each byte about once before the final binpack).
pub const TIER_FILES: usize = 10;

/// Whether a file committed at `committed_ms` makes its partition hot, given the cutoff instant
/// (`PlanSettings::hot_cutoff_ms`; `None`: nothing is hot). An unknown time never does.
pub fn is_hot(committed_ms: Option<i64>, cutoff_ms: Option<i64>) -> bool {
    matches!((committed_ms, cutoff_ms), (Some(t), Some(c)) if t >= c)
}

/// The `min-input-files` that applies: at most 2 for a settled partition (cold, and no data
/// since the last compaction planned; see the module documentation), Spark's value otherwise.
pub fn min_input_files(spark: usize, settled: bool) -> usize {
    if settled { spark.min(2) } else { spark }
}

/// The tier of a fragment of `size` bytes: 0 within a factor [`TIER_FILES`] below the target, 1
/// within the next factor, and so on.
pub fn tier(size: u64, target: u64) -> u32 {
    let k = TIER_FILES as u64;
    let mut bound = target / k;
    let mut t = 0;
    while size < bound && bound > 0 {
        bound /= k;
        t += 1;
    }
    t
}

/// What to do with a hot partition, from its candidates' sizes in scan order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HotPlan {
    /// The fragments reach the target: plan the partition with Spark's rules.
    Binpack,
    /// Merge these full tiers (indexes into the candidates, in scan order); possibly none.
    Tiers(Vec<Vec<usize>>),
}

/// The hot rule for one partition: `sizes` of its candidates, `min` and `target` the file sizes.
pub fn plan_hot(sizes: &[u64], min: u64, target: u64) -> HotPlan {
    let fragment_bytes: u64 = sizes.iter().filter(|s| **s < min).sum();
    if fragment_bytes >= target {
        return HotPlan::Binpack;
    }
    let mut tiers: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, size) in sizes.iter().enumerate() {
        if *size < min {
            tiers.entry(tier(*size, target)).or_default().push(i);
        }
    }
    // A merge that would reach the min size waits for the target instead: its output would be a
    // file Spark never merges again, smaller than the target, so the partition would end with
    // more files than a binpack of its data.
    HotPlan::Tiers(
        tiers
            .into_values()
            .filter(|t| t.len() >= TIER_FILES && t.iter().map(|i| sizes[*i]).sum::<u64>() < min)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compaction::options::CompactionOptions;
    use crate::compaction::plan::{CandidateFile, GroupReason, PlanSettings, plan};

    fn settings(target: u64, cutoff: Option<i64>) -> PlanSettings {
        let o = CompactionOptions {
            target_file_size_bytes: target,
            min_file_size_bytes: target * 3 / 4,
            max_file_size_bytes: target * 18 / 10,
            ..CompactionOptions::default()
        };
        PlanSettings {
            hot_cutoff_ms: cutoff,
            ..PlanSettings::new(&o, 0)
        }
    }

    fn file(i: usize, partition: &str, size: u64, committed_ms: i64) -> CandidateFile {
        CandidateFile {
            path: format!("f{i:04}").into(),
            size_bytes: size,
            record_count: 1,
            spec_id: 0,
            partition: partition.into(),
            delete_file_count: 0,
            deleted_records: 0,
            committed_ms: Some(committed_ms),
        }
    }

    #[test]
    fn tiers_are_factors_below_the_target() {
        let cases = [
            (10_000, 100_000, 0),
            (9_999, 100_000, 1),
            (1_000, 100_000, 1),
            (999, 100_000, 2),
            (0, 100_000, 5),
            (5, 0, 0),
        ];
        for (size, target, want) in cases {
            assert_eq!(tier(size, target), want, "{size} at {target}");
        }
    }

    #[test]
    fn hot_partition_merges_full_tiers_only() {
        // Target 100 000: 12 fragments of 1 500 (tier 1), 3 of 20 000 (tier 0), one well-sized.
        let s = settings(100_000, Some(50));
        let mut files: Vec<CandidateFile> = (0..12).map(|i| file(i, "d=2", 1_500, 60)).collect();
        files.extend((12..15).map(|i| file(i, "d=2", 20_000, 10)));
        files.push(file(15, "d=2", 90_000, 10));
        let p = plan(&files, &s);
        assert_eq!(p.hot_partitions, 1);
        assert_eq!(p.groups.len(), 1);
        assert_eq!(p.groups[0].files.len(), 12);
        assert_eq!(p.groups[0].reasons, vec![GroupReason::HotTier]);

        // The same partition once cold: Spark's binpack takes every fragment.
        let cold = plan(&files, &settings(100_000, Some(61)));
        assert_eq!(cold.hot_partitions, 0);
        assert_eq!(cold.rewrite_files, 15);

        // Fragments reaching the target: Spark's rules even while hot.
        let mut enough = files.clone();
        enough.extend((16..20).map(|i| file(i, "d=2", 20_000, 60)));
        let p = plan(&enough, &s);
        assert_eq!(p.hot_partitions, 0);
        assert_eq!(p.rewrite_files, 19);
    }

    #[test]
    fn only_hot_partitions_are_held_back() {
        let s = settings(100_000, Some(50));
        let mut files: Vec<CandidateFile> = (0..6).map(|i| file(i, "d=1", 1_500, 10)).collect();
        files.extend((6..12).map(|i| file(i, "d=2", 1_500, 70)));
        let p = plan(&files, &s);
        assert_eq!(p.hot_partitions, 1);
        assert_eq!(p.groups.len(), 1);
        assert_eq!(p.groups[0].partition, "d=1");
        // rewrite-all ignores hotness.
        let all = plan(
            &files,
            &PlanSettings {
                rewrite_all: true,
                ..s
            },
        );
        assert_eq!(all.rewrite_files, 12);
    }
}
