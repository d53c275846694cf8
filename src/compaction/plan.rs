//! Pure binpack planning: `plan(files, settings) -> Plan`, no I/O and no clock.
//!
//! Follows Java's `BinPackRewriteFilePlanner` / `SizeBasedFileRewritePlanner` (Iceberg 1.10):
//!
//! 1. **Candidates.** A file is a candidate when it is smaller than `min-file-size-bytes` or larger
//!    than `max-file-size-bytes`, has at least `delete-file-threshold` delete files, or has a known
//!    deleted-row ratio of at least `delete-ratio-threshold`. `rewrite-all` makes every file a
//!    candidate. A file written under an older partition spec is *not* a candidate for that reason
//!    alone, as in Java; icemaint's own `rewrite-older-specs` makes it one (see below).
//! 2. **Grouping.** Candidates in the table's current spec are grouped by partition. Candidates of
//!    every other spec are grouped together, under the current spec's all-null partition (Java's
//!    `emptyStruct`: their rows may belong to several partitions of the current spec, and the
//!    writer splits them), together with current-spec files of that partition, if any.
//! 3. **Bin packing.** Within a group, candidates are packed in input order into bins of at most
//!    `max-file-group-size-bytes`, with Java's `BinPacking.ListPacker(max, 1, false)`: one open
//!    bin; a file that does not fit closes it and opens the next (a file larger than the limit gets
//!    a bin of its own). Input order is scan order (manifest-list order, then entry order; see
//!    [`super::rewrite::collect_candidates`]), so the files left out of an undersized bin are the
//!    ones Spark leaves out when it plans the same manifests sequentially.
//! 4. **Keeping a bin.** A bin becomes a [`FileGroup`] when it has more than one file and at least
//!    `min-input-files` (at most 2 for settled partitions under `hot-partition-age`, see
//!    [`super::hot`]), or more than one file and more bytes than the target, or more bytes than
//!    the max, or a file meeting a delete condition, or under `rewrite-all`.
//! 5. **Output file count.** Java's `expectedOutputFiles`, with one deliberate correction (see
//!    [`PlanSettings::expected_output_files`]) so that compacting a group never produces files that
//!    the next run would compact again.
//! 6. **Order.** Groups are ordered by `rewrite-job-order` with a stable sort over the canonical
//!    planning order (partitions sorted by spec id then partition text, bins in packing order).
//!    Java iterates a hash map of partitions instead; the set of groups is the same.
//!
//! `rewrite-older-specs` (icemaint's extension, off by default): every file in a spec other than
//! the output spec is a candidate, old-spec candidates are grouped per (spec, partition), and such
//! a group is kept whatever its size ([`GroupReason::OutputSpec`]), so one run moves the whole
//! table to the output spec.
//!
//! Two further deviations from Java, both for an always-on daemon that must reach a fixed point:
//! a file with no delete files never meets `delete-file-threshold` (Java's threshold 0 would make
//! every file a candidate on every run), and a file whose record count is 0 never meets the ratio.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::options::{CompactionOptions, RewriteJobOrder, write_max_file_size};
use super::{changed, hot};

/// An immutable string whose clones share one allocation: a file's path is held once however
/// many groups and plans refer to the file, and a partition's rendering once for all its files
/// (a table of a million files has ~1 000 partitions). Compares, hashes, prints and serializes
/// as the string itself.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SharedStr(Arc<str>);

impl SharedStr {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `a` and `b` are clones of one allocation (not merely equal strings).
    pub fn same_allocation(a: &SharedStr, b: &SharedStr) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

impl std::ops::Deref for SharedStr {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for SharedStr {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for SharedStr {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for SharedStr {
    fn from(s: &str) -> Self {
        SharedStr(Arc::from(s))
    }
}

impl From<String> for SharedStr {
    fn from(s: String) -> Self {
        SharedStr(Arc::from(s))
    }
}

impl From<SharedStr> for String {
    fn from(s: SharedStr) -> Self {
        s.0.to_string()
    }
}

impl PartialEq<str> for SharedStr {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for SharedStr {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for SharedStr {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl fmt::Debug for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl Serialize for SharedStr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SharedStr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(SharedStr::from)
    }
}

/// One live data file, as the planner sees it. Cloning one (as the plan's groups do) copies
/// neither its path nor its partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateFile {
    pub path: SharedStr,
    pub size_bytes: u64,
    pub record_count: u64,
    pub spec_id: i32,
    /// Canonical rendering of the partition, e.g. `org_id=3/ts_day=2025-01-02`; empty when
    /// unpartitioned. Files of one partition share it.
    pub partition: SharedStr,
    /// Delete files that apply to this data file.
    pub delete_file_count: usize,
    /// Rows removed by file-scoped position deletes, when known; otherwise 0.
    pub deleted_records: u64,
    /// When the newest writer data in this file was committed (ms since the epoch): the time of
    /// the newest non-`replace` snapshot at or before the file's data sequence number, so a
    /// compacted file carries its inputs' time, not the compaction's. `None` when unknown
    /// (snapshots expired): such a file never makes its partition hot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_ms: Option<i64>,
}

/// The planning-relevant subset of [`CompactionOptions`], plus the resolved output spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanSettings {
    pub target_file_size_bytes: u64,
    pub min_file_size_bytes: u64,
    pub max_file_size_bytes: u64,
    pub min_input_files: usize,
    pub rewrite_all: bool,
    pub max_file_group_size_bytes: u64,
    /// `None`: the delete-file condition is off.
    pub delete_file_threshold: Option<usize>,
    pub delete_ratio_threshold: f64,
    pub rewrite_job_order: RewriteJobOrder,
    pub output_spec_id: i32,
    /// The table's current (default) spec: Java groups by its partitions.
    pub current_spec_id: i32,
    /// The current spec's all-null partition, rendered like [`CandidateFile::partition`]: where
    /// files of every other spec are grouped (empty for an unpartitioned current spec).
    pub other_specs_partition: String,
    /// icemaint's `rewrite-older-specs`: files outside the output spec are candidates and their
    /// groups are always kept.
    pub rewrite_older_specs: bool,
    /// `hot-partition-age` resolved against the clock by the caller: a partition holding a file
    /// committed at or after this instant (ms since the epoch) is hot (see [`super::hot`]).
    /// `None`: no partition is hot, and planning is Spark's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hot_cutoff_ms: Option<i64>,
    /// Incremental planning (see [`super::changed`]): only partitions with data committed at or
    /// after this instant, or with deletes, are planned. `None`: every partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_since_ms: Option<i64>,
    /// A cold partition whose newest data is older than this (twice the age ago, or the last
    /// compaction's planning time from its watermark if later), or older than another
    /// partition's newest data, is *settled*:
    /// any two of its fragments make a group (see [`hot::min_input_files`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_before_ms: Option<i64>,
}

impl PlanSettings {
    /// Settings for a table whose current spec is the output spec and is unpartitioned as far as
    /// files of other specs are concerned; [`Self::with_current_spec`] sets the real one.
    pub fn new(options: &CompactionOptions, output_spec_id: i32) -> Self {
        PlanSettings {
            target_file_size_bytes: options.target_file_size_bytes,
            min_file_size_bytes: options.min_file_size_bytes,
            max_file_size_bytes: options.max_file_size_bytes,
            min_input_files: options.min_input_files,
            rewrite_all: options.rewrite_all,
            max_file_group_size_bytes: options.max_file_group_size_bytes,
            delete_file_threshold: options.delete_file_threshold,
            delete_ratio_threshold: options.delete_ratio_threshold,
            rewrite_job_order: options.rewrite_job_order,
            output_spec_id,
            current_spec_id: output_spec_id,
            other_specs_partition: String::new(),
            rewrite_older_specs: options.rewrite_older_specs,
            hot_cutoff_ms: None,
            changed_since_ms: None,
            settled_before_ms: None,
        }
    }

