//! Snapshot summary arithmetic, following Java's `SnapshotSummary.Builder` and
//! `SnapshotProducer.summary()`: per-commit counts are written only when positive,
//! `changed-partition-count` always, and every `total-*` is the parent's total plus added minus
//! removed — omitted when the parent has no (parsable) total or the result would be negative,
//! exactly as Java's `updateTotal` does, rather than guessing a number.

use std::collections::{HashMap, HashSet};

use iceberg::spec::Struct;

pub const ADDED_DATA_FILES: &str = "added-data-files";
pub const DELETED_DATA_FILES: &str = "deleted-data-files";
pub const ADDED_RECORDS: &str = "added-records";
pub const DELETED_RECORDS: &str = "deleted-records";
pub const ADDED_FILES_SIZE: &str = "added-files-size";
pub const REMOVED_FILES_SIZE: &str = "removed-files-size";
pub const ADDED_DELETE_FILES: &str = "added-delete-files";
pub const REMOVED_DELETE_FILES: &str = "removed-delete-files";
pub const REMOVED_POSITION_DELETE_FILES: &str = "removed-position-delete-files";
pub const REMOVED_EQUALITY_DELETE_FILES: &str = "removed-equality-delete-files";
pub const ADDED_POSITION_DELETES: &str = "added-position-deletes";
pub const REMOVED_POSITION_DELETES: &str = "removed-position-deletes";
pub const ADDED_EQUALITY_DELETES: &str = "added-equality-deletes";
pub const REMOVED_EQUALITY_DELETES: &str = "removed-equality-deletes";
pub const CHANGED_PARTITION_COUNT: &str = "changed-partition-count";
pub const TOTAL_RECORDS: &str = "total-records";
pub const TOTAL_FILES_SIZE: &str = "total-files-size";
pub const TOTAL_DATA_FILES: &str = "total-data-files";
pub const TOTAL_DELETE_FILES: &str = "total-delete-files";
pub const TOTAL_POSITION_DELETES: &str = "total-position-deletes";
pub const TOTAL_EQUALITY_DELETES: &str = "total-equality-deletes";

/// The `total-*` keys with the per-commit keys that move them, in Java's order.
const TOTALS: [(&str, &str, &str); 6] = [
    (TOTAL_RECORDS, ADDED_RECORDS, DELETED_RECORDS),
    (TOTAL_FILES_SIZE, ADDED_FILES_SIZE, REMOVED_FILES_SIZE),
    (TOTAL_DATA_FILES, ADDED_DATA_FILES, DELETED_DATA_FILES),
    (TOTAL_DELETE_FILES, ADDED_DELETE_FILES, REMOVED_DELETE_FILES),
    (
        TOTAL_POSITION_DELETES,
        ADDED_POSITION_DELETES,
        REMOVED_POSITION_DELETES,
    ),
    (
        TOTAL_EQUALITY_DELETES,
        ADDED_EQUALITY_DELETES,
        REMOVED_EQUALITY_DELETES,
    ),
];

/// What one commit changes, counted while the manifests are written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SummaryDelta {
    pub added_data_files: u64,
    pub deleted_data_files: u64,
    pub added_records: u64,
    pub deleted_records: u64,
    pub added_files_size: u64,
    pub removed_files_size: u64,
    pub removed_position_delete_files: u64,
    pub removed_equality_delete_files: u64,
    /// Rows of the removed delete files (positions, resp. equality keys).
    pub removed_position_deletes: u64,
    pub removed_equality_deletes: u64,
    /// Partitions touched, as (partition spec id, partition tuple).
    pub changed_partitions: HashSet<(i32, Struct)>,
}

impl SummaryDelta {
    /// Counts a data file added by this commit.
    pub fn add_data_file(&mut self, spec_id: i32, partition: &Struct, records: u64, size: u64) {
        self.added_data_files += 1;
        self.added_records += records;
        self.added_files_size += size;
        self.changed_partitions.insert((spec_id, partition.clone()));
    }

    /// Counts a data file removed (marked DELETED) by this commit.
    pub fn remove_data_file(&mut self, spec_id: i32, partition: &Struct, records: u64, size: u64) {
        self.deleted_data_files += 1;
        self.deleted_records += records;
        self.removed_files_size += size;
        self.changed_partitions.insert((spec_id, partition.clone()));
    }

