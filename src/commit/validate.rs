//! Pure conflict rules for committing a rewrite on top of snapshots that other writers committed
//! after the rewrite started (Java `MergingSnapshotProducer.validationHistory`,
//! `validateNoNewDeletesForDataFiles`, `DeleteFileIndex` and the filter manager's
//! "missing required files to delete" check). No I/O here: the callers read manifests and feed the
//! facts in, so every rule is unit-tested on plain values.

use std::collections::{HashMap, HashSet};

use iceberg::spec::{DataContentType, DataFile, PrimitiveLiteral, Struct};

/// Field id of `file_path` in position delete files (reserved by the spec).
pub const POSITION_DELETE_FILE_PATH_FIELD_ID: i32 = 2147483546;

/// The snapshots committed after `starting` up to and including `current`, newest first, found by
/// walking parent links from `current` (Java `SnapshotUtil.ancestorsBetween` plus the check in
/// `validationHistory`). `parent_of(id)` is `None` when the snapshot is unknown (expired) and
/// `Some(parent)` otherwise. Fails when `starting` is not an ancestor of `current`: then nothing
/// can be said about what happened in between and the rewrite must not commit.
pub fn history_since(
    current: i64,
    starting: i64,
    parent_of: impl Fn(i64) -> Option<Option<i64>>,
) -> Result<Vec<i64>, String> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut id = current;
    loop {
        if id == starting {
            return Ok(out);
        }
        out.push(id);
        seen.insert(id);
        match parent_of(id) {
            Some(Some(parent)) if !seen.contains(&parent) => id = parent,
            Some(Some(parent)) => {
                return Err(format!(
                    "snapshot history of main loops at snapshot {parent}; cannot validate from starting snapshot {starting}"
                ));
            }
            Some(None) => {
                return Err(format!(
                    "starting snapshot {starting} is not an ancestor of the current snapshot {current} of main"
                ));
            }
            None => {
                return Err(format!(
                    "cannot determine history between starting snapshot {starting} and the last known ancestor {id}"
                ));
            }
        }
    }
}

/// The requested paths that were not found live, in request order, for Java's
/// "missing required files to delete" check.
pub fn missing_paths<'a>(requested: &'a [String], live: &HashSet<String>) -> Vec<&'a str> {
    requested
        .iter()
        .filter(|p| !live.contains(p.as_str()))
        .map(String::as_str)
        .collect()
}

/// The error message for [`missing_paths`], listing at most a few paths.
pub fn missing_files_message(missing: &[&str]) -> String {
    format!("missing required files to delete: {}", list_some(missing))
}

fn list_some(items: &[&str]) -> String {
    const SHOWN: usize = 5;
    let mut s = items
        .iter()
        .take(SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        s.push_str(&format!(" (and {} more)", items.len() - SHOWN));
    }
    s
}

/// A data file the rewrite replaces, as found live in the current snapshot's manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplacedFile {
    pub path: String,
    pub spec_id: i32,
    pub partition: Struct,
}

/// A delete file added by a snapshot committed after the starting snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedDelete {
    pub path: String,
    /// Position or equality deletes.
    pub content: DataContentType,
    pub spec_id: i32,
    /// Whether its partition spec is unpartitioned: such equality deletes are global.
    pub spec_unpartitioned: bool,
    pub partition: Struct,
    pub data_sequence_number: i64,
    /// The snapshot that added it (for the error message).
    pub snapshot_id: i64,
    /// The one data file all its positions refer to: `referenced_data_file`, or the `file_path`
    /// column's bounds when lower equals upper (Java `ContentFileUtil.referencedDataFile`).
    pub referenced_data_file: Option<String>,
    /// Lower and upper bound of the `file_path` column, when the writer recorded them.
    pub file_path_bounds: Option<(String, String)>,
}

impl AddedDelete {
    /// Collects what the rules need from a delete file's manifest entry.
    pub fn from_data_file(
        file: &DataFile,
        spec_id: i32,
        spec_unpartitioned: bool,
        data_sequence_number: i64,
        snapshot_id: i64,
    ) -> Self {
        let bound = |m: &HashMap<i32, iceberg::spec::Datum>| {
            m.get(&POSITION_DELETE_FILE_PATH_FIELD_ID)
                .and_then(|d| match d.literal() {
                    PrimitiveLiteral::String(s) => Some(s.clone()),
                    _ => None,
                })
        };
        let file_path_bounds = if file.content_type() == DataContentType::PositionDeletes {
            bound(file.lower_bounds()).zip(bound(file.upper_bounds()))
        } else {
            None
        };
        let referenced_data_file = file.referenced_data_file().or_else(|| {
            file_path_bounds
                .as_ref()
                .filter(|(lo, hi)| lo == hi)
                .map(|(lo, _)| lo.clone())
        });
        Self {
            path: file.file_path().to_string(),
            content: file.content_type(),
            spec_id,
            spec_unpartitioned,
            partition: file.partition().clone(),
            data_sequence_number,
            snapshot_id,
            referenced_data_file,
            file_path_bounds,
        }
    }