    /// Partitions with data committed at or after `now_ms` minus `hot-partition-age` are hot,
    /// and those with nothing newer than twice the age are settled (the caller may move that
    /// later, to the last compaction's planning time); no change without that option.
    pub fn with_hot_cutoff(mut self, options: &CompactionOptions, now_ms: i64) -> Self {
        let age_ms = options
            .hot_partition_age_secs
            .map(|s| i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1000));
        self.hot_cutoff_ms = age_ms.map(|a| now_ms.saturating_sub(a));
        self.settled_before_ms = age_ms.map(|a| now_ms.saturating_sub(a.saturating_mul(2)));
        self
    }

    /// The table's current spec and its all-null partition as rendered for [`CandidateFile`]s.
    pub fn with_current_spec(mut self, spec_id: i32, null_partition: String) -> Self {
        self.current_spec_id = spec_id;
        self.other_specs_partition = null_partition;
        self
    }

    /// Java's `writeMaxFileSize`: target + half the distance from target to max.
    pub fn write_max_file_size_bytes(&self) -> u64 {
        write_max_file_size(self.target_file_size_bytes, self.max_file_size_bytes)
    }

    fn outside_size_range(&self, f: &CandidateFile) -> bool {
        f.size_bytes < self.min_file_size_bytes || f.size_bytes > self.max_file_size_bytes
    }

    fn too_many_deletes(&self, f: &CandidateFile) -> bool {
        match self.delete_file_threshold {
            // A file without delete files is never "too deleted", whatever the threshold.
            Some(t) => f.delete_file_count > 0 && f.delete_file_count >= t,
            None => false,
        }
    }

    fn too_high_delete_ratio(&self, f: &CandidateFile) -> bool {
        if f.delete_file_count == 0 || f.record_count == 0 {
            return false;
        }
        let deleted = f.deleted_records.min(f.record_count) as f64;
        deleted / f.record_count as f64 >= self.delete_ratio_threshold
    }

    /// Only under `rewrite-older-specs`: Java never selects a file for its spec.
    fn in_other_spec(&self, f: &CandidateFile) -> bool {
        self.rewrite_older_specs && f.spec_id != self.output_spec_id
    }

    /// The `(spec, partition)` a candidate is grouped under (step 2 of the module documentation).
    fn group_key<'f>(&'f self, f: &'f CandidateFile) -> (i32, &'f str) {
        if self.rewrite_older_specs || f.spec_id == self.current_spec_id {
            (f.spec_id, f.partition.as_str())
        } else {
            (self.current_spec_id, &self.other_specs_partition)
        }
    }

    /// Whether the planner would consider this file for rewriting.
    pub fn is_candidate(&self, f: &CandidateFile) -> bool {
        self.rewrite_all
            || self.outside_size_range(f)
            || self.too_many_deletes(f)
            || self.too_high_delete_ratio(f)
            || self.in_other_spec(f)
    }

    /// How many files a group of `input_bytes` should be written as.
    ///
    /// Java's rule (`SizeBasedFileRewritePlanner.expectedOutputFiles`): below the target, one file.
    /// Otherwise, with `remainder = input mod target`: if the remainder exceeds the min size it
    /// becomes its own file (round up); else if spreading it over the other files keeps their
    /// average below `min(1.1 × target, write max)`, round down; else round up. So 3.1 × target
    /// gives 3 files and 10.1 GB at a 1 GB target gives 10.
    ///
    /// Correction: when Java rounds up although the resulting files would each be smaller than
    /// the min size, and rounding down keeps them within the max size, round down. Example at the
    /// default ratios: 1.15 × target → Java says 2 files of 0.575 × target, both below the 0.75
    /// min, so the next run would pick them up again (more than one file, more bytes than the
    /// target) and write the same two files, forever. One file of 1.15 × target is inside
    /// [min, max] and stays put. With this rule, whenever `min + target <= max` (true for the
    /// default ratios) a group of at least `min` bytes always yields files inside [min, max].
    pub fn expected_output_files(&self, input_bytes: u64) -> usize {
        let target = self.target_file_size_bytes.max(1);
        if input_bytes < target {
            return 1;
        }
        let floor = input_bytes / target;
        let ceil = input_bytes.div_ceil(target);
        let remainder = input_bytes % target;
        let java = if remainder > self.min_file_size_bytes {
            ceil
        } else {
            // Java compares the long-division average with a double threshold.
            let avg_without_remainder = (input_bytes / floor) as f64;
            let limit = (1.1 * target as f64).min(self.write_max_file_size_bytes() as f64);
            if avg_without_remainder < limit {
                floor
            } else {
                ceil
            }
        };
        let n = if java == ceil
            && ceil > floor
            && input_bytes / ceil < self.min_file_size_bytes
            && input_bytes.div_ceil(floor) <= self.max_file_size_bytes
        {
            floor
        } else {
            java
        };
        usize::try_from(n.max(1)).unwrap_or(usize::MAX)
    }

    /// The byte cap per output file for a group of `input_bytes` written as `output_files` files:
    /// the write max normally; when the planned file size is above it (the correction in
    /// [`Self::expected_output_files`]), halfway from the planned size to the max, mirroring how
    /// Java's write max sits halfway between target and max.
    pub fn max_output_file_bytes(&self, input_bytes: u64, output_files: usize) -> u64 {
        output_file_byte_cap(
            self.target_file_size_bytes,
            self.max_file_size_bytes,
            input_bytes,
            output_files,
        )
    }
}

/// See [`PlanSettings::max_output_file_bytes`].
pub fn output_file_byte_cap(target: u64, max: u64, input_bytes: u64, output_files: usize) -> u64 {
    let planned = input_bytes.div_ceil(output_files.max(1) as u64);
    let write_max = write_max_file_size(target, max);
    if planned <= write_max {
        write_max
    } else {
        planned + max.saturating_sub(planned) / 2
    }
}

impl From<(&CompactionOptions, i32)> for PlanSettings {
    fn from((options, output_spec_id): (&CompactionOptions, i32)) -> Self {
        PlanSettings::new(options, output_spec_id)
    }
}

/// Why a group is rewritten (Java's group filter, plus `rewrite-all` and icemaint's
/// `rewrite-older-specs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupReason {
    /// More than one file and at least `min-input-files`.
    EnoughInputFiles,
    /// More than one file and more bytes than the target.
    EnoughContent,
    /// More bytes than `max-file-size-bytes`.
    TooMuchContent,
    /// A file has at least `delete-file-threshold` delete files.
    DeleteFileThreshold,
    /// A file's deleted-row ratio is at least `delete-ratio-threshold`.
    DeleteRatioThreshold,
    /// The files were written under a spec other than the output spec (`rewrite-older-specs`).
    OutputSpec,
    /// `rewrite-all` is set.
    RewriteAll,
    /// A size tier of a hot partition's fragments is full (`hot-partition-age`, see
    /// [`super::hot`]).
    HotTier,
}

/// A set of files in one `(spec, partition)` rewritten together into new files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileGroup {
    /// 1-based, in planning order (Java's global index), independent of `rewrite-job-order`.
    pub id: usize,
    /// 1-based index of this group within its partition (Java's partition index).
    pub partition_index: usize,
    /// The group's partition: the files' own, or for files of older specs the current spec's
    /// all-null partition (see the module documentation), as Java reports it.
    pub spec_id: i32,
    pub partition: String,
    pub files: Vec<CandidateFile>,
    pub input_bytes: u64,
    pub input_records: u64,
    /// Rows known to be deleted (file-scoped position deletes); live rows are at most
    /// `input_records - known_deleted_records`.
    pub known_deleted_records: u64,
    pub expected_output_files: usize,
    /// Per-file byte cap for the writer (see [`PlanSettings::max_output_file_bytes`]).
    pub max_output_file_bytes: u64,
    /// Delete-file references summed over the group's files (a delete file that applies to two
    /// of them counts twice).
    pub delete_files: usize,
    pub reasons: Vec<GroupReason>,
}

