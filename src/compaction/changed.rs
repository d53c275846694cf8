//! Incremental planning under `hot-partition-age`: only partitions that changed since the table's
//! last compaction are planned. Pure; the watermark comes in `PlanSettings::changed_since_ms`.
//!
//! The watermark is the last compaction's *cold-through* instant: its planning time minus its
//! hot age (recorded in its `replace` snapshot's summary, see [`COLD_THROUGH_MS`]). Every
//! partition whose newest data was older was cold then and got Spark's binpack, so replanning it
//! finds the same answer; a partition with newer data either received data since or was hot then
//! and still needs its final binpack once cold (the pitfall of a watermark at the compaction
//! itself). A partition with delete files is always planned (their age is not tracked), and so is
//! one holding a file whose commit time is unknown.

/// Summary property of icemaint's `replace` snapshots: the cold-through instant (ms since the
/// epoch) of the run that committed it; only written by all-or-nothing runs (without partial
/// progress), so every group it planned is in the snapshot.
pub const COLD_THROUGH_MS: &str = "icemaint.cold-through-ms";
/// Summary property: when the run planned (ms since the epoch); partitions with no data since are
/// settled (see `super::hot`).
pub const PLANNED_AT_MS: &str = "icemaint.planned-at-ms";
/// Summary property: [`plan_key`] of the options the run planned with; another key (other sizes,
/// a `where` filter) means its watermark does not apply.
pub const PLAN_KEY: &str = "icemaint.plan-key";

/// Whether a file makes its partition one to plan, given the watermark (`None`: every file does):
/// data committed at or after it, an unknown commit time, or delete files.
pub fn is_changed(committed_ms: Option<i64>, delete_files: usize, since_ms: Option<i64>) -> bool {
    match since_ms {
        None => true,
        Some(since) => delete_files > 0 || committed_ms.is_none_or(|t| t >= since),
    }
}

/// A stable fingerprint (FNV-1a, hex) of the options that decide a plan, `hot-partition-age`
/// excepted (the watermark already accounts for the age it was planned with).
pub fn plan_key(options: &super::options::CompactionOptions) -> String {
    let mut o = options.clone();
    o.hot_partition_age_secs = None;
    let text = serde_json::to_string(&o).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compaction::options::CompactionOptions;
    use crate::compaction::plan::{CandidateFile, PlanSettings, plan};

    fn file(i: usize, partition: &str, committed_ms: i64) -> CandidateFile {
        CandidateFile {
            path: format!("f{i:05}").into(),
            size_bytes: 1_000,
            record_count: 1,
            spec_id: 0,
            partition: partition.into(),
            delete_file_count: 0,
            deleted_records: 0,
            committed_ms: Some(committed_ms),
        }
    }

    /// 1 000 partitions of small files, one of them appended to since the watermark: only that
    /// one is planned, although every partition has files to compact.
    #[test]
    fn only_the_changed_partition_is_planned() {
        let o = CompactionOptions {
            target_file_size_bytes: 100_000,
            min_file_size_bytes: 75_000,
            max_file_size_bytes: 180_000,
            min_input_files: 2,
            ..CompactionOptions::default()
        };
        let mut files = Vec::new();
        for p in 0..1_000 {
            for k in 0..3 {
                files.push(file(p * 3 + k, &format!("p={p:04}"), 100));
            }
        }
        files.push(file(9_999, "p=0421", 5_000));
        let s = PlanSettings {
            // Everything cold now; the last run was when p=0007's data was still hot.
            hot_cutoff_ms: Some(6_000),
            changed_since_ms: Some(4_000),
            ..PlanSettings::new(&o, 0)
        };
        let p = plan(&files, &s);
        assert_eq!(p.unchanged_partitions, 999);
        assert_eq!(p.groups.len(), 1);
        assert_eq!(p.groups[0].partition, "p=0421");
        assert_eq!(p.groups[0].files.len(), 4);
        // Without the watermark, every partition.
        let all = plan(
            &files,
            &PlanSettings {
                changed_since_ms: None,
                ..s.clone()
            },
        );
        assert_eq!(all.groups.len(), 1_000);
        assert_eq!(all.unchanged_partitions, 0);

        // A partition that was hot at the last run (data after the watermark, nothing new
        // since) is still planned: its final binpack once cold.
        let mut was_hot = files.clone();
        was_hot.push(file(10_000, "p=0007", 4_500));
        let p = plan(&was_hot, &s);
        let parts: Vec<&str> = p.groups.iter().map(|g| g.partition.as_str()).collect();
        assert_eq!(parts, vec!["p=0007", "p=0421"]);

        // Delete files or an unknown commit time: planned.
        let mut deletes = files.clone();
        deletes[0].delete_file_count = 1;
        deletes[3].committed_ms = None;
        assert_eq!(plan(&deletes, &s).unchanged_partitions, 997);
    }

    #[test]
    fn plan_key_ignores_the_hot_age_only() {
        let o = CompactionOptions::default();
        let hot = CompactionOptions {
            hot_partition_age_secs: Some(60),
            ..o.clone()
        };
        assert_eq!(plan_key(&o), plan_key(&hot));
        let other = CompactionOptions {
            target_file_size_bytes: 1,
            ..o.clone()
        };
        assert_ne!(plan_key(&o), plan_key(&other));
        assert_eq!(plan_key(&o).len(), 16);
    }
}
