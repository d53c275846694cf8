//! Spark-compatible `rewrite_data_files` options: names, defaults and validation.
//!
//! The option names and defaults are those of Apache Iceberg's Java `RewriteDataFiles` action (what
//! Spark's `CALL system.rewrite_data_files(options => map(...))` runs), so a user moving from Spark
//! gets the same behaviour from the same map. [`resolve`] validates the whole map at once and
//! reports every problem, not only the first one, because options usually come from a policy file
//! that a human fixes in one go. Three options are icemaint's own, with names Spark does not use:
//! [`REWRITE_OLDER_SPECS`], [`HOT_PARTITION_AGE`] and [`MAX_REWRITE_MEMORY_BYTES`].
//!
//! Validation follows Java (`SizeBasedFileRewritePlanner`, `BinPackRewriteFilePlanner`,
//! `RewriteDataFilesSparkAction`): `min-file-size-bytes < target-file-size-bytes <
//! max-file-size-bytes` (strictly, as in Java), `min-input-files > 0`,
//! `max-file-group-size-bytes > 0`, `max-concurrent-file-group-rewrites > 0`,
//! `0 < delete-ratio-threshold <= 1`, and `partial-progress.max-commits > 0` when partial progress is
//! enabled. Unlike Java, booleans are parsed strictly (`true`/`false`, any case): Java's
//! `Boolean.parseBoolean` silently reads a typo such as `ture` as `false`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::filter;

/// `target-file-size-bytes`
pub const TARGET_FILE_SIZE_BYTES: &str = "target-file-size-bytes";
/// `min-file-size-bytes`
pub const MIN_FILE_SIZE_BYTES: &str = "min-file-size-bytes";
/// `max-file-size-bytes`
pub const MAX_FILE_SIZE_BYTES: &str = "max-file-size-bytes";
/// `min-input-files`
pub const MIN_INPUT_FILES: &str = "min-input-files";
/// `rewrite-all`
pub const REWRITE_ALL: &str = "rewrite-all";
/// `max-file-group-size-bytes`
pub const MAX_FILE_GROUP_SIZE_BYTES: &str = "max-file-group-size-bytes";
/// `delete-file-threshold`
pub const DELETE_FILE_THRESHOLD: &str = "delete-file-threshold";
/// `delete-ratio-threshold`
pub const DELETE_RATIO_THRESHOLD: &str = "delete-ratio-threshold";
/// `partial-progress.enabled`
pub const PARTIAL_PROGRESS_ENABLED: &str = "partial-progress.enabled";
/// `partial-progress.max-commits`
pub const PARTIAL_PROGRESS_MAX_COMMITS: &str = "partial-progress.max-commits";
/// `partial-progress.max-failed-commits`
pub const PARTIAL_PROGRESS_MAX_FAILED_COMMITS: &str = "partial-progress.max-failed-commits";
/// `max-concurrent-file-group-rewrites`
pub const MAX_CONCURRENT_FILE_GROUP_REWRITES: &str = "max-concurrent-file-group-rewrites";
/// `rewrite-job-order`
pub const REWRITE_JOB_ORDER: &str = "rewrite-job-order";
/// `use-starting-sequence-number`
pub const USE_STARTING_SEQUENCE_NUMBER: &str = "use-starting-sequence-number";
/// `output-spec-id`
pub const OUTPUT_SPEC_ID: &str = "output-spec-id";
/// `remove-dangling-deletes`
pub const REMOVE_DANGLING_DELETES: &str = "remove-dangling-deletes";
/// `rewrite-older-specs`: icemaint's own option, not Spark's. When true, every file written under
/// a partition spec other than the output spec is a candidate for that reason alone and is
/// grouped per (spec, partition), so one run moves the whole table to the output spec. Spark
/// (the default, false) selects by size and deletes only.
pub const REWRITE_OLDER_SPECS: &str = "rewrite-older-specs";
/// `hot-partition-age`: icemaint's own option, not Spark's. A partition whose newest data was
/// committed less than this duration ago is *hot*: only its small fragments are merged, in size
/// tiers (see [`super::hot`]); once cold it is planned with Spark's rules. Unset (the default):
/// every partition is planned with Spark's rules, exactly as `rewrite_data_files` would.
pub const HOT_PARTITION_AGE: &str = "hot-partition-age";
/// `max-rewrite-memory-bytes`: icemaint's own option, not Spark's. The output row groups the
/// concurrent group rewrites of one run may hold in memory together, as estimated by
/// [`super::memory`]; groups wait for room before they start (a group larger than the whole
/// budget runs alone). Spark has executors' memory for this instead.
pub const MAX_REWRITE_MEMORY_BYTES: &str = "max-rewrite-memory-bytes";
/// `where`: in Spark a procedure argument rather than an option; icemaint accepts it in the same
/// map so that a policy is one flat set of keys.
pub const WHERE: &str = "where";