    fn kind(&self) -> &'static str {
        match self.content {
            DataContentType::PositionDeletes => "position",
            DataContentType::EqualityDeletes => "equality",
            DataContentType::Data => "data",
        }
    }
}

/// Whether `delete` can apply to `file` when `file`'s rows are treated as written at
/// `starting_sequence_number` (Java `deletes.forDataFile(startingSequenceNumber, file)` over an
/// index built with `afterSequenceNumber(startingSequenceNumber)`).
///
/// `ignore_equality_deletes` is Java's rule for rewrites whose new files keep the starting
/// snapshot's data sequence number (`use-starting-sequence-number`, the default): an
/// equality delete committed after the start has a higher sequence number than the new files, so
/// it still applies to them and is no conflict. A position delete names the old file's path and
/// positions, which die with it: always a conflict.
pub fn delete_applies(
    delete: &AddedDelete,
    file: &ReplacedFile,
    starting_sequence_number: i64,
    ignore_equality_deletes: bool,
) -> bool {
    if delete.data_sequence_number <= starting_sequence_number {
        return false;
    }
    match delete.content {
        DataContentType::PositionDeletes => {
            if let Some(target) = &delete.referenced_data_file {
                return *target == file.path;
            }
            if delete.spec_id != file.spec_id || delete.partition != file.partition {
                return false;
            }
            match &delete.file_path_bounds {
                Some((lo, hi)) => {
                    lo.as_str() <= file.path.as_str() && file.path.as_str() <= hi.as_str()
                }
                None => true,
            }
        }
        DataContentType::EqualityDeletes => {
            if ignore_equality_deletes {
                return false;
            }
            delete.spec_unpartitioned
                || (delete.spec_id == file.spec_id && delete.partition == file.partition)
        }
        DataContentType::Data => false,
    }
}

/// The replaced files indexed for [`delete_applies`] lookups (by path and by partition), so that
/// many deletes against many files stay cheap.
#[derive(Debug)]
pub struct ConflictIndex<'a> {
    files: &'a [ReplacedFile],
    by_path: HashMap<&'a str, usize>,
    by_partition: HashMap<(i32, &'a Struct), Vec<usize>>,
    starting_sequence_number: i64,
    ignore_equality_deletes: bool,
}

impl<'a> ConflictIndex<'a> {
    pub fn new(
        files: &'a [ReplacedFile],
        starting_sequence_number: i64,
        ignore_equality_deletes: bool,
    ) -> Self {
        let mut by_path = HashMap::new();
        let mut by_partition: HashMap<(i32, &Struct), Vec<usize>> = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            by_path.insert(f.path.as_str(), i);
            by_partition
                .entry((f.spec_id, &f.partition))
                .or_default()
                .push(i);
        }
        Self {
            files,
            by_path,
            by_partition,
            starting_sequence_number,
            ignore_equality_deletes,
        }
    }

    /// The first replaced file `delete` applies to, if any.
    pub fn conflict_for(&self, delete: &AddedDelete) -> Option<&'a ReplacedFile> {
        let applies = |f: &ReplacedFile| {
            delete_applies(
                delete,
                f,
                self.starting_sequence_number,
                self.ignore_equality_deletes,
            )
        };
        let candidates: Box<dyn Iterator<Item = &'a ReplacedFile>> = match delete.content {
            DataContentType::PositionDeletes => match &delete.referenced_data_file {
                Some(p) => Box::new(
                    self.by_path
                        .get(p.as_str())
                        .map(|&i| &self.files[i])
                        .into_iter(),
                ),
                None => Box::new(self.partition_group(delete)),
            },
            DataContentType::EqualityDeletes if delete.spec_unpartitioned => {
                Box::new(self.files.iter())
            }
            DataContentType::EqualityDeletes => Box::new(self.partition_group(delete)),
            DataContentType::Data => Box::new(std::iter::empty()),
        };
        candidates.into_iter().find(|f| applies(f))
    }

    fn partition_group(&self, delete: &AddedDelete) -> impl Iterator<Item = &'a ReplacedFile> + 'a {
        let files = self.files;
        self.by_partition
            .get(&(delete.spec_id, &delete.partition))
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(move |i| &files[i])
    }

    /// Java's "found new delete for replaced data file" message for a conflict.
    pub fn conflict_message(file: &ReplacedFile, delete: &AddedDelete) -> String {
        format!(
            "found new delete for replaced data file: {} ({} delete file {} added by snapshot {})",
            file.path,
            delete.kind(),
            delete.path,
            delete.snapshot_id
        )
    }
}