impl FileGroup {
    /// Paths of the files this group replaces.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(|f| f.path.as_str())
    }
}

/// The result of planning: the groups to rewrite and what was looked at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub groups: Vec<FileGroup>,
    /// Files given to the planner (duplicates of a path counted once).
    pub total_files: usize,
    pub total_bytes: u64,
    /// Distinct `(spec, partition)` pairs among all files.
    pub total_partitions: usize,
    pub candidate_files: usize,
    pub candidate_bytes: u64,
    /// Bins of candidates that did not meet any rewrite condition.
    pub skipped_groups: usize,
    pub skipped_files: usize,
    /// Sums over `groups`.
    pub rewrite_files: usize,
    pub rewrite_bytes: u64,
    pub rewrite_partitions: usize,
    pub expected_output_files: usize,
    /// Hot partitions (`hot-partition-age`) that were only fragment-merged or left alone instead
    /// of being binpacked whole.
    #[serde(default)]
    pub hot_partitions: usize,
    /// Partitions not planned because nothing changed in them since the last compaction
    /// ([`super::changed`]).
    #[serde(default)]
    pub unchanged_partitions: usize,
    pub settings: PlanSettings,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// Java's `BinPacking.ListPacker(capacity, 1, false)` over `files` in their order: one open bin; a
/// file that does not fit closes it and starts the next. A file above the capacity gets a bin of
/// its own; a zero-byte file joins the open bin while that bin is within the capacity.
fn pack(files: Vec<CandidateFile>, capacity: u64) -> Vec<Vec<CandidateFile>> {
    let mut bins: Vec<Vec<CandidateFile>> = Vec::new();
    let mut open: Vec<CandidateFile> = Vec::new();
    let mut weight = 0u64;
    for f in files {
        let size = f.size_bytes;
        if !open.is_empty() && weight.saturating_add(size) > capacity {
            bins.push(std::mem::take(&mut open));
            weight = 0;
        }
        weight = weight.saturating_add(size);
        open.push(f);
    }
    if !open.is_empty() {
        bins.push(open);
    }
    bins
}

/// The planning groups (`(spec, partition)` keys) that are hot (`hot-partition-age`, see
/// [`hot`]): they hold a file committed at or after the cutoff. Empty without a cutoff or under
/// `rewrite-all`.
pub fn hot_keys<'f>(files: &'f [CandidateFile], s: &'f PlanSettings) -> BTreeSet<(i32, &'f str)> {
    if s.rewrite_all {
        return BTreeSet::new();
    }
    files
        .iter()
        .filter(|f| hot::is_hot(f.committed_ms, s.hot_cutoff_ms))
        .map(|f| s.group_key(f))
        .collect()
}

/// The planning groups that changed since the watermark (see [`changed`]); `None` without one.
fn changed_keys<'f>(
    files: &'f [CandidateFile],
    s: &'f PlanSettings,
) -> Option<BTreeSet<(i32, &'f str)>> {
    s.changed_since_ms?;
    Some(
        files
            .iter()
            .filter(|f| {
                changed::is_changed(f.committed_ms, f.delete_file_count, s.changed_since_ms)
            })
            .map(|f| s.group_key(f))
            .collect(),
    )
}

/// The bins of a hot partition (see [`hot`]): its full fragment tiers, each packed by the max
/// group size and kept when more than one file; `Err(candidates)` when the partition is planned
/// with Spark's rules after all.
#[allow(clippy::result_large_err)]
fn tier_bins(
    candidates: Vec<CandidateFile>,
    s: &PlanSettings,
) -> Result<Vec<Vec<CandidateFile>>, Vec<CandidateFile>> {
    let sizes: Vec<u64> = candidates.iter().map(|f| f.size_bytes).collect();
    let tiers = match hot::plan_hot(&sizes, s.min_file_size_bytes, s.target_file_size_bytes) {
        hot::HotPlan::Binpack => return Err(candidates),
        hot::HotPlan::Tiers(t) => t,
    };
    Ok(tiers
        .into_iter()
        .map(|t| t.into_iter().map(|i| candidates[i].clone()).collect())
        .flat_map(|t| pack(t, s.max_file_group_size_bytes))
        .filter(|bin: &Vec<CandidateFile>| bin.len() > 1)
        .collect())
}

/// Newest commit time per planning group (`None` when no file's is known).
fn newest_commits<'f>(
    files: &'f [CandidateFile],
    s: &'f PlanSettings,
) -> BTreeMap<(i32, &'f str), Option<i64>> {
    let mut newest: BTreeMap<(i32, &str), Option<i64>> = BTreeMap::new();
    if s.hot_cutoff_ms.is_some() {
        for f in files {
            let e = newest.entry(s.group_key(f)).or_default();
            *e = (*e).max(f.committed_ms);
        }
    }
    newest
}