/// The `rewrite_data_files` options Spark 3.5 + Iceberg 1.10 knows (binpack). Anything else the
/// policy or the run sets (icemaint's own `rewrite-older-specs`, ...) is refused for Spark (by
/// `crate::spark` at run time and by the policy check), so a run never silently means something
/// else there.
pub const SPARK_OPTIONS: &[&str] = &[
    TARGET_FILE_SIZE_BYTES,
    MIN_FILE_SIZE_BYTES,
    MAX_FILE_SIZE_BYTES,
    MIN_INPUT_FILES,
    REWRITE_ALL,
    MAX_FILE_GROUP_SIZE_BYTES,
    DELETE_FILE_THRESHOLD,
    DELETE_RATIO_THRESHOLD,
    PARTIAL_PROGRESS_ENABLED,
    PARTIAL_PROGRESS_MAX_COMMITS,
    PARTIAL_PROGRESS_MAX_FAILED_COMMITS,
    MAX_CONCURRENT_FILE_GROUP_REWRITES,
    REWRITE_JOB_ORDER,
    USE_STARTING_SEQUENCE_NUMBER,
    OUTPUT_SPEC_ID,
    REMOVE_DANGLING_DELETES,
];

/// Table property holding the default target file size.
pub const WRITE_TARGET_FILE_SIZE_BYTES: &str = "write.target-file-size-bytes";

/// Every option name [`resolve`] accepts.
pub const KNOWN_OPTIONS: &[&str] = &[
    TARGET_FILE_SIZE_BYTES,
    MIN_FILE_SIZE_BYTES,
    MAX_FILE_SIZE_BYTES,
    MIN_INPUT_FILES,
    REWRITE_ALL,
    MAX_FILE_GROUP_SIZE_BYTES,
    DELETE_FILE_THRESHOLD,
    DELETE_RATIO_THRESHOLD,
    PARTIAL_PROGRESS_ENABLED,
    PARTIAL_PROGRESS_MAX_COMMITS,
    PARTIAL_PROGRESS_MAX_FAILED_COMMITS,
    MAX_CONCURRENT_FILE_GROUP_REWRITES,
    REWRITE_JOB_ORDER,
    USE_STARTING_SEQUENCE_NUMBER,
    OUTPUT_SPEC_ID,
    REMOVE_DANGLING_DELETES,
    REWRITE_OLDER_SPECS,
    HOT_PARTITION_AGE,
    MAX_REWRITE_MEMORY_BYTES,
    WHERE,
];

/// 512 MiB, Java's `WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT`.
pub const DEFAULT_TARGET_FILE_SIZE_BYTES: u64 = 536_870_912;
/// Java's `MIN_FILE_SIZE_DEFAULT_RATIO`.
pub const MIN_FILE_SIZE_DEFAULT_RATIO: f64 = 0.75;
/// Java's `MAX_FILE_SIZE_DEFAULT_RATIO`.
pub const MAX_FILE_SIZE_DEFAULT_RATIO: f64 = 1.80;
/// Java's `MIN_INPUT_FILES_DEFAULT`.
pub const DEFAULT_MIN_INPUT_FILES: usize = 5;
/// 100 GiB, Java's `MAX_FILE_GROUP_SIZE_BYTES_DEFAULT`.
pub const DEFAULT_MAX_FILE_GROUP_SIZE_BYTES: u64 = 100 * 1024 * 1024 * 1024;
/// Java's `DELETE_RATIO_THRESHOLD_DEFAULT`.
pub const DEFAULT_DELETE_RATIO_THRESHOLD: f64 = 0.3;
/// Java's `PARTIAL_PROGRESS_MAX_COMMITS_DEFAULT`.
pub const DEFAULT_PARTIAL_PROGRESS_MAX_COMMITS: usize = 10;
/// Java's `MAX_CONCURRENT_FILE_GROUP_REWRITES_DEFAULT`.
pub const DEFAULT_MAX_CONCURRENT_FILE_GROUP_REWRITES: usize = 5;
/// Default of icemaint's `max-rewrite-memory-bytes`: 128 MiB, two groups of the benchmark's 10x
/// size (~41 MB outputs) or one whose row groups reach the 128 MiB default; a pod with memory to
/// spare raises it to run more large groups at once (estimates: [`super::memory`]).
pub const DEFAULT_MAX_REWRITE_MEMORY_BYTES: u64 = 128 * 1024 * 1024;

/// The order in which planned file groups are rewritten (Java's `RewriteJobOrder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RewriteJobOrder {
    /// Planning order: partitions in their canonical order, bins in packing order.
    #[default]
    None,
    BytesAsc,
    BytesDesc,
    FilesAsc,
    FilesDesc,
}

impl RewriteJobOrder {
    /// The Spark spelling of this order.
    pub fn as_str(self) -> &'static str {
        match self {
            RewriteJobOrder::None => "none",
            RewriteJobOrder::BytesAsc => "bytes-asc",
            RewriteJobOrder::BytesDesc => "bytes-desc",
            RewriteJobOrder::FilesAsc => "files-asc",
            RewriteJobOrder::FilesDesc => "files-desc",
        }
    }

    /// Parses the Spark spelling; like Java's `RewriteJobOrder.fromName`, case does not matter.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "none" => Some(RewriteJobOrder::None),
            "bytes-asc" => Some(RewriteJobOrder::BytesAsc),
            "bytes-desc" => Some(RewriteJobOrder::BytesDesc),
            "files-asc" => Some(RewriteJobOrder::FilesAsc),
            "files-desc" => Some(RewriteJobOrder::FilesDesc),
            _ => None,
        }
    }
}