#[cfg(test)]
mod tests {
    use iceberg::spec::{DataFileBuilder, DataFileFormat, Datum, Literal};

    use super::*;

    fn part(v: i32) -> Struct {
        Struct::from_iter([Some(Literal::int(v))])
    }

    fn replaced(path: &str, spec_id: i32, partition: Struct) -> ReplacedFile {
        ReplacedFile {
            path: path.to_string(),
            spec_id,
            partition,
        }
    }

    fn delete(content: DataContentType, spec_id: i32, partition: Struct, seq: i64) -> AddedDelete {
        AddedDelete {
            path: "s3://b/t/data/del.parquet".to_string(),
            content,
            spec_id,
            spec_unpartitioned: false,
            partition,
            data_sequence_number: seq,
            snapshot_id: 77,
            referenced_data_file: None,
            file_path_bounds: None,
        }
    }

    const POS: DataContentType = DataContentType::PositionDeletes;
    const EQ: DataContentType = DataContentType::EqualityDeletes;

    #[test]
    fn history_walks_back_to_start() {
        // 1 <- 2 <- 3 <- 4
        let parent = |id: i64| match id {
            1 => Some(None),
            2..=4 => Some(Some(id - 1)),
            _ => None,
        };
        assert_eq!(history_since(4, 2, parent).unwrap(), vec![4, 3]);
        assert_eq!(history_since(4, 4, parent).unwrap(), Vec::<i64>::new());
        assert_eq!(history_since(4, 1, parent).unwrap(), vec![4, 3, 2]);
    }

    #[test]
    fn history_fails_when_start_is_not_an_ancestor() {
        // 1 <- 2 <- 3 and a side branch 1 <- 5
        let parent = |id: i64| match id {
            1 => Some(None),
            2 | 3 => Some(Some(id - 1)),
            5 => Some(Some(1)),
            _ => None,
        };
        let err = history_since(3, 5, parent).unwrap_err();
        assert!(err.contains("not an ancestor"), "{err}");
    }

    #[test]
    fn history_fails_when_chain_is_broken_by_expiry() {
        // 4 -> 3 -> (2 expired)
        let parent = |id: i64| match id {
            3 | 4 => Some(Some(id - 1)),
            _ => None,
        };
        let err = history_since(4, 1, parent).unwrap_err();
        assert!(
            err.contains("cannot determine history between starting snapshot 1"),
            "{err}"
        );
        assert!(err.contains("last known ancestor 2"), "{err}");
    }

    #[test]
    fn history_detects_loops() {
        let parent = |id: i64| Some(Some(if id == 2 { 3 } else { 2 }));
        assert!(history_since(3, 1, parent).unwrap_err().contains("loops"));
    }

    #[test]
    fn missing_paths_in_request_order() {
        let requested = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let live = HashSet::from(["b".to_string()]);
        let missing = missing_paths(&requested, &live);
        assert_eq!(missing, vec!["a", "c"]);
        assert_eq!(
            missing_files_message(&missing),
            "missing required files to delete: a, c"
        );
        let many: Vec<&str> = vec!["1", "2", "3", "4", "5", "6", "7"];
        assert_eq!(
            missing_files_message(&many),
            "missing required files to delete: 1, 2, 3, 4, 5 (and 2 more)"
        );
    }

    #[test]
    fn deletes_at_or_before_start_never_conflict() {
        let f = replaced("f", 0, part(1));
        for content in [POS, EQ] {
            assert!(!delete_applies(
                &delete(content, 0, part(1), 5),
                &f,
                5,
                false
            ));
            assert!(!delete_applies(
                &delete(content, 0, part(1), 3),
                &f,
                5,
                false
            ));
        }
    }

    #[test]
    fn position_delete_after_start_in_same_partition_conflicts() {
        let f = replaced("f", 0, part(1));
        assert!(delete_applies(&delete(POS, 0, part(1), 6), &f, 5, true));
        assert!(delete_applies(&delete(POS, 0, part(1), 6), &f, 5, false));
    }

    #[test]
    fn position_delete_elsewhere_does_not_conflict() {
        let f = replaced("f", 0, part(1));
        assert!(!delete_applies(&delete(POS, 0, part(2), 6), &f, 5, true));
        assert!(!delete_applies(&delete(POS, 1, part(1), 6), &f, 5, true));
        // Position deletes are never global, even from an unpartitioned spec.
        let mut d = delete(POS, 1, Struct::empty(), 6);
        d.spec_unpartitioned = true;
        assert!(!delete_applies(&d, &f, 5, true));
    }