/// The `hot-partition-age` view of the files (see [`hot`] and [`changed`]): which planning groups
/// are hot, which changed since the watermark, and when each last received data.
struct Watch<'f> {
    hot: BTreeSet<(i32, &'f str)>,
    changed: Option<BTreeSet<(i32, &'f str)>>,
    newest: BTreeMap<(i32, &'f str), Option<i64>>,
    table_newest: Option<i64>,
}

impl<'f> Watch<'f> {
    fn new(files: &'f [CandidateFile], s: &'f PlanSettings) -> Self {
        let newest = newest_commits(files, s);
        Watch {
            hot: hot_keys(files, s),
            changed: changed_keys(files, s),
            table_newest: newest.values().copied().max().flatten(),
            newest,
        }
    }

    fn unchanged(&self, key: (i32, &str)) -> bool {
        self.changed.as_ref().is_some_and(|c| !c.contains(&key))
    }

    /// The partition's bins and whether it is planned as hot.
    fn bins(
        &self,
        key: (i32, &str),
        candidates: Vec<CandidateFile>,
        s: &PlanSettings,
    ) -> (Vec<Vec<CandidateFile>>, bool) {
        let tiers = match self.hot.contains(&key) {
            true => tier_bins(candidates, s),
            false => Err(candidates),
        };
        match tiers {
            Ok(tiers) => (tiers, true),
            Err(all) => (pack(all, s.max_file_group_size_bytes), false),
        }
    }

    /// A cold partition is settled when the writer moved on to another partition, or nothing
    /// came since the last run planned (or for twice the age).
    fn settled(&self, key: (i32, &str), s: &PlanSettings) -> bool {
        if s.hot_cutoff_ms.is_none() {
            return false;
        }
        let mine = self.newest.get(&key).copied().flatten();
        let before = s.settled_before_ms.max(self.table_newest);
        mine.is_none_or(|t| before.is_some_and(|b| t < b))
    }
}

/// A kept bin as a [`FileGroup`]; `id` is (global id, index within the partition).
fn file_group(
    (id, partition_index): (usize, usize),
    (spec_id, partition): (i32, &str),
    bin: Vec<CandidateFile>,
    reasons: Vec<GroupReason>,
    s: &PlanSettings,
) -> FileGroup {
    let input_bytes: u64 = bin.iter().map(|f| f.size_bytes).sum();
    let expected_output_files = s.expected_output_files(input_bytes);
    FileGroup {
        id,
        partition_index,
        spec_id,
        partition: partition.to_string(),
        input_records: bin.iter().map(|f| f.record_count).sum(),
        known_deleted_records: bin
            .iter()
            .map(|f| f.deleted_records.min(f.record_count))
            .sum(),
        delete_files: bin.iter().map(|f| f.delete_file_count).sum(),
        input_bytes,
        expected_output_files,
        max_output_file_bytes: s.max_output_file_bytes(input_bytes, expected_output_files),
        files: bin,
        reasons,
    }
}

fn group_reasons(
    files: &[CandidateFile],
    bytes: u64,
    s: &PlanSettings,
    settled: bool,
) -> Vec<GroupReason> {
    let mut reasons = Vec::new();
    let n = files.len();
    if n > 1 && n >= hot::min_input_files(s.min_input_files, settled) {
        reasons.push(GroupReason::EnoughInputFiles);
    }
    if n > 1 && bytes > s.target_file_size_bytes {
        reasons.push(GroupReason::EnoughContent);
    }
    if bytes > s.max_file_size_bytes {
        reasons.push(GroupReason::TooMuchContent);
    }
    if files.iter().any(|f| s.too_many_deletes(f)) {
        reasons.push(GroupReason::DeleteFileThreshold);
    }
    if files.iter().any(|f| s.too_high_delete_ratio(f)) {
        reasons.push(GroupReason::DeleteRatioThreshold);
    }
    if files.iter().any(|f| s.in_other_spec(f)) {
        reasons.push(GroupReason::OutputSpec);
    }
    if s.rewrite_all {
        reasons.push(GroupReason::RewriteAll);
    }
    reasons
}

/// Plans a binpack rewrite of `files` (the live data files selected by the `where` filter), in
/// scan order: the order of files within a group decides how they are packed (step 3 of the
/// module documentation); the order of groups does not matter.
pub fn plan(files: &[CandidateFile], settings: &PlanSettings) -> Plan {
    // Groups in canonical order (by spec, then partition), files in input order. A path listed
    // twice is a caller bug (the same file cannot be live twice); keep its first occurrence so it
    // cannot be planned into two groups.
    let mut seen = BTreeSet::new();
    let mut by_partition: BTreeMap<(i32, &str), Vec<CandidateFile>> = BTreeMap::new();
    let mut partitions = BTreeSet::new();
    let mut total_files = 0;
    let mut total_bytes = 0u64;
    let mut candidate_files = 0;
    let mut candidate_bytes = 0u64;
    for f in files {
        if !seen.insert(f.path.as_str()) {
            continue;
        }
        total_files += 1;
        total_bytes = total_bytes.saturating_add(f.size_bytes);
        partitions.insert((f.spec_id, f.partition.as_str()));
        if settings.is_candidate(f) {
            candidate_files += 1;
            candidate_bytes = candidate_bytes.saturating_add(f.size_bytes);
            by_partition
                .entry(settings.group_key(f))
                .or_default()
                .push(f.clone());
        }
    }

    let watch = Watch::new(files, settings);
    let mut groups = Vec::new();
    let mut skipped_groups = 0;
    let mut skipped_files = 0;
    let mut hot_partitions = 0;
    let mut unchanged_partitions = 0;
    for ((spec_id, partition), candidates) in by_partition {
        let key = (spec_id, partition);
        if watch.unchanged(key) {
            unchanged_partitions += 1;
            continue;
        }
        let (bins, hot) = watch.bins(key, candidates, settings);
        hot_partitions += usize::from(hot);
        let settled = !hot && watch.settled(key, settings);
        let mut partition_index = 0;
        for bin in bins {
            let input_bytes: u64 = bin.iter().map(|f| f.size_bytes).sum();
            let reasons = match hot {
                true => vec![GroupReason::HotTier],
                false => group_reasons(&bin, input_bytes, settings, settled),
            };
            if reasons.is_empty() {
                skipped_groups += 1;
                skipped_files += bin.len();
                continue;
            }
            partition_index += 1;
            let id = (groups.len() + 1, partition_index);
            groups.push(file_group(id, key, bin, reasons, settings));
        }
    }

    // Stable sorts: ties keep the canonical planning order.
    match settings.rewrite_job_order {
        RewriteJobOrder::None => {}
        RewriteJobOrder::BytesAsc => groups.sort_by_key(|g| g.input_bytes),
        RewriteJobOrder::BytesDesc => groups.sort_by_key(|g| std::cmp::Reverse(g.input_bytes)),
        RewriteJobOrder::FilesAsc => groups.sort_by_key(|g| g.files.len()),
        RewriteJobOrder::FilesDesc => groups.sort_by_key(|g| std::cmp::Reverse(g.files.len())),
    }

    let rewrite_partitions = groups
        .iter()
        .map(|g| (g.spec_id, g.partition.as_str()))
        .collect::<BTreeSet<_>>()
        .len();
    Plan {
        total_files,
        total_bytes,
        total_partitions: partitions.len(),
        candidate_files,
        candidate_bytes,
        skipped_groups,
        skipped_files,
        rewrite_files: groups.iter().map(|g| g.files.len()).sum(),
        rewrite_bytes: groups.iter().map(|g| g.input_bytes).sum(),
        rewrite_partitions,
        expected_output_files: groups.iter().map(|g| g.expected_output_files).sum(),
        hot_partitions,
        unchanged_partitions,
        settings: settings.clone(),
        groups,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use proptest::prelude::*;

    use super::*;

    fn settings(target: u64) -> PlanSettings {
        let mut o = CompactionOptions {
            target_file_size_bytes: target,
            ..CompactionOptions::default()
        };
        o.min_file_size_bytes = (target as f64 * 0.75) as u64;
        o.max_file_size_bytes = (target as f64 * 1.8) as u64;
        PlanSettings::new(&o, 0)
    }

    fn file(path: &str, partition: &str, size: u64) -> CandidateFile {
        CandidateFile {
            path: path.into(),
            size_bytes: size,
            record_count: size.max(1),
            spec_id: 0,
            partition: partition.into(),
            delete_file_count: 0,
            deleted_records: 0,
            committed_ms: None,
        }
    }

    fn files(prefix: &str, partition: &str, n: usize, size: u64) -> Vec<CandidateFile> {
        (0..n)
            .map(|i| file(&format!("{prefix}{i:03}"), partition, size))
            .collect()
    }

    fn group_paths(p: &Plan) -> Vec<Vec<String>> {
        p.groups
            .iter()
            .map(|g| {
                let mut v: Vec<String> = g.paths().map(String::from).collect();
                v.sort();
                v
            })
            .collect()
    }

    #[test]
    fn expected_output_files_follows_java() {
        // target 100, min 75, max 180, write max 140; Java rounds down while the average stays
        // below min(1.1 x target, write max) = 110.
        let s = settings(100);
        assert_eq!(s.write_max_file_size_bytes(), 140);
        let cases: &[(u64, usize, &str)] = &[
            (0, 1, "empty"),
            (99, 1, "below target"),
            (100, 1, "exactly target"),
            (109, 1, "remainder 9 spread: average 109 < 110"),
            (176, 2, "remainder 76 > min: its own file"),
            (310, 3, "3.1 x target"),
            (
                330,
                3,
                "average 110 < 1.1 x 100, which is 110.00000000000001 in doubles, as in Java",
            ),
            (1010, 10, "10.1 GB at a 1 GB target"),
            (1099, 11, "remainder 99 > min"),
            (1100, 11, "exact multiple"),
            (1150, 11, "remainder 50 spread: average 104.5"),
            (150, 2, "Java: 2 x 75, not below min"),
            // The correction: Java would write files below min that the next run rewrites.
            (115, 1, "Java 2 x 57.5 < min -> 1 x 115 <= max"),
            (145, 1, "Java 2 x 72.5 < min -> 1 x 145 <= max"),
            (220, 2, "Java 3 x 73.3 < min -> 2 x 110"),
        ];
        for (bytes, files, why) in cases {
            assert_eq!(s.expected_output_files(*bytes), *files, "{bytes}: {why}");
        }
        // The writer cap follows a planned size above the write max.
        assert_eq!(s.max_output_file_bytes(145, 1), 145 + (180 - 145) / 2);
        assert_eq!(s.max_output_file_bytes(310, 3), 140);
        // 512 MiB defaults: 3.1 x target -> 3.
        let d = PlanSettings::new(&CompactionOptions::default(), 0);
        assert_eq!(d.expected_output_files(536_870_912 * 31 / 10), 3);
        assert_eq!(d.expected_output_files(536_870_912 * 4), 4);
    }

    #[test]
    fn plan_table() {
        struct Case {
            name: &'static str,
            files: Vec<CandidateFile>,
            settings: PlanSettings,
            // sorted paths per group, in plan order
            expect: Vec<Vec<&'static str>>,
            outputs: Vec<usize>,
        }
        let s = settings(100);
        let mut old_spec = file("old", "p=1", 100);
        old_spec.spec_id = 1;
        let with_spec = |mut st: PlanSettings, id| {
            st.output_spec_id = id;
            st
        };
        let older = PlanSettings {
            rewrite_older_specs: true,
            ..s.clone()
        };
        let mut deletes = file("d", "", 100);
        deletes.delete_file_count = 2;
        let mut ratio = file("r", "", 100);
        ratio.delete_file_count = 1;
        ratio.record_count = 10;
        ratio.deleted_records = 3;
        let mut low_ratio = ratio.clone();
        low_ratio.path = "lr".into();
        low_ratio.deleted_records = 2;
        let cases = vec![
            Case {
                name: "small files in one partition form one group",
                files: files("a", "p=1", 6, 10),
                settings: s.clone(),
                expect: vec![vec!["a000", "a001", "a002", "a003", "a004", "a005"]],
                outputs: vec![1],
            },
            Case {
                name: "fewer than min-input-files small files with little data stay",
                files: files("a", "p=1", 4, 10),
                settings: s.clone(),
                expect: vec![],
                outputs: vec![],
            },
            Case {
                name: "min-input-files lowered",
                files: files("a", "p=1", 2, 10),
                settings: PlanSettings {
                    min_input_files: 2,
                    ..s.clone()
                },
                expect: vec![vec!["a000", "a001"]],
                outputs: vec![1],
            },
            Case {
                name: "two small files with more than target bytes",
                files: files("a", "p=1", 2, 70),
                settings: s.clone(),
                expect: vec![vec!["a000", "a001"]],
                outputs: vec![1],
            },
            Case {
                name: "a single small file is never rewritten alone",
                files: files("a", "p=1", 1, 10),
                settings: s.clone(),
                expect: vec![],
                outputs: vec![],
            },
            Case {
                name: "well-sized files are untouched",
                files: vec![file("a", "", 75), file("b", "", 100), file("c", "", 180)],
                settings: s.clone(),
                expect: vec![],
                outputs: vec![],
            },
            Case {
                name: "a big file is split",
                files: vec![file("big", "", 400), file("ok", "", 100)],
                settings: s.clone(),
                expect: vec![vec!["big"]],
                outputs: vec![4],
            },
            Case {
                name: "mixed partitions never merge",
                files: [
                    files("a", "p=1", 5, 10),
                    files("b", "p=2", 5, 10),
                    files("c", "p=3", 2, 10),
                ]
                .concat(),
                settings: s.clone(),
                expect: vec![
                    vec!["a000", "a001", "a002", "a003", "a004"],
                    vec!["b000", "b001", "b002", "b003", "b004"],
                ],
                outputs: vec![1, 1],
            },
            Case {
                name: "3.1 x target gives 3 files",
                files: files("a", "", 31, 10),
                settings: s.clone(),
                expect: vec![(0..31).map(|i| leak(format!("a{i:03}"))).collect()],
                outputs: vec![3],
            },
            Case {
                name: "max group size splits a partition",
                files: files("a", "", 10, 30),
                settings: PlanSettings {
                    max_file_group_size_bytes: 150,
                    ..s.clone()
                },
                expect: vec![
                    vec!["a000", "a001", "a002", "a003", "a004"],
                    vec!["a005", "a006", "a007", "a008", "a009"],
                ],
                // 150 bytes each: Java's 2 x 75 (= min).
                outputs: vec![2, 2],
            },
            Case {
                name: "delete file threshold rewrites a single well-sized file",
                files: vec![deletes.clone(), file("e", "", 100)],
                settings: PlanSettings {
                    delete_file_threshold: Some(2),
                    ..s.clone()
                },
                expect: vec![vec!["d"]],
                outputs: vec![1],
            },
            Case {
                name: "delete file threshold not reached",
                files: vec![deletes.clone()],
                settings: PlanSettings {
                    delete_file_threshold: Some(3),
                    ..s.clone()
                },
                expect: vec![],
                outputs: vec![],
            },
            Case {
                name: "threshold 0 never selects files without deletes",
                files: vec![file("e", "", 100)],
                settings: PlanSettings {
                    delete_file_threshold: Some(0),
                    ..s.clone()
                },
                expect: vec![],
                outputs: vec![],
            },
            Case {
                name: "delete ratio at the threshold",
                files: vec![ratio.clone(), low_ratio.clone()],
                settings: s.clone(),
                expect: vec![vec!["r"]],
                outputs: vec![1],
            },
            Case {
                name: "an in-range file of an older spec stays, as in Spark",
                files: vec![old_spec.clone(), file("new", "p=1", 100)],
                settings: s.clone(),
                expect: vec![],
                outputs: vec![],
            },
            Case {
                name: "small files of older specs are packed together under the null partition",
                files: [
                    files("x", "p=1", 3, 10),
                    vec![old_spec.clone()],
                    files("y", "p=2", 3, 10),
                    files("n", "p=1", 2, 10),
                    files("z", "p=null", 1, 10),
                ]
                .concat()
                .into_iter()
                .map(|mut f| {
                    if !f.path.starts_with('n') && !f.path.starts_with('z') {
                        f.spec_id = 1;
                    }
                    f
                })
                .collect(),
                settings: s.clone().with_current_spec(0, "p=null".into()),
                expect: vec![vec!["x000", "x001", "x002", "y000", "y001", "y002", "z000"]],
                outputs: vec![1],
            },
            Case {
                name: "an older output spec changes nothing but where files are written",
                files: vec![old_spec.clone(), file("new", "p=1", 100)],
                settings: with_spec(s.clone(), 1),
                expect: vec![],
                outputs: vec![],
            },
            Case {
                name: "rewrite-older-specs: old-spec files are rewritten into the output spec",
                files: vec![old_spec.clone(), file("new", "p=1", 100)],
                settings: older.clone(),
                expect: vec![vec!["old"]],
                outputs: vec![1],
            },
            Case {
                name: "rewrite-older-specs: the output spec may be an older spec",
                files: vec![old_spec.clone(), file("new", "p=1", 100)],
                settings: with_spec(older.clone(), 1),
                expect: vec![vec!["new"]],
                outputs: vec![1],
            },
            Case {
                name: "rewrite-older-specs: an old-spec group stays apart from its namesake",
                files: [vec![old_spec.clone()], files("n", "p=1", 5, 10)].concat(),
                settings: older.clone(),
                expect: vec![vec!["n000", "n001", "n002", "n003", "n004"], vec!["old"]],
                outputs: vec![1, 1],
            },
            Case {
                name: "rewrite-all takes every file, even alone",
                files: vec![file("a", "p=1", 100), file("b", "p=2", 10)],
                settings: PlanSettings {
                    rewrite_all: true,
                    ..s.clone()
                },
                expect: vec![vec!["a"], vec!["b"]],
                outputs: vec![1, 1],
            },
        ];
        for c in cases {
            let p = plan(&c.files, &c.settings);
            let expect: Vec<Vec<String>> = c
                .expect
                .iter()
                .map(|g| g.iter().map(|s| s.to_string()).collect())
                .collect();
            assert_eq!(group_paths(&p), expect, "{}", c.name);
            let outputs: Vec<usize> = p.groups.iter().map(|g| g.expected_output_files).collect();
            assert_eq!(outputs, c.outputs, "{}", c.name);
        }
    }

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    #[test]
    fn reasons_stats_and_ids() {
        let s = settings(100);
        let mut input = files("a", "p=1", 6, 10);
        input.extend(files("b", "p=2", 2, 10));
        input.push(file("big", "p=3", 500));
        input.push(file("fine", "p=3", 100));
        let p = plan(&input, &s);
        assert_eq!(p.total_files, 10);
        assert_eq!(p.total_bytes, 60 + 20 + 500 + 100);
        assert_eq!(p.total_partitions, 3);
        assert_eq!(p.candidate_files, 9);
        assert_eq!(p.candidate_bytes, 580);
        assert_eq!(p.skipped_groups, 1);
        assert_eq!(p.skipped_files, 2);
        assert_eq!(p.rewrite_files, 7);
        assert_eq!(p.rewrite_bytes, 560);
        assert_eq!(p.rewrite_partitions, 2);
        assert_eq!(p.groups[0].reasons, vec![GroupReason::EnoughInputFiles]);
        assert_eq!(p.groups[1].reasons, vec![GroupReason::TooMuchContent]);
        assert_eq!(p.groups[1].expected_output_files, 5);
        assert_eq!(p.expected_output_files, 6);
        assert_eq!(
            p.groups.iter().map(|g| g.id).collect::<Vec<_>>(),
            vec![1, 2]
        );
        // Duplicated paths are planned once.
        let mut dup = input.clone();
        dup.push(input[0].clone());
        assert_eq!(plan(&dup, &s), p);
        // The plan serializes (the API and --dry-run --json return it).
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["groups"][0]["reasons"][0], "enough-input-files");
        assert_eq!(json["settings"]["rewrite_job_order"], "none");
    }

    #[test]
    fn job_order() {
        let s = settings(100);
        // p=1: 5 files, 50 bytes; p=2: 8 files, 40 bytes; p=3: 6 files, 120 bytes
        let input = [
            files("a", "p=1", 5, 10),
            files("b", "p=2", 8, 5),
            files("c", "p=3", 6, 20),
        ]
        .concat();
        let order = |o: RewriteJobOrder| {
            let p = plan(
                &input,
                &PlanSettings {
                    rewrite_job_order: o,
                    ..s.clone()
                },
            );
            p.groups
                .iter()
                .map(|g| g.partition.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(order(RewriteJobOrder::None), ["p=1", "p=2", "p=3"]);
        assert_eq!(order(RewriteJobOrder::BytesAsc), ["p=2", "p=1", "p=3"]);
        assert_eq!(order(RewriteJobOrder::BytesDesc), ["p=3", "p=1", "p=2"]);
        assert_eq!(order(RewriteJobOrder::FilesAsc), ["p=1", "p=3", "p=2"]);
        assert_eq!(order(RewriteJobOrder::FilesDesc), ["p=2", "p=3", "p=1"]);
        // Ids keep planning order whatever the job order.
        let p = plan(
            &input,
            &PlanSettings {
                rewrite_job_order: RewriteJobOrder::BytesDesc,
                ..s.clone()
            },
        );
        assert_eq!(
            p.groups.iter().map(|g| g.id).collect::<Vec<_>>(),
            vec![3, 1, 2]
        );
    }

    fn names(bins: &[Vec<CandidateFile>]) -> Vec<Vec<&str>> {
        bins.iter()
            .map(|b| b.iter().map(|f| f.path.as_str()).collect())
            .collect()
    }

    #[test]
    fn packing_follows_java_in_scan_order() {
        // Java's ListPacker(100, 1, false): one open bin, closed by the first file that does not
        // fit. First-fit-decreasing would give [a, c], [b, d, e].
        let input = vec![
            file("a", "", 60),
            file("b", "", 50),
            file("c", "", 40),
            file("d", "", 30),
            file("e", "", 20),
        ];
        assert_eq!(
            names(&pack(input, 100)),
            vec![vec!["a"], vec!["b", "c"], vec!["d", "e"]]
        );
        // The same files in another scan order pack differently.
        let input = vec![
            file("e", "", 20),
            file("d", "", 30),
            file("c", "", 40),
            file("b", "", 50),
            file("a", "", 60),
        ];
        assert_eq!(
            names(&pack(input, 100)),
            vec![vec!["e", "d", "c"], vec!["b"], vec!["a"]]
        );
        // No look-back: a later small file does not go back into an earlier bin.
        let input = vec![file("a", "", 70), file("b", "", 50), file("c", "", 30)];
        assert_eq!(names(&pack(input, 100)), vec![vec!["a"], vec!["b", "c"]]);
        // A file above the capacity gets a bin of its own, and closes the one before it.
        let input = vec![file("x", "", 10), file("big", "", 500), file("y", "", 10)];
        assert_eq!(
            names(&pack(input, 100)),
            vec![vec!["x"], vec!["big"], vec!["y"]]
        );
        // Empty files join the open bin while it is within the capacity.
        let input = vec![file("a", "", 100), file("z", "", 0), file("b", "", 500)];
        assert_eq!(names(&pack(input, 100)), vec![vec!["a", "z"], vec!["b"]]);
        let input = vec![file("b", "", 500), file("z", "", 0)];
        assert_eq!(names(&pack(input, 100)), vec![vec!["b"], vec!["z"]]);
        assert!(pack(Vec::new(), 100).is_empty());
    }

    #[test]
    fn files_left_out_follow_scan_order() {
        // One partition, min-input-files 2, groups of at most 100 bytes: scan order decides which
        // file is left alone (and so not rewritten), as in Spark.
        let s = PlanSettings {
            min_input_files: 2,
            max_file_group_size_bytes: 100,
            ..settings(1000)
        };
        let sizes = [("f1", 60), ("f2", 50), ("f3", 40), ("f4", 30), ("f5", 20)];
        let input: Vec<CandidateFile> = sizes.iter().map(|(p, n)| file(p, "", *n)).collect();
        let p = plan(&input, &s);
        assert_eq!(group_paths(&p), vec![vec!["f2", "f3"], vec!["f4", "f5"]]);
        assert_eq!((p.skipped_groups, p.skipped_files), (1, 1));
        let reversed: Vec<CandidateFile> = input.iter().rev().cloned().collect();
        let p = plan(&reversed, &s);
        assert_eq!(group_paths(&p), vec![vec!["f3", "f4", "f5"]]);
        assert_eq!((p.skipped_groups, p.skipped_files), (2, 2));
        // Files of other partitions interleaved in the input change nothing.
        let mixed: Vec<CandidateFile> = input
            .iter()
            .flat_map(|f| [f.clone(), file(&format!("o-{}", f.path), "p=9", 1)])
            .collect();
        let p = plan(&mixed, &s);
        let groups: Vec<Vec<String>> = group_paths(&p)
            .into_iter()
            .filter(|g| !g[0].starts_with("o-"))
            .collect();
        assert_eq!(groups, vec![vec!["f2", "f3"], vec!["f4", "f5"]]);
    }

    #[test]
    fn older_spec_groups_report_the_current_null_partition() {
        let s = settings(100).with_current_spec(2, "a=null/b=null".into());
        let input: Vec<CandidateFile> = [("o1", 0, "x=1"), ("o2", 1, ""), ("o3", 0, "x=2")]
            .iter()
            .map(|(p, spec, part)| CandidateFile {
                spec_id: *spec,
                ..file(p, part, 60)
            })
            .collect();
        let p = plan(&input, &s);
        assert_eq!(p.groups.len(), 1);
        let g = &p.groups[0];
        assert_eq!((g.spec_id, g.partition.as_str()), (2, "a=null/b=null"));
        assert_eq!(g.paths().collect::<Vec<_>>(), vec!["o1", "o2", "o3"]);
        assert_eq!(g.reasons, vec![GroupReason::EnoughContent]);
        // Distinct (spec, partition) pairs among the files are still counted as they are.
        assert_eq!(p.total_partitions, 3);
    }

    #[test]
    fn many_bins_stay_complete() {
        let input = files("f", "", 1000, 7);
        let bins = pack(input, 10);
        assert_eq!(bins.len(), 1000);
        let input = files("f", "", 1000, 3);
        let bins = pack(input, 10);
        assert_eq!(bins.len(), 334);
        assert_eq!(bins.iter().map(|b| b.len()).sum::<usize>(), 1000);
        assert!(bins.iter().all(|b| b.len() <= 3));
    }

    // ---------------------------------------------------------------------------------------
    // Property tests
    // ---------------------------------------------------------------------------------------

    /// Settings with `min + target <= max`, the condition under which outputs are guaranteed to
    /// be well sized (true for the default ratios).
    fn arb_settings() -> impl Strategy<Value = PlanSettings> {
        (
            100u64..2_000,
            0u32..=99,
            0u32..=200,
            1usize..8,
            prop_oneof![Just(None), (1u64..40).prop_map(Some)],
            prop_oneof![Just(None), (0usize..4).prop_map(Some)],
            1u32..=10,
            0usize..5,
            any::<bool>(),
        )
            .prop_map(
                |(
                    target,
                    min_pct,
                    extra_pct,
                    min_input,
                    group_mult,
                    del_files,
                    ratio,
                    order,
                    older,
                )| {
                    let min = target * min_pct as u64 / 100;
                    let max = target + min + (target * extra_pct as u64 / 100).max(1);
                    PlanSettings {
                        target_file_size_bytes: target,
                        min_file_size_bytes: min,
                        max_file_size_bytes: max,
                        min_input_files: min_input,
                        rewrite_all: false,
                        // None: large enough for any partition in these tests.
                        max_file_group_size_bytes: group_mult
                            .map_or(u64::MAX / 4, |m| (target * m / 4).max(1)),
                        delete_file_threshold: del_files,
                        delete_ratio_threshold: ratio as f64 / 10.0,
                        rewrite_job_order: [
                            RewriteJobOrder::None,
                            RewriteJobOrder::BytesAsc,
                            RewriteJobOrder::BytesDesc,
                            RewriteJobOrder::FilesAsc,
                            RewriteJobOrder::FilesDesc,
                        ][order],
                        output_spec_id: 1,
                        current_spec_id: 1,
                        // Never a partition of the generated files: old-spec groups stay apart.
                        other_specs_partition: "p=null".to_string(),
                        rewrite_older_specs: older,
                        hot_cutoff_ms: None,
                        changed_since_ms: None,
                        settled_before_ms: None,
                    }
                },
            )
    }

    /// Files scaled to the target: sizes from empty to 4 x target, in 4 partitions, mostly in the
    /// output spec 1, some in the old spec 0, some with deletes.
    fn arb_files(target_hint: u64) -> impl Strategy<Value = Vec<CandidateFile>> {
        prop::collection::vec(
            (
                0u64..=400,
                0u64..1_000,
                prop_oneof![4 => Just(1i32), 1 => Just(0i32)],
                0usize..4,
                prop_oneof![4 => Just(0usize), 1 => 1usize..4],
                0u32..=100,
            ),
            0..60,
        )
        .prop_map(move |rows| {
            rows.into_iter()
                .enumerate()
                .map(
                    |(i, (pct, records, spec, part, dels, del_pct))| CandidateFile {
                        path: format!("s3://b/t/data/f{i:04}.parquet").into(),
                        size_bytes: target_hint * pct / 100,
                        record_count: records,
                        spec_id: spec,
                        partition: if part == 0 {
                            String::new()
                        } else {
                            format!("p={part}")
                        }
                        .into(),
                        delete_file_count: dels,
                        deleted_records: if dels == 0 {
                            0
                        } else {
                            records * del_pct as u64 / 100
                        },
                        committed_ms: None,
                    },
                )
                .collect()
        })
    }

    fn arb_case() -> impl Strategy<Value = (PlanSettings, Vec<CandidateFile>)> {
        arb_settings().prop_flat_map(|s| {
            let t = s.target_file_size_bytes;
            (Just(s), arb_files(t))
        })
    }

    /// The files a rewrite of `plan` would leave: untouched files plus, per group,
    /// `expected_output_files` files of near-equal size (sizes differ by at most one byte) summing
    /// to the group's bytes, in the output spec, without deletes. `relabel` maps the partition
    /// of a group to the partition of its outputs.
    fn simulate(
        files: &[CandidateFile],
        p: &Plan,
        round: usize,
        relabel: &dyn Fn(&FileGroup) -> String,
    ) -> (Vec<CandidateFile>, Vec<(String, u64)>) {
        let rewritten: HashSet<&str> = p.groups.iter().flat_map(|g| g.paths()).collect();
        let mut out: Vec<CandidateFile> = files
            .iter()
            .filter(|f| !rewritten.contains(f.path.as_str()))
            .cloned()
            .collect();
        // (path, input bytes of the group it came from)
        let mut produced = Vec::new();
        for g in &p.groups {
            let n = g.expected_output_files as u64;
            let live = g.input_records - g.known_deleted_records;
            for k in 0..n {
                let size = g.input_bytes / n + u64::from(k < g.input_bytes % n);
                let path = format!("out-r{round}-g{}-{k}", g.id);
                produced.push((path.clone(), g.input_bytes));
                out.push(CandidateFile {
                    path: path.into(),
                    size_bytes: size,
                    record_count: live / n + u64::from(k < live % n),
                    spec_id: p.settings.output_spec_id,
                    partition: relabel(g).into(),
                    delete_file_count: 0,
                    deleted_records: 0,
                    committed_ms: None,
                });
            }
        }
        (out, produced)
    }

    fn check_structure(files: &[CandidateFile], s: &PlanSettings, p: &Plan) {
        let by_path: HashMap<&str, &CandidateFile> =
            files.iter().map(|f| (f.path.as_str(), f)).collect();
        let mut seen = HashSet::new();
        for g in &p.groups {
            assert!(!g.files.is_empty());
            for f in &g.files {
                // Each file in at most one group, and only files that were given.
                assert!(seen.insert(f.path.clone()), "{} in two groups", f.path);
                assert_eq!(by_path.get(f.path.as_str()), Some(&f));
                // No group crosses a grouping key (spec and partition, or the other specs').
                assert_eq!(s.group_key(f), (g.spec_id, g.partition.as_str()));
                // Only candidates are grouped.
                assert!(s.is_candidate(f));
            }
            // Bounded by the max group size unless a single file exceeds it.
            assert!(
                g.input_bytes <= s.max_file_group_size_bytes || g.files.len() == 1,
                "group {} has {} bytes in {} files (cap {})",
                g.id,
                g.input_bytes,
                g.files.len(),
                s.max_file_group_size_bytes
            );
            assert_eq!(
                g.input_bytes,
                g.files.iter().map(|f| f.size_bytes).sum::<u64>()
            );
            assert_eq!(
                g.input_records,
                g.files.iter().map(|f| f.record_count).sum::<u64>()
            );
            assert!(g.expected_output_files >= 1);
            assert!(!g.reasons.is_empty());
        }
        assert_eq!(p.rewrite_files, seen.len());
        assert_eq!(
            p.candidate_files,
            files.iter().filter(|f| s.is_candidate(f)).count()
        );
        let mut ids: Vec<usize> = p.groups.iter().map(|g| g.id).collect();
        ids.sort();
        assert_eq!(ids, (1..=p.groups.len()).collect::<Vec<_>>());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn structure_holds((s, files) in arb_case(), rewrite_all in any::<bool>()) {
            let s = PlanSettings { rewrite_all, ..s };
            let p = plan(&files, &s);
            check_structure(&files, &s, &p);
            if rewrite_all {
                prop_assert_eq!(p.rewrite_files, files.len());
            }
        }

        /// Without `hot-partition-age` (no cutoff) the plan is Spark's whatever the files'
        /// commit times; with a cutoff after every commit time no partition is hot and the plan
        /// is Spark's again, and Spark's with `min-input-files` at most 2 once the partitions are
        /// settled; with any cutoff the plan keeps its structure.
        #[test]
        fn hot_age_unset_or_cold_changes_nothing(
            (s, files) in arb_case(),
            times in prop::collection::vec(prop::option::of(0i64..1_000), 1..8),
            cutoff in 0i64..1_200,
        ) {
            let timed: Vec<CandidateFile> = files
                .iter()
                .zip(times.iter().cycle())
                .map(|(f, t)| CandidateFile { committed_ms: *t, ..f.clone() })
                .collect();
            let spark = plan(&files, &s);
            let untimed = |mut p: Plan| {
                for g in &mut p.groups {
                    for f in &mut g.files {
                        f.committed_ms = None;
                    }
                }
                p
            };
            prop_assert_eq!(&spark, &untimed(plan(&timed, &s)));
            // All data of one instant: no partition is older than another, none settled.
            let same: Vec<CandidateFile> = files
                .iter()
                .map(|f| CandidateFile { committed_ms: Some(500), ..f.clone() })
                .collect();
            let cold = PlanSettings { hot_cutoff_ms: Some(1_000), ..s.clone() };
            let p = untimed(plan(&same, &cold));
            prop_assert_eq!(&spark.groups, &p.groups);
            prop_assert_eq!(p.hot_partitions, 0);
            // Settled partitions (no data since the last run) merge any two fragments.
            let settled = PlanSettings { settled_before_ms: Some(1_000), ..cold.clone() };
            let p = untimed(plan(&timed, &settled));
            let spark_two = PlanSettings { min_input_files: s.min_input_files.min(2), ..s.clone() };
            prop_assert_eq!(&plan(&files, &spark_two).groups, &p.groups);
            prop_assert_eq!(p.hot_partitions, 0);
            let hot = PlanSettings { hot_cutoff_ms: Some(cutoff), ..s.clone() };
            check_structure(&timed, &hot, &plan(&timed, &hot));
        }

        /// The plan depends on the order of files within each group only: files of other
        /// groups may come in any order (planning order is canonical), files of one group are
        /// packed in input order.
        #[test]
        fn plan_depends_only_on_the_order_within_each_group(
            (s, files) in arb_case(),
            seed in any::<u64>(),
        ) {
            let p = plan(&files, &s);
            prop_assert_eq!(&p, &plan(&files, &s));
            // A deterministic shuffle, then each group's files put back in their original order
            // in the places the shuffle gave that group.
            let mut shuffled = files.clone();
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let key = |f: &CandidateFile| {
                let (spec, part) = s.group_key(f);
                (spec, part.to_string())
            };
            let mut in_order: HashMap<(i32, String), std::collections::VecDeque<CandidateFile>> =
                HashMap::new();
            for f in &files {
                in_order.entry(key(f)).or_default().push_back(f.clone());
            }
            for slot in shuffled.iter_mut() {
                *slot = in_order.get_mut(&key(slot)).unwrap().pop_front().unwrap();
            }
            prop_assert_eq!(p, plan(&shuffled, &s));
        }

        /// With `min + target <= max`, every output file of a group of at least `min` bytes is
        /// inside [min, max], so it is never a size candidate again.
        #[test]
        fn outputs_are_well_sized(s in arb_settings(), bytes in 0u64..1_000_000) {
            let n = s.expected_output_files(bytes) as u64;
            prop_assert!(n >= 1);
            let smallest = bytes / n;
            let largest = bytes.div_ceil(n);
            if bytes >= s.min_file_size_bytes {
                prop_assert!(smallest >= s.min_file_size_bytes,
                    "{} bytes -> {} files of {}..{}", bytes, n, smallest, largest);
            } else {
                prop_assert_eq!(n, 1);
            }
            prop_assert!(largest <= s.max_file_size_bytes,
                "{} bytes -> {} files of {}..{}", bytes, n, smallest, largest);
            prop_assert!(largest <= s.max_output_file_bytes(bytes, n as usize));
            prop_assert!(s.max_output_file_bytes(bytes, n as usize) <= s.max_file_size_bytes);
        }

        /// Re-planning the result of a plan finds nothing to do, when each partition's candidates
        /// fit in one group and the old spec's partitions do not collide with the output spec's
        /// (so no two groups' outputs share a partition). Then a rewritten partition holds at most
        /// one file that is still a candidate (the output of a group below `min`), which alone is
        /// never rewritten, and a partition whose group was not kept is planned the same way again.
        #[test]
        fn replanning_the_output_finds_nothing((s, files) in arb_case()) {
            let s = PlanSettings { max_file_group_size_bytes: u64::MAX / 4, ..s };
            let p = plan(&files, &s);
            let (after, produced) = simulate(&files, &p, 1, &|g| {
                if g.spec_id == s.output_spec_id {
                    g.partition.clone()
                } else {
                    // rewrite-older-specs: one old-spec partition's rows, in a partition of
                    // their own.
                    format!("from-spec-{}/{}", g.spec_id, g.partition)
                }
            });
            let again = plan(&after, &s);
            let produced: HashSet<&str> = produced.iter().map(|(p, _)| p.as_str()).collect();
            for g in &again.groups {
                for f in &g.files {
                    prop_assert!(!produced.contains(f.path.as_str()),
                        "output {} planned again in group {:?}", f.path, g.reasons);
                }
            }
            prop_assert!(again.groups.is_empty(), "re-plan: {:?}", again.groups);
        }

        /// In general (groups split by the max group size, old-spec partitions landing on the
        /// same output partitions), repeated compaction reaches a fixed point: every kept group
        /// either removes candidate files or turns a delete/old-spec file into a clean one, and
        /// outputs of groups of at least `min` bytes are never planned again.
        #[test]
        fn repeated_compaction_converges((s, files) in arb_case()) {
            let mut current = files.clone();
            // Each round lowers (candidate files + files with a delete or spec condition), which
            // starts at most at 2 x files.
            let bound = 2 * files.len() + 1;
            let mut stable_outputs: HashSet<String> = HashSet::new();
            let mut rounds = 0;
            loop {
                let p = plan(&current, &s);
                check_structure(&current, &s, &p);
                for g in &p.groups {
                    for f in &g.files {
                        prop_assert!(!stable_outputs.contains(f.path.as_str()),
                            "well-sized output {} rewritten again", f.path);
                    }
                }
                if p.groups.is_empty() {
                    break;
                }
                rounds += 1;
                prop_assert!(rounds <= bound, "no fixed point after {} rounds", rounds);
                let (next, produced) = simulate(&current, &p, rounds, &|g| g.partition.clone());
                for (path, group_bytes) in produced {
                    if group_bytes >= s.min_file_size_bytes {
                        stable_outputs.insert(path);
                    }
                }
                current = next;
            }
        }
    }
}
