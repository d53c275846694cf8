//! When the writer data in a file was committed, for `hot-partition-age` (see
//! [`crate::compaction::hot`]): from the table metadata only, no manifest beyond the ones the
//! planner reads anyway.
//!
//! A file's data sequence number is that of the snapshot that added it, or for a compaction output
//! (`use-starting-sequence-number`) that of the snapshot the compaction started from. The time of
//! the newest non-`replace` snapshot at or before that sequence number is therefore when the
//! newest data in the file reached the table: compacting a partition does not make it look hot.

use iceberg::spec::{FormatVersion, Operation, TableMetadata};

/// `(sequence number, timestamp ms)` of the table's writer (non-`replace`) snapshots, ascending.
pub struct WriterCommits(Vec<(i64, i64)>);

impl WriterCommits {
    pub fn new(metadata: &TableMetadata) -> Self {
        // v1 has no sequence numbers (all 0): no file's commit time is known, so no partition is
        // hot and every partition counts as changed — Spark's rules, never a wrong "hot".
        if metadata.format_version() == FormatVersion::V1 {
            return WriterCommits(Vec::new());
        }
        let mut v: Vec<(i64, i64)> = metadata
            .snapshots()
            .filter(|s| s.summary().operation != Operation::Replace)
            .map(|s| (s.sequence_number(), s.timestamp_ms()))
            .collect();
        v.sort_unstable();
        // A later snapshot never predates an earlier one here: keep the running maximum, so a
        // clock step back on a writer cannot make older data look newer.
        let mut newest = i64::MIN;
        for e in &mut v {
            newest = newest.max(e.1);
            e.1 = newest;
        }
        WriterCommits(v)
    }

    /// The commit time of data with this data sequence number; `None` when the snapshots that
    /// wrote it are expired (or the number is unknown).
    pub fn time_of(&self, data_sequence_number: Option<i64>) -> Option<i64> {
        let seq = data_sequence_number?;
        let i = self.0.partition_point(|(s, _)| *s <= seq);
        i.checked_sub(1).map(|i| self.0[i].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_writer_commit_at_or_before() {
        let w = WriterCommits(vec![(1, 100), (2, 200), (4, 400)]);
        assert_eq!(w.time_of(None), None);
        assert_eq!(w.time_of(Some(0)), None);
        assert_eq!(w.time_of(Some(1)), Some(100));
        // 3 is a replace snapshot: its outputs carry the writer commit before it.
        assert_eq!(w.time_of(Some(3)), Some(200));
        assert_eq!(w.time_of(Some(9)), Some(400));
    }
}