    /// Counts a delete file removed (marked DELETED) by this commit; `equality` tells the kind.
    pub fn remove_delete_file(
        &mut self,
        spec_id: i32,
        partition: &Struct,
        equality: bool,
        records: u64,
        size: u64,
    ) {
        if equality {
            self.removed_equality_delete_files += 1;
            self.removed_equality_deletes += records;
        } else {
            self.removed_position_delete_files += 1;
            self.removed_position_deletes += records;
        }
        self.removed_files_size += size;
        self.changed_partitions.insert((spec_id, partition.clone()));
    }

    /// Delete files removed by this commit.
    pub fn removed_delete_files(&self) -> u64 {
        self.removed_position_delete_files + self.removed_equality_delete_files
    }

    /// The commit's own summary entries (Java `SnapshotSummary.Builder.build()`): counts only
    /// when positive, `changed-partition-count` always.
    pub fn properties(&self) -> HashMap<String, String> {
        let mut out = HashMap::new();
        let mut set_if_positive = |key: &str, v: u64| {
            if v > 0 {
                out.insert(key.to_string(), v.to_string());
            }
        };
        set_if_positive(ADDED_DATA_FILES, self.added_data_files);
        set_if_positive(DELETED_DATA_FILES, self.deleted_data_files);
        set_if_positive(ADDED_FILES_SIZE, self.added_files_size);
        set_if_positive(REMOVED_FILES_SIZE, self.removed_files_size);
        set_if_positive(ADDED_RECORDS, self.added_records);
        set_if_positive(DELETED_RECORDS, self.deleted_records);
        set_if_positive(REMOVED_DELETE_FILES, self.removed_delete_files());
        set_if_positive(
            REMOVED_POSITION_DELETE_FILES,
            self.removed_position_delete_files,
        );
        set_if_positive(
            REMOVED_EQUALITY_DELETE_FILES,
            self.removed_equality_delete_files,
        );
        set_if_positive(REMOVED_POSITION_DELETES, self.removed_position_deletes);
        set_if_positive(REMOVED_EQUALITY_DELETES, self.removed_equality_deletes);
        out.insert(
            CHANGED_PARTITION_COUNT.to_string(),
            self.changed_partitions.len().to_string(),
        );
        out
    }
}

/// The full summary map of the new snapshot (without `operation`): user properties first, then
/// the computed counts (which win on a key collision, as in Java, so a caller cannot corrupt the
/// totals), then the totals derived from `parent` (the parent snapshot's summary; `None` when
/// there is no parent snapshot, in which case totals start at 0).
pub fn build_summary(
    delta: &SummaryDelta,
    parent: Option<&HashMap<String, String>>,
    user_properties: &HashMap<String, String>,
) -> HashMap<String, String> {
    let mut out = user_properties.clone();
    out.extend(delta.properties());
    let current = out.clone();
    for (total_key, added_key, removed_key) in TOTALS {
        let previous = match parent {
            None => Some("0"),
            Some(p) => p.get(total_key).map(String::as_str),
        };
        match previous.and_then(|prev| updated_total(prev, &current, added_key, removed_key)) {
            Some(total) => {
                out.insert(total_key.to_string(), total.to_string());
            }
            // A user-supplied total must not survive: it would be wrong.
            None => {
                out.remove(total_key);
            }
        }
    }
    out
}

/// Java `SnapshotProducer.updateTotal`: previous + added − removed, `None` when any number is
/// unparsable or the running value turns negative.
fn updated_total(
    previous: &str,
    current: &HashMap<String, String>,
    added_key: &str,
    removed_key: &str,
) -> Option<i64> {
    let mut total: i64 = previous.trim().parse().ok()?;
    if total < 0 {
        return None;
    }
    if let Some(added) = current.get(added_key) {
        total = total.checked_add(added.parse().ok()?)?;
    }
    if let Some(removed) = current.get(removed_key) {
        total = total.checked_sub(removed.parse().ok()?)?;
    }
    (total >= 0).then_some(total)
}

#[cfg(test)]
mod tests {
    use iceberg::spec::Literal;

    use super::*;