impl fmt::Display for RewriteJobOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Resolved, validated `rewrite_data_files` options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactionOptions {
    pub target_file_size_bytes: u64,
    pub min_file_size_bytes: u64,
    pub max_file_size_bytes: u64,
    pub min_input_files: usize,
    pub rewrite_all: bool,
    pub max_file_group_size_bytes: u64,
    /// `None` means unlimited (Java's default `Integer.MAX_VALUE`). `Some(n)`: a file with at
    /// least `n` delete files, and at least one, is a candidate (Java's 0 would select every file
    /// on every run; see [`super::plan`]).
    pub delete_file_threshold: Option<usize>,
    pub delete_ratio_threshold: f64,
    pub partial_progress_enabled: bool,
    pub partial_progress_max_commits: usize,
    pub partial_progress_max_failed_commits: usize,
    pub max_concurrent_file_group_rewrites: usize,
    pub rewrite_job_order: RewriteJobOrder,
    pub use_starting_sequence_number: bool,
    /// `None` means the table's current (default) partition spec.
    pub output_spec_id: Option<i32>,
    /// Spark's `remove-dangling-deletes`.
    pub remove_dangling_deletes: bool,
    /// icemaint's `rewrite-older-specs` (see [`REWRITE_OLDER_SPECS`]); Spark has no such option.
    pub rewrite_older_specs: bool,
    /// icemaint's `hot-partition-age` in whole seconds (see [`HOT_PARTITION_AGE`]); `None`: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hot_partition_age_secs: Option<u64>,
    /// icemaint's `max-rewrite-memory-bytes` (see [`MAX_REWRITE_MEMORY_BYTES`]).
    #[serde(default = "default_max_rewrite_memory_bytes")]
    pub max_rewrite_memory_bytes: u64,
    /// The `where` partition filter as written; syntax-checked by [`resolve`], bound to the table
    /// schema with [`filter::parse_where`] when the table is known.
    #[serde(rename = "where", skip_serializing_if = "Option::is_none")]
    pub where_filter: Option<String>,
}

impl Default for CompactionOptions {
    fn default() -> Self {
        let target = DEFAULT_TARGET_FILE_SIZE_BYTES;
        CompactionOptions {
            target_file_size_bytes: target,
            min_file_size_bytes: default_min(target),
            max_file_size_bytes: default_max(target),
            min_input_files: DEFAULT_MIN_INPUT_FILES,
            rewrite_all: false,
            max_file_group_size_bytes: DEFAULT_MAX_FILE_GROUP_SIZE_BYTES,
            delete_file_threshold: None,
            delete_ratio_threshold: DEFAULT_DELETE_RATIO_THRESHOLD,
            partial_progress_enabled: false,
            partial_progress_max_commits: DEFAULT_PARTIAL_PROGRESS_MAX_COMMITS,
            partial_progress_max_failed_commits: DEFAULT_PARTIAL_PROGRESS_MAX_COMMITS,
            max_concurrent_file_group_rewrites: DEFAULT_MAX_CONCURRENT_FILE_GROUP_REWRITES,
            rewrite_job_order: RewriteJobOrder::None,
            use_starting_sequence_number: true,
            output_spec_id: None,
            remove_dangling_deletes: false,
            rewrite_older_specs: false,
            hot_partition_age_secs: None,
            max_rewrite_memory_bytes: default_max_rewrite_memory_bytes(),
            where_filter: None,
        }
    }
}

fn default_max_rewrite_memory_bytes() -> u64 {
    DEFAULT_MAX_REWRITE_MEMORY_BYTES
}

impl CompactionOptions {
    /// The writer's hard cap per output file: target + half the distance to max (Java's
    /// `writeMaxFileSize`, about 717 MiB at a 512 MiB target).
    pub fn write_max_file_size_bytes(&self) -> u64 {
        write_max_file_size(self.target_file_size_bytes, self.max_file_size_bytes)
    }

    /// The output spec id to use against a table whose current spec is `default_spec_id` and
    /// which knows the specs `known_spec_ids`. Java refuses an `output-spec-id` the table does not
    /// contain; so does this.
    pub fn resolve_output_spec_id(
        &self,
        default_spec_id: i32,
        known_spec_ids: &[i32],
    ) -> Result<i32, OptionError> {
        match self.output_spec_id {
            None => Ok(default_spec_id),
            Some(id) if known_spec_ids.contains(&id) => Ok(id),
            Some(id) => Err(OptionError::new(
                OUTPUT_SPEC_ID,
                format!("the table has no partition spec with id {id}"),
            )),
        }
    }
}

/// One problem with one option (or with the table property it defaults from).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("option '{key}': {message}")]
pub struct OptionError {
    pub key: String,
    pub message: String,
}