    #[test]
    fn position_delete_narrowed_by_referenced_file_or_bounds() {
        let f = replaced("s3://b/t/data/f.parquet", 0, part(1));
        let mut d = delete(POS, 0, part(1), 6);
        d.referenced_data_file = Some("s3://b/t/data/other.parquet".to_string());
        assert!(!delete_applies(&d, &f, 5, true));
        d.referenced_data_file = Some(f.path.clone());
        assert!(delete_applies(&d, &f, 5, true));
        // A referenced file decides alone, whatever partition the delete sits in.
        d.partition = part(9);
        assert!(delete_applies(&d, &f, 5, true));

        let mut d = delete(POS, 0, part(1), 6);
        d.file_path_bounds = Some(("s3://b/t/data/a".into(), "s3://b/t/data/c".into()));
        assert!(!delete_applies(&d, &f, 5, true));
        d.file_path_bounds = Some(("s3://b/t/data/a".into(), "s3://b/t/data/z".into()));
        assert!(delete_applies(&d, &f, 5, true));
    }

    #[test]
    fn equality_deletes_ignored_when_new_files_keep_starting_sequence_number() {
        let f = replaced("f", 0, part(1));
        let d = delete(EQ, 0, part(1), 6);
        assert!(!delete_applies(&d, &f, 5, true));
        assert!(delete_applies(&d, &f, 5, false));
    }

    #[test]
    fn equality_deletes_partition_scoped_or_global() {
        let f = replaced("f", 0, part(1));
        assert!(!delete_applies(&delete(EQ, 0, part(2), 6), &f, 5, false));
        assert!(!delete_applies(&delete(EQ, 1, part(1), 6), &f, 5, false));
        let mut global = delete(EQ, 1, Struct::empty(), 6);
        global.spec_unpartitioned = true;
        assert!(delete_applies(&global, &f, 5, false));
        assert!(!delete_applies(&global, &f, 5, true));
    }

    #[test]
    fn index_finds_first_conflict() {
        let files = vec![
            replaced("a", 0, part(1)),
            replaced("b", 0, part(2)),
            replaced("c", 0, part(2)),
        ];
        let idx = ConflictIndex::new(&files, 5, true);
        assert_eq!(
            idx.conflict_for(&delete(POS, 0, part(2), 6)).unwrap().path,
            "b"
        );
        assert!(idx.conflict_for(&delete(POS, 0, part(3), 6)).is_none());
        assert!(idx.conflict_for(&delete(EQ, 0, part(1), 6)).is_none());
        let mut d = delete(POS, 0, part(7), 6);
        d.referenced_data_file = Some("c".into());
        assert_eq!(idx.conflict_for(&d).unwrap().path, "c");
        let msg = ConflictIndex::conflict_message(&files[2], &d);
        assert!(
            msg.starts_with("found new delete for replaced data file: c (position delete file"),
            "{msg}"
        );

        let idx = ConflictIndex::new(&files, 5, false);
        let mut global = delete(EQ, 3, Struct::empty(), 6);
        global.spec_unpartitioned = true;
        assert_eq!(idx.conflict_for(&global).unwrap().path, "a");
        assert_eq!(
            idx.conflict_for(&delete(EQ, 0, part(2), 6)).unwrap().path,
            "b"
        );
    }

    #[test]
    fn from_data_file_reads_referenced_file_and_bounds() {
        let bounds = |lo: &str, hi: &str| {
            (
                HashMap::from([(POSITION_DELETE_FILE_PATH_FIELD_ID, Datum::string(lo))]),
                HashMap::from([(POSITION_DELETE_FILE_PATH_FIELD_ID, Datum::string(hi))]),
            )
        };
        let (lo, hi) = bounds("x", "x");
        let df = DataFileBuilder::default()
            .content(POS)
            .file_path("del.parquet".to_string())
            .file_format(DataFileFormat::Parquet)
            .partition(part(1))
            .record_count(1)
            .file_size_in_bytes(10)
            .lower_bounds(lo)
            .upper_bounds(hi)
            .build()
            .unwrap();
        let d = AddedDelete::from_data_file(&df, 0, false, 9, 1);
        assert_eq!(d.referenced_data_file.as_deref(), Some("x"));
        assert_eq!(d.file_path_bounds, Some(("x".into(), "x".into())));

        let (lo, hi) = bounds("a", "b");
        let df = DataFileBuilder::default()
            .content(POS)
            .file_path("del.parquet".to_string())
            .file_format(DataFileFormat::Parquet)
            .record_count(1)
            .file_size_in_bytes(10)
            .lower_bounds(lo)
            .upper_bounds(hi)
            .build()
            .unwrap();
        let d = AddedDelete::from_data_file(&df, 0, true, 9, 1);
        assert_eq!(d.referenced_data_file, None);
        assert_eq!(d.data_sequence_number, 9);
        assert!(d.spec_unpartitioned);
    }
}