    fn props(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn part(v: i32) -> Struct {
        Struct::from_iter([Some(Literal::int(v))])
    }

    #[test]
    fn replace_counts_and_totals() {
        let mut d = SummaryDelta::default();
        d.add_data_file(0, &part(1), 300, 3000);
        for _ in 0..3 {
            d.remove_data_file(0, &part(1), 100, 1500);
        }
        let parent = props(&[
            (TOTAL_RECORDS, "1000"),
            (TOTAL_FILES_SIZE, "20000"),
            (TOTAL_DATA_FILES, "10"),
            (TOTAL_DELETE_FILES, "2"),
            (TOTAL_POSITION_DELETES, "7"),
            (TOTAL_EQUALITY_DELETES, "0"),
        ]);
        let user = props(&[("icemaint.job-id", "j1")]);
        let s = build_summary(&d, Some(&parent), &user);
        assert_eq!(s["icemaint.job-id"], "j1");
        assert_eq!(s[ADDED_DATA_FILES], "1");
        assert_eq!(s[DELETED_DATA_FILES], "3");
        assert_eq!(s[ADDED_RECORDS], "300");
        assert_eq!(s[DELETED_RECORDS], "300");
        assert_eq!(s[ADDED_FILES_SIZE], "3000");
        assert_eq!(s[REMOVED_FILES_SIZE], "4500");
        assert_eq!(s[CHANGED_PARTITION_COUNT], "1");
        assert_eq!(s[TOTAL_RECORDS], "1000");
        assert_eq!(s[TOTAL_FILES_SIZE], "18500");
        assert_eq!(s[TOTAL_DATA_FILES], "8");
        assert_eq!(s[TOTAL_DELETE_FILES], "2");
        assert_eq!(s[TOTAL_POSITION_DELETES], "7");
        assert_eq!(s[TOTAL_EQUALITY_DELETES], "0");
        assert!(!s.contains_key(ADDED_DELETE_FILES));
    }

    #[test]
    fn zero_counts_are_omitted_but_partition_count_is_not() {
        let d = SummaryDelta::default();
        let s = d.properties();
        assert_eq!(s.len(), 1);
        assert_eq!(s[CHANGED_PARTITION_COUNT], "0");
    }

    #[test]
    fn changed_partitions_are_distinct_per_spec() {
        let mut d = SummaryDelta::default();
        d.add_data_file(0, &part(1), 1, 1);
        d.remove_data_file(0, &part(1), 1, 1);
        d.remove_data_file(0, &part(2), 1, 1);
        d.remove_data_file(1, &part(2), 1, 1);
        assert_eq!(d.properties()[CHANGED_PARTITION_COUNT], "3");
    }

    #[test]
    fn missing_parent_total_is_omitted_not_guessed() {
        let mut d = SummaryDelta::default();
        d.add_data_file(0, &Struct::empty(), 5, 50);
        let parent = props(&[(TOTAL_RECORDS, "10"), (TOTAL_DATA_FILES, "garbage")]);
        let s = build_summary(&d, Some(&parent), &HashMap::new());
        assert_eq!(s[TOTAL_RECORDS], "15");
        assert!(!s.contains_key(TOTAL_DATA_FILES));
        assert!(!s.contains_key(TOTAL_FILES_SIZE));
    }

    #[test]
    fn no_parent_starts_totals_at_zero() {
        let mut d = SummaryDelta::default();
        d.add_data_file(0, &Struct::empty(), 5, 50);
        let s = build_summary(&d, None, &HashMap::new());
        assert_eq!(s[TOTAL_RECORDS], "5");
        assert_eq!(s[TOTAL_DATA_FILES], "1");
        assert_eq!(s[TOTAL_DELETE_FILES], "0");
    }

    #[test]
    fn negative_total_is_omitted() {
        let mut d = SummaryDelta::default();
        d.remove_data_file(0, &Struct::empty(), 50, 500);
        let parent = props(&[(TOTAL_RECORDS, "10"), (TOTAL_DATA_FILES, "1")]);
        let s = build_summary(&d, Some(&parent), &HashMap::new());
        assert!(!s.contains_key(TOTAL_RECORDS));
        assert_eq!(s[TOTAL_DATA_FILES], "0");
    }

    #[test]
    fn computed_values_win_over_user_properties() {
        let mut d = SummaryDelta::default();
        d.add_data_file(0, &Struct::empty(), 5, 50);
        let user = props(&[(ADDED_RECORDS, "999"), (TOTAL_RECORDS, "123456")]);
        let parent = props(&[(TOTAL_RECORDS, "10")]);
        let s = build_summary(&d, Some(&parent), &user);
        assert_eq!(s[ADDED_RECORDS], "5");
        assert_eq!(s[TOTAL_RECORDS], "15");
        // The parent has no total-data-files: a user value must not pass for one.
        let user = props(&[(TOTAL_DATA_FILES, "42")]);
        let s = build_summary(&d, Some(&parent), &user);
        assert!(!s.contains_key(TOTAL_DATA_FILES));
    }
}