impl OptionError {
    fn new(key: &str, message: impl Into<String>) -> Self {
        OptionError {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

fn default_min(target: u64) -> u64 {
    // Java: `(long) (target * MIN_FILE_SIZE_DEFAULT_RATIO)`, i.e. truncation.
    (target as f64 * MIN_FILE_SIZE_DEFAULT_RATIO) as u64
}

fn default_max(target: u64) -> u64 {
    (target as f64 * MAX_FILE_SIZE_DEFAULT_RATIO) as u64
}

/// Java's `writeMaxFileSize`: `(long) (target + (max - target) * 0.5)`.
pub fn write_max_file_size(target: u64, max: u64) -> u64 {
    (target as f64 + max.saturating_sub(target) as f64 * 0.5) as u64
}

/// Collects parse results so that every bad value is reported.
struct Parser<'a> {
    options: &'a BTreeMap<String, String>,
    errors: Vec<OptionError>,
}

impl Parser<'_> {
    fn raw(&self, key: &str) -> Option<&str> {
        self.options.get(key).map(|v| v.trim())
    }

    /// `Ok(None)` when absent, `Err(())` when present but invalid (already recorded).
    fn parse<T>(
        &mut self,
        key: &str,
        expected: &str,
        f: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, ()> {
        let Some(raw) = self.raw(key) else {
            return Ok(None);
        };
        match f(raw) {
            Some(v) => Ok(Some(v)),
            None => {
                self.errors.push(OptionError::new(
                    key,
                    format!("expected {expected}, got '{raw}'"),
                ));
                Err(())
            }
        }
    }

    fn u64(&mut self, key: &str) -> Result<Option<u64>, ()> {
        self.parse(key, "a non-negative integer", |s| s.parse::<u64>().ok())
    }

    fn usize(&mut self, key: &str) -> Result<Option<usize>, ()> {
        self.parse(key, "a non-negative integer", |s| s.parse::<usize>().ok())
    }

    fn bool(&mut self, key: &str) -> Result<Option<bool>, ()> {
        self.parse(key, "true or false", |s| {
            if s.eq_ignore_ascii_case("true") {
                Some(true)
            } else if s.eq_ignore_ascii_case("false") {
                Some(false)
            } else {
                None
            }
        })
    }

    fn f64(&mut self, key: &str) -> Result<Option<f64>, ()> {
        self.parse(key, "a number", |s| {
            s.parse::<f64>().ok().filter(|v| v.is_finite())
        })
    }

    fn error(&mut self, key: &str, message: impl Into<String>) {
        self.errors.push(OptionError::new(key, message));
    }
}

/// The option names that are not Spark's (nor icemaint's few own), as errors. Needs no table:
/// the API answers these 400 before it reaches the catalog.
pub fn unknown_options(options: &BTreeMap<String, String>) -> Vec<OptionError> {
    options
        .keys()
        .filter(|k| !KNOWN_OPTIONS.contains(&k.as_str()))
        .map(|k| OptionError::new(k, "unknown option"))
        .collect()
}

/// Resolves `options` (Spark option names) against the table's properties: applies defaults,
/// validates every value and every cross-option rule, and returns all problems found.
pub fn resolve(
    options: &BTreeMap<String, String>,
    table_properties: &HashMap<String, String>,
) -> Result<CompactionOptions, Vec<OptionError>> {
    let mut p = Parser {
        options,
        errors: Vec::new(),
    };
    let mut out = CompactionOptions::default();

    p.reject_unknown();
    p.file_sizes(table_properties, &mut out);
    p.group_selection(&mut out);
    p.delete_thresholds(&mut out);
    p.partial_progress(&mut out);
    p.execution(&mut out);
    p.where_filter(&mut out);
    p.hot_partition_age(&mut out);

    if p.errors.is_empty() {
        Ok(out)
    } else {
        Err(p.errors)
    }
}

/// The option families [`resolve`] reads, in the order their problems are reported.
impl Parser<'_> {
    /// Records every key that is not a known option.
    fn reject_unknown(&mut self) {
        self.errors.extend(unknown_options(self.options));
    }

    /// `target-file-size-bytes` (else the table property), `min-file-size-bytes` and
    /// `max-file-size-bytes`, with min < target < max.
    fn file_sizes(
        &mut self,
        table_properties: &HashMap<String, String>,
        out: &mut CompactionOptions,
    ) {
        let target = self.target_file_size(table_properties);
        let min = self.u64(MIN_FILE_SIZE_BYTES);
        let max = self.u64(MAX_FILE_SIZE_BYTES);
        let Some(target) = target else {
            return;
        };
        out.target_file_size_bytes = target;
        // Whether each size was given explicitly, so a cross-check failure names the key the
        // user actually wrote.
        let min_given = matches!(min, Ok(Some(_)));
        let max_given = matches!(max, Ok(Some(_)));
        let min_v = match min {
            Ok(v) => Some(v.unwrap_or_else(|| default_min(target))),
            Err(()) => None,
        };
        let max_v = match max {
            Ok(v) => Some(v.unwrap_or_else(|| default_max(target))),
            Err(()) => None,
        };
        if let Some(min_v) = min_v {
            out.min_file_size_bytes = min_v;
            if min_v >= target {
                let key = if min_given {
                    MIN_FILE_SIZE_BYTES
                } else {
                    TARGET_FILE_SIZE_BYTES
                };
                self.error(
                    key,
                    format!(
                        "{MIN_FILE_SIZE_BYTES} ({min_v}) must be < {TARGET_FILE_SIZE_BYTES} \
                         ({target}), otherwise every new file is below the min threshold"
                    ),
                );
            }
        }
        if let Some(max_v) = max_v {
            out.max_file_size_bytes = max_v;
            if max_v <= target {
                let key = if max_given {
                    MAX_FILE_SIZE_BYTES
                } else {
                    TARGET_FILE_SIZE_BYTES
                };
                self.error(
                    key,
                    format!(
                        "{MAX_FILE_SIZE_BYTES} ({max_v}) must be > {TARGET_FILE_SIZE_BYTES} \
                         ({target}), otherwise every new file is above the max threshold"
                    ),
                );
            }
        }
    }

    /// The target file size: the option, else the table property, else 512 MiB. `None` when the
    /// value that applies is invalid (already recorded).
    fn target_file_size(&mut self, table_properties: &HashMap<String, String>) -> Option<u64> {
        let target_from_table = match table_properties.get(WRITE_TARGET_FILE_SIZE_BYTES) {
            None => Ok(DEFAULT_TARGET_FILE_SIZE_BYTES),
            Some(raw) => match raw.trim().parse::<u64>() {
                Ok(v) if v > 0 => Ok(v),
                _ => Err(raw.clone()),
            },
        };
        match self.u64(TARGET_FILE_SIZE_BYTES) {
            Ok(Some(0)) => {
                self.error(TARGET_FILE_SIZE_BYTES, "must be > 0");
                None
            }
            Ok(Some(v)) => Some(v),
            Ok(None) => match target_from_table {
                Ok(v) => Some(v),
                Err(raw) => {
                    self.error(
                        WRITE_TARGET_FILE_SIZE_BYTES,
                        format!("table property: expected a positive integer, got '{raw}'"),
                    );
                    None
                }
            },
            Err(()) => None,
        }
    }

    /// Which files and groups are planned: `min-input-files`, `rewrite-all` and
    /// `max-file-group-size-bytes`.
    fn group_selection(&mut self, out: &mut CompactionOptions) {
        match self.usize(MIN_INPUT_FILES) {
            Ok(Some(0)) => self.error(MIN_INPUT_FILES, "must be > 0"),
            Ok(Some(v)) => out.min_input_files = v,
            _ => {}
        }
        if let Ok(Some(v)) = self.bool(REWRITE_ALL) {
            out.rewrite_all = v;
        }
        match self.u64(MAX_FILE_GROUP_SIZE_BYTES) {
            Ok(Some(0)) => self.error(MAX_FILE_GROUP_SIZE_BYTES, "must be > 0"),
            Ok(Some(v)) => out.max_file_group_size_bytes = v,
            _ => {}
        }
    }

    /// When delete files make a file a candidate: `delete-file-threshold` and
    /// `delete-ratio-threshold`.
    fn delete_thresholds(&mut self, out: &mut CompactionOptions) {
        if let Ok(Some(v)) = self.usize(DELETE_FILE_THRESHOLD) {
            // Java's default Integer.MAX_VALUE means "never"; keep an explicit value as given.
            out.delete_file_threshold = Some(v);
        }
        match self.f64(DELETE_RATIO_THRESHOLD) {
            Ok(Some(v)) if v <= 0.0 || v > 1.0 => self.error(
                DELETE_RATIO_THRESHOLD,
                format!("must be in (0, 1], got {v}"),
            ),
            Ok(Some(v)) => out.delete_ratio_threshold = v,
            _ => {}
        }
    }

    /// `partial-progress.enabled`, `partial-progress.max-commits` and
    /// `partial-progress.max-failed-commits`.
    fn partial_progress(&mut self, out: &mut CompactionOptions) {
        if let Ok(Some(v)) = self.bool(PARTIAL_PROGRESS_ENABLED) {
            out.partial_progress_enabled = v;
        }
        if let Ok(Some(v)) = self.usize(PARTIAL_PROGRESS_MAX_COMMITS) {
            out.partial_progress_max_commits = v;
            if v == 0 && out.partial_progress_enabled {
                self.error(
                    PARTIAL_PROGRESS_MAX_COMMITS,
                    format!("must be > 0 when {PARTIAL_PROGRESS_ENABLED} is true"),
                );
            }
        }
        // Java: max-failed-commits defaults to max-commits.
        out.partial_progress_max_failed_commits = out.partial_progress_max_commits;
        if let Ok(Some(v)) = self.usize(PARTIAL_PROGRESS_MAX_FAILED_COMMITS) {
            out.partial_progress_max_failed_commits = v;
        }
    }

    /// How the groups are rewritten and committed: `max-concurrent-file-group-rewrites`,
    /// `rewrite-job-order`, `use-starting-sequence-number`, `output-spec-id`,
    /// `remove-dangling-deletes` and icemaint's `rewrite-older-specs`.
    fn execution(&mut self, out: &mut CompactionOptions) {
        match self.usize(MAX_CONCURRENT_FILE_GROUP_REWRITES) {
            Ok(Some(0)) => self.error(MAX_CONCURRENT_FILE_GROUP_REWRITES, "must be > 0"),
            Ok(Some(v)) => out.max_concurrent_file_group_rewrites = v,
            _ => {}
        }
        if let Ok(Some(v)) = self.parse(
            REWRITE_JOB_ORDER,
            "one of none, bytes-asc, bytes-desc, files-asc, files-desc",
            RewriteJobOrder::parse,
        ) {
            out.rewrite_job_order = v;
        }
        if let Ok(Some(v)) = self.bool(USE_STARTING_SEQUENCE_NUMBER) {
            out.use_starting_sequence_number = v;
        }
        if let Ok(Some(v)) = self.parse(OUTPUT_SPEC_ID, "a non-negative integer spec id", |s| {
            s.parse::<i32>().ok().filter(|v| *v >= 0)
        }) {
            out.output_spec_id = Some(v);
        }
        if let Ok(Some(v)) = self.bool(REMOVE_DANGLING_DELETES) {
            out.remove_dangling_deletes = v;
        }
        if let Ok(Some(v)) = self.bool(REWRITE_OLDER_SPECS) {
            out.rewrite_older_specs = v;
        }
        match self.u64(MAX_REWRITE_MEMORY_BYTES) {
            Ok(Some(0)) => self.error(MAX_REWRITE_MEMORY_BYTES, "must be > 0"),
            Ok(Some(v)) => out.max_rewrite_memory_bytes = v,
            _ => {}
        }
    }

    /// `hot-partition-age`: a positive duration (`30s`, `15m`, `2h`, `1d`).
    fn hot_partition_age(&mut self, out: &mut CompactionOptions) {
        let Some(raw) = self.raw(HOT_PARTITION_AGE) else {
            return;
        };
        match crate::util::parse_duration(raw) {
            Ok(d) if d.as_secs() == 0 => self.error(HOT_PARTITION_AGE, "must be at least 1s"),
            Ok(d) => out.hot_partition_age_secs = Some(d.as_secs()),
            Err(e) => self.error(HOT_PARTITION_AGE, e),
        }
    }

    /// `where`: syntax-checked only; the schema is not known here.
    fn where_filter(&mut self, out: &mut CompactionOptions) {
        let options = self.options;
        let Some(raw) = options.get(WHERE) else {
            return;
        };
        let text = raw.trim();
        if text.is_empty() {
            self.error(WHERE, "expected a predicate, got an empty string");
        } else if let Err(e) = filter::parse_expr(text) {
            self.error(WHERE, e.to_string());
        } else {
            out.where_filter = Some(text.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn props(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_java() {
        let o = resolve(&opts(&[]), &props(&[])).unwrap();
        assert_eq!(o, CompactionOptions::default());
        assert_eq!(o.target_file_size_bytes, 536_870_912);
        assert_eq!(o.min_file_size_bytes, 402_653_184);
        assert_eq!(o.max_file_size_bytes, 966_367_641);
        assert_eq!(o.min_input_files, 5);
        assert_eq!(o.max_file_group_size_bytes, 107_374_182_400);
        assert_eq!(o.max_concurrent_file_group_rewrites, 5);
        assert_eq!(o.partial_progress_max_commits, 10);
        assert_eq!(o.partial_progress_max_failed_commits, 10);
        assert_eq!(o.delete_file_threshold, None);
        assert_eq!(o.delete_ratio_threshold, 0.3);
        assert!(o.use_starting_sequence_number);
        assert!(!o.partial_progress_enabled);
        assert!(!o.rewrite_all);
        assert!(!o.rewrite_older_specs);
        assert_eq!(o.rewrite_job_order, RewriteJobOrder::None);
        // About 717 MiB.
        assert_eq!(o.write_max_file_size_bytes(), 751_619_276);
    }

    type Pairs = &'static [(&'static str, &'static str)];

    #[test]
    fn valid_values_table() {
        type Check = fn(&CompactionOptions) -> bool;
        let cases: &[(Pairs, Pairs, Check)] = &[
            (&[], &[(WRITE_TARGET_FILE_SIZE_BYTES, "1000")], |o| {
                o.target_file_size_bytes == 1000
                    && o.min_file_size_bytes == 750
                    && o.max_file_size_bytes == 1800
            }),
            (
                &[(TARGET_FILE_SIZE_BYTES, "2000")],
                &[(WRITE_TARGET_FILE_SIZE_BYTES, "1000")],
                |o| o.target_file_size_bytes == 2000 && o.min_file_size_bytes == 1500,
            ),
            (
                &[(TARGET_FILE_SIZE_BYTES, "100"), (MIN_FILE_SIZE_BYTES, "0")],
                &[],
                |o| o.min_file_size_bytes == 0 && o.max_file_size_bytes == 180,
            ),
            (&[(MIN_INPUT_FILES, "1")], &[], |o| o.min_input_files == 1),
            (&[(REWRITE_ALL, "TRUE")], &[], |o| o.rewrite_all),
            (&[(DELETE_FILE_THRESHOLD, "0")], &[], |o| {
                o.delete_file_threshold == Some(0)
            }),
            (&[(DELETE_RATIO_THRESHOLD, "1")], &[], |o| {
                o.delete_ratio_threshold == 1.0
            }),
            (
                &[
                    (PARTIAL_PROGRESS_ENABLED, "true"),
                    (PARTIAL_PROGRESS_MAX_COMMITS, "3"),
                ],
                &[],
                |o| {
                    o.partial_progress_enabled
                        && o.partial_progress_max_commits == 3
                        && o.partial_progress_max_failed_commits == 3
                },
            ),
            (
                &[
                    (PARTIAL_PROGRESS_MAX_COMMITS, "3"),
                    (PARTIAL_PROGRESS_MAX_FAILED_COMMITS, "0"),
                ],
                &[],
                |o| o.partial_progress_max_failed_commits == 0,
            ),
            // Java only checks max-commits when partial progress is on.
            (&[(PARTIAL_PROGRESS_MAX_COMMITS, "0")], &[], |o| {
                o.partial_progress_max_commits == 0
            }),
            (&[(REWRITE_JOB_ORDER, "Bytes-Desc")], &[], |o| {
                o.rewrite_job_order == RewriteJobOrder::BytesDesc
            }),
            (&[(REWRITE_JOB_ORDER, "files-asc")], &[], |o| {
                o.rewrite_job_order == RewriteJobOrder::FilesAsc
            }),
            (&[(USE_STARTING_SEQUENCE_NUMBER, "false")], &[], |o| {
                !o.use_starting_sequence_number
            }),
            (&[(OUTPUT_SPEC_ID, "2")], &[], |o| {
                o.output_spec_id == Some(2)
            }),
            (&[(REMOVE_DANGLING_DELETES, "false")], &[], |o| {
                !o.remove_dangling_deletes
            }),
            (&[(REMOVE_DANGLING_DELETES, "TRUE")], &[], |o| {
                o.remove_dangling_deletes
            }),
            (&[(REWRITE_OLDER_SPECS, "True")], &[], |o| {
                o.rewrite_older_specs
            }),
            (&[(REWRITE_OLDER_SPECS, "false")], &[], |o| {
                !o.rewrite_older_specs
            }),
            (&[(MAX_REWRITE_MEMORY_BYTES, "1073741824")], &[], |o| {
                o.max_rewrite_memory_bytes == 1 << 30
            }),
            (&[], &[], |o| {
                o.max_rewrite_memory_bytes == DEFAULT_MAX_REWRITE_MEMORY_BYTES
            }),
            (&[(HOT_PARTITION_AGE, "15m")], &[], |o| {
                o.hot_partition_age_secs == Some(900)
            }),
            (&[(HOT_PARTITION_AGE, "1d")], &[], |o| {
                o.hot_partition_age_secs == Some(86_400)
            }),
            (&[(WHERE, " org_id = 3 ")], &[], |o| {
                o.where_filter.as_deref() == Some("org_id = 3")
            }),
            (&[(MAX_CONCURRENT_FILE_GROUP_REWRITES, " 12 ")], &[], |o| {
                o.max_concurrent_file_group_rewrites == 12
            }),
        ];
        for (i, (o, p, check)) in cases.iter().enumerate() {
            let resolved = resolve(&opts(o), &props(p))
                .unwrap_or_else(|e| panic!("case {i} {o:?}: unexpected errors {e:?}"));
            assert!(check(&resolved), "case {i} {o:?}: {resolved:?}");
        }
    }

    #[test]
    fn invalid_values_table() {
        // (options, table properties, expected (key, message fragment) pairs)
        let cases: &[(Pairs, Pairs, Pairs)] = &[
            (
                &[("target-file-size", "1")],
                &[],
                &[("target-file-size", "unknown option")],
            ),
            (
                &[(TARGET_FILE_SIZE_BYTES, "abc")],
                &[],
                &[(
                    TARGET_FILE_SIZE_BYTES,
                    "expected a non-negative integer, got 'abc'",
                )],
            ),
            (
                &[(TARGET_FILE_SIZE_BYTES, "0")],
                &[],
                &[(TARGET_FILE_SIZE_BYTES, "must be > 0")],
            ),
            (
                &[(TARGET_FILE_SIZE_BYTES, "-5")],
                &[],
                &[(TARGET_FILE_SIZE_BYTES, "expected a non-negative integer")],
            ),
            (
                &[
                    (TARGET_FILE_SIZE_BYTES, "100"),
                    (MIN_FILE_SIZE_BYTES, "100"),
                ],
                &[],
                &[(MIN_FILE_SIZE_BYTES, "must be < target-file-size-bytes")],
            ),
            (
                &[
                    (TARGET_FILE_SIZE_BYTES, "100"),
                    (MAX_FILE_SIZE_BYTES, "100"),
                ],
                &[],
                &[(MAX_FILE_SIZE_BYTES, "must be > target-file-size-bytes")],
            ),
            // A min above a target taken from the table property names the min key.
            (
                &[(MIN_FILE_SIZE_BYTES, "5000")],
                &[(WRITE_TARGET_FILE_SIZE_BYTES, "1000")],
                &[(
                    MIN_FILE_SIZE_BYTES,
                    "(5000) must be < target-file-size-bytes (1000)",
                )],
            ),
            (
                &[],
                &[(WRITE_TARGET_FILE_SIZE_BYTES, "big")],
                &[(WRITE_TARGET_FILE_SIZE_BYTES, "table property")],
            ),
            (
                &[(MIN_INPUT_FILES, "0")],
                &[],
                &[(MIN_INPUT_FILES, "must be > 0")],
            ),
            (
                &[(MAX_REWRITE_MEMORY_BYTES, "0")],
                &[],
                &[(MAX_REWRITE_MEMORY_BYTES, "must be > 0")],
            ),
            (
                &[(HOT_PARTITION_AGE, "15")],
                &[],
                &[(HOT_PARTITION_AGE, "missing unit after 15")],
            ),
            (
                &[(HOT_PARTITION_AGE, "0s")],
                &[],
                &[(HOT_PARTITION_AGE, "must be at least 1s")],
            ),
            (
                &[(MAX_FILE_GROUP_SIZE_BYTES, "0")],
                &[],
                &[(MAX_FILE_GROUP_SIZE_BYTES, "must be > 0")],
            ),
            (
                &[(MAX_CONCURRENT_FILE_GROUP_REWRITES, "0")],
                &[],
                &[(MAX_CONCURRENT_FILE_GROUP_REWRITES, "must be > 0")],
            ),
            (
                &[(DELETE_RATIO_THRESHOLD, "0")],
                &[],
                &[(DELETE_RATIO_THRESHOLD, "must be in (0, 1]")],
            ),
            (
                &[(DELETE_RATIO_THRESHOLD, "1.5")],
                &[],
                &[(DELETE_RATIO_THRESHOLD, "must be in (0, 1]")],
            ),
            (
                &[(DELETE_RATIO_THRESHOLD, "NaN")],
                &[],
                &[(DELETE_RATIO_THRESHOLD, "expected a number")],
            ),
            (
                &[(DELETE_FILE_THRESHOLD, "-1")],
                &[],
                &[(DELETE_FILE_THRESHOLD, "expected a non-negative integer")],
            ),
            (
                &[(REWRITE_ALL, "yes")],
                &[],
                &[(REWRITE_ALL, "expected true or false, got 'yes'")],
            ),
            (
                &[
                    (PARTIAL_PROGRESS_ENABLED, "true"),
                    (PARTIAL_PROGRESS_MAX_COMMITS, "0"),
                ],
                &[],
                &[(PARTIAL_PROGRESS_MAX_COMMITS, "must be > 0 when")],
            ),
            (
                &[(REWRITE_JOB_ORDER, "random")],
                &[],
                &[(REWRITE_JOB_ORDER, "expected one of none, bytes-asc")],
            ),
            (
                &[(OUTPUT_SPEC_ID, "-1")],
                &[],
                &[(OUTPUT_SPEC_ID, "expected a non-negative integer spec id")],
            ),
            (
                &[(REMOVE_DANGLING_DELETES, "maybe")],
                &[],
                &[(REMOVE_DANGLING_DELETES, "expected true or false")],
            ),
            (
                &[(REWRITE_OLDER_SPECS, "yes")],
                &[],
                &[(REWRITE_OLDER_SPECS, "expected true or false, got 'yes'")],
            ),
            (
                &[(WHERE, "org_id = ")],
                &[],
                &[(WHERE, "syntax error at position")],
            ),
            (&[(WHERE, "  ")], &[], &[(WHERE, "empty string")]),
            // Every problem is reported, not just the first.
            (
                &[
                    ("bogus", "1"),
                    (MIN_INPUT_FILES, "x"),
                    (DELETE_RATIO_THRESHOLD, "2"),
                    (REWRITE_ALL, "maybe"),
                ],
                &[],
                &[
                    ("bogus", "unknown option"),
                    (MIN_INPUT_FILES, "expected"),
                    (DELETE_RATIO_THRESHOLD, "must be in"),
                    (REWRITE_ALL, "expected true or false"),
                ],
            ),
        ];
        for (i, (o, p, expected)) in cases.iter().enumerate() {
            let errors =
                resolve(&opts(o), &props(p)).expect_err(&format!("case {i} {o:?} should fail"));
            assert_eq!(
                errors.len(),
                expected.len(),
                "case {i} {o:?}: got {errors:?}"
            );
            for (key, fragment) in expected.iter() {
                assert!(
                    errors
                        .iter()
                        .any(|e| e.key == *key && e.message.contains(fragment)),
                    "case {i} {o:?}: no error for {key} containing '{fragment}' in {errors:?}"
                );
            }
        }
    }

    #[test]
    fn unknown_option_message_is_only_the_key() {
        let errors = resolve(&opts(&[("max-files-to-rewrite", "3")]), &props(&[])).unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "option 'max-files-to-rewrite': unknown option"
        );
    }

    #[test]
    fn known_options_are_all_accepted() {
        // Every name in KNOWN_OPTIONS is accepted with a valid value.
        let valid = |k: &str| -> &str {
            match k {
                REWRITE_ALL
                | PARTIAL_PROGRESS_ENABLED
                | USE_STARTING_SEQUENCE_NUMBER
                | REMOVE_DANGLING_DELETES
                | REWRITE_OLDER_SPECS => "false",
                REWRITE_JOB_ORDER => "none",
                DELETE_RATIO_THRESHOLD => "0.5",
                WHERE => "a = 1",
                TARGET_FILE_SIZE_BYTES => "1000",
                MIN_FILE_SIZE_BYTES => "500",
                HOT_PARTITION_AGE => "1h",
                MAX_FILE_SIZE_BYTES => "2000",
                _ => "3",
            }
        };
        let all: BTreeMap<String, String> = KNOWN_OPTIONS
            .iter()
            .map(|k| (k.to_string(), valid(k).to_string()))
            .collect();
        resolve(&all, &props(&[])).unwrap();
    }

    #[test]
    fn output_spec_must_exist() {
        let mut o = CompactionOptions::default();
        assert_eq!(o.resolve_output_spec_id(1, &[0, 1]), Ok(1));
        o.output_spec_id = Some(0);
        assert_eq!(o.resolve_output_spec_id(1, &[0, 1]), Ok(0));
        o.output_spec_id = Some(7);
        let e = o.resolve_output_spec_id(1, &[0, 1]).unwrap_err();
        assert_eq!(e.key, OUTPUT_SPEC_ID);
        assert!(e.to_string().contains("no partition spec with id 7"));
    }
}
