//! Tests of the pure reachability and of the planning glue: example cases, and property tests over
//! randomly generated table histories (appends, overwrites and replaces, delete files, tags,
//! branches, rollbacks), both with arbitrary retained sets and with the retained set chosen by
//! iceberg's own `expire_snapshots` action.

use std::collections::{BTreeSet, HashMap, HashSet};

use iceberg::io::FileIO;
use iceberg::spec::TableMetadata;
use iceberg::table::Table;
use iceberg::{Runtime, TableIdent};
use proptest::prelude::*;

use super::*;

const HOUR_MS: i64 = 3_600_000;

// ---------------------------------------------------------------------------------------------
// A model of a table's history, as plain data
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Added,
    Existing,
    Deleted,
}

#[derive(Debug, Clone)]
struct Entry {
    /// Canonical identity of the file (`f12`), spelled per manifest.
    file: usize,
    kind: FileKind,
    status: Status,
}

#[derive(Debug, Clone)]
struct Manifest {
    path: String,
    /// Java writes `file:/abs`, others `file:///abs`: both spellings appear.
    java_spelling: bool,
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Snap {
    id: i64,
    parent: Option<i64>,
    timestamp_ms: i64,
    manifests: Vec<usize>,
}

#[derive(Debug, Clone)]
struct RefModel {
    name: String,
    snapshot: i64,
    tag: bool,
    max_ref_age_ms: Option<i64>,
}

#[derive(Debug, Clone, Default)]
struct History {
    manifests: Vec<Manifest>,
    snaps: Vec<Snap>,
    refs: Vec<RefModel>,
    files: usize,
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        files: usize,
        deletes: bool,
    },
    /// Removes the live files picked by `mask` (data and delete files) and adds `add` new ones:
    /// an overwrite, a delete or, with `add > 0`, a compaction-like replace.
    Rewrite {
        mask: u16,
        add: usize,
    },
    Tag {
        aged: bool,
    },
    Branch,
    /// Moves main back to an ancestor: later commits fork, the abandoned ones dangle.
    Rollback {
        back: usize,
    },
    /// Commits go to this branch (index into the branches, modulo).
    Switch {
        to: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..4, any::<bool>()).prop_map(|(files, deletes)| Op::Append { files, deletes }),
        4 => (any::<u16>(), 0usize..3).prop_map(|(mask, add)| Op::Rewrite { mask, add }),
        2 => any::<bool>().prop_map(|aged| Op::Tag { aged }),
        1 => Just(Op::Branch),
        1 => (1usize..4).prop_map(|back| Op::Rollback { back }),
        1 => (0usize..4).prop_map(|to| Op::Switch { to }),
    ]
}

fn file_path(n: usize, java: bool) -> String {
    if java {
        format!("file:/wh/db/t/data/f{n}.parquet")
    } else {
        format!("file:///wh/db/t/data/f{n}.parquet")
    }
}

impl History {
    fn build(ops: &[Op], base_ms: i64) -> History {
        let mut h = History::default();
        // (branch name, head) — main first.
        let mut branches: Vec<(String, Option<i64>)> = vec![("main".into(), None)];
        let mut target = 0usize;
        for (i, op) in ops.iter().enumerate() {
            let head = branches[target].1;
            let parent_manifests: Vec<usize> = head
                .map(|id| h.snap(id).manifests.clone())
                .unwrap_or_default();
            let java = i % 3 == 0;
            let new_snapshot = match op {
                Op::Append { files, deletes } => {
                    let entries = (0..*files)
                        .map(|k| Entry {
                            file: h.files + k,
                            kind: if *deletes && k == 0 {
                                FileKind::Delete
                            } else {
                                FileKind::Data
                            },
                            status: Status::Added,
                        })
                        .collect();
                    h.files += files;
                    let m = h.add_manifest(java, entries);
                    let mut ms = parent_manifests;
                    ms.push(m);
                    Some(ms)
                }
                Op::Rewrite { mask, add } => {
                    if head.is_none() {
                        None
                    } else {
                        let live: Vec<(usize, usize, FileKind)> = parent_manifests
                            .iter()
                            .flat_map(|&m| {
                                h.manifests[m]
                                    .entries
                                    .iter()
                                    .filter(|e| e.status != Status::Deleted)
                                    .map(move |e| (m, e.file, e.kind))
                            })
                            .collect();
                        let removed: HashSet<usize> = live
                            .iter()
                            .enumerate()
                            .filter(|(k, _)| mask & (1 << (k % 16)) != 0)
                            .map(|(_, (_, f, _))| *f)
                            .collect();
                        let mut ms = Vec::new();
                        for &m in &parent_manifests {
                            let touched = h.manifests[m]
                                .entries
                                .iter()
                                .any(|e| e.status != Status::Deleted && removed.contains(&e.file));
                            if !touched {
                                ms.push(m);
                                continue;
                            }
                            let entries: Vec<Entry> = h.manifests[m]
                                .entries
                                .iter()
                                .filter(|e| e.status != Status::Deleted)
                                .map(|e| Entry {
                                    file: e.file,
                                    kind: e.kind,
                                    status: if removed.contains(&e.file) {
                                        Status::Deleted
                                    } else {
                                        Status::Existing
                                    },
                                })
                                .collect();
                            ms.push(h.add_manifest(!java, entries));
                        }
                        if *add > 0 {
                            let entries = (0..*add)
                                .map(|k| Entry {
                                    file: h.files + k,
                                    kind: FileKind::Data,
                                    status: Status::Added,
                                })
                                .collect();
                            h.files += add;
                            ms.push(h.add_manifest(java, entries));
                        }
                        Some(ms)
                    }
                }
                Op::Tag { aged } => {
                    if let Some(id) = head {
                        let n = h.refs.len();
                        h.refs.push(RefModel {
                            name: format!("tag{n}"),
                            snapshot: id,
                            tag: true,
                            max_ref_age_ms: aged.then_some(1),
                        });
                    }
                    None
                }
                Op::Branch => {
                    if head.is_some() && branches.len() < 4 {
                        let n = branches.len();
                        branches.push((format!("b{n}"), head));
                        target = n;
                    }
                    None
                }
                Op::Rollback { back } => {
                    if target == 0 {
                        let mut id = head;
                        for _ in 0..*back {
                            if let Some(p) = id.and_then(|i| h.snap(i).parent) {
                                id = Some(p);
                            }
                        }
                        branches[0].1 = id;
                    }
                    None
                }
                Op::Switch { to } => {
                    target = to % branches.len();
                    None
                }
            };
            if let Some(manifests) = new_snapshot {
                let id = 1000 + h.snaps.len() as i64;
                h.snaps.push(Snap {
                    id,
                    parent: head,
                    timestamp_ms: base_ms + (h.snaps.len() as i64) * HOUR_MS,
                    manifests,
                });
                branches[target].1 = Some(id);
            }
        }
        for (name, head) in branches {
            if let Some(id) = head {
                h.refs.push(RefModel {
                    name,
                    snapshot: id,
                    tag: false,
                    max_ref_age_ms: None,
                });
            }
        }
        h
    }

    fn snap(&self, id: i64) -> &Snap {
        self.snaps
            .iter()
            .find(|s| s.id == id)
            .expect("known snapshot")
    }

    fn add_manifest(&mut self, java_spelling: bool, entries: Vec<Entry>) -> usize {
        let n = self.manifests.len();
        self.manifests.push(Manifest {
            path: format!("file:///wh/db/t/metadata/m{n}.avro"),
            java_spelling,
            entries,
        });
        n
    }

    fn list_path(id: i64) -> String {
        format!("file:///wh/db/t/metadata/snap-{id}.avro")
    }

    fn reach(&self, ids: &[i64]) -> Vec<SnapshotReach> {
        ids.iter()
            .map(|&id| SnapshotReach {
                snapshot_id: id,
                manifest_list: Self::list_path(id),
                manifests: self
                    .snap(id)
                    .manifests
                    .iter()
                    .map(|&m| self.manifests[m].path.clone())
                    .collect(),
            })
            .collect()
    }

    fn index(&self) -> HashMap<String, ManifestReach> {
        self.manifests
            .iter()
            .map(|m| {
                let mut r = ManifestReach {
                    length: 100,
                    ..Default::default()
                };
                for e in &m.entries {
                    let path = file_path(e.file, m.java_spelling);
                    if e.status == Status::Deleted {
                        r.deleted.push(path);
                    } else {
                        r.live.push(FileRef {
                            path,
                            kind: e.kind,
                            size: Some(10),
                        });
                    }
                }
                (m.path.clone(), r)
            })
            .collect()
    }

    /// Independent reachability over the model's own identities (not paths, so spelling
    /// differences cannot hide a bug): every list, manifest and live file of `ids`.
    fn reachable(&self, ids: &[i64]) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for &id in ids {
            out.insert(format!("list:{id}"));
            for &m in &self.snap(id).manifests {
                out.insert(format!("manifest:{m}"));
                for e in self.manifests[m]
                    .entries
                    .iter()
                    .filter(|e| e.status != Status::Deleted)
                {
                    out.insert(format!("file:{}", e.file));
                }
            }
        }
        out
    }

    fn ids(&self) -> Vec<i64> {
        self.snaps.iter().map(|s| s.id).collect()
    }

    /// Table metadata JSON (v2) for this history.
    fn metadata(&self, base_ms: i64) -> TableMetadata {
        let main = self
            .refs
            .iter()
            .find(|r| r.name == "main")
            .map(|r| r.snapshot);
        let snapshots: Vec<serde_json::Value> = self
            .snaps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut v = serde_json::json!({
                    "snapshot-id": s.id,
                    "timestamp-ms": s.timestamp_ms,
                    "sequence-number": i + 1,
                    "summary": {"operation": "append"},
                    "manifest-list": Self::list_path(s.id),
                    "schema-id": 0
                });
                if let Some(p) = s.parent {
                    v["parent-snapshot-id"] = p.into();
                }
                v
            })
            .collect();
        let refs: serde_json::Map<String, serde_json::Value> = self
            .refs
            .iter()
            .map(|r| {
                let mut v = serde_json::json!({
                    "snapshot-id": r.snapshot,
                    "type": if r.tag { "tag" } else { "branch" },
                });
                if let Some(age) = r.max_ref_age_ms {
                    v["max-ref-age-ms"] = age.into();
                }
                (r.name.clone(), v)
            })
            .collect();
        let last_updated = self.snaps.last().map(|s| s.timestamp_ms).unwrap_or(base_ms);
        let mut md = serde_json::json!({
            "format-version": 2,
            "table-uuid": "9c12d441-03fe-4693-9a96-a0705ddf69c1",
            "location": "file:///wh/db/t",
            "last-sequence-number": self.snaps.len(),
            "last-updated-ms": last_updated,
            "last-column-id": 1,
            "current-schema-id": 0,
            "schemas": [{"type": "struct", "schema-id": 0, "fields": [
                {"id": 1, "name": "x", "required": true, "type": "long"}]}],
            "default-spec-id": 0,
            "partition-specs": [{"spec-id": 0, "fields": []}],
            "last-partition-id": 999,
            "default-sort-order-id": 0,
            "sort-orders": [{"order-id": 0, "fields": []}],
            "properties": {},
            "snapshots": snapshots,
            "snapshot-log": self.main_log(main),
            "metadata-log": [],
            "refs": refs,
        });
        if let Some(id) = main {
            md["current-snapshot-id"] = id.into();
        }
        serde_json::from_value(md).expect("valid generated metadata")
    }

    /// The snapshot log: main's ancestry, oldest first (iceberg wants the current one last).
    fn main_log(&self, main: Option<i64>) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let mut id = main;
        while let Some(i) = id {
            let s = self.snap(i);
            out.push(serde_json::json!({"snapshot-id": i, "timestamp-ms": s.timestamp_ms}));
            id = s.parent;
        }
        out.reverse();
        out
    }

    fn table(&self, base_ms: i64) -> Table {
        self.table_at(
            base_ms,
            "file:///wh/db/t/metadata/00001-9c12d441-03fe-4693-9a96-a0705ddf69c1.metadata.json",
        )
    }

    fn table_at(&self, base_ms: i64, metadata_location: &str) -> Table {
        Table::builder()
            .metadata(self.metadata(base_ms))
            .metadata_location(metadata_location)
            .identifier(TableIdent::from_strs(["db", "t"]).unwrap())
            .file_io(FileIO::new_with_memory())
            .runtime(Runtime::current())
            .build()
            .unwrap()
    }
}

/// The model identity of a planned path (the inverse of how the model names files).
fn identity(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap();
    if let Some(n) = name.strip_prefix("snap-") {
        format!("list:{}", n.trim_end_matches(".avro"))
    } else if let Some(n) = name.strip_prefix('m') {
        format!("manifest:{}", n.trim_end_matches(".avro"))
    } else {
        format!(
            "file:{}",
            name.trim_start_matches('f').trim_end_matches(".parquet")
        )
    }
}

fn identities(files: &[FileRef]) -> BTreeSet<String> {
    files.iter().map(|f| identity(&f.path)).collect()
}

fn history() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..28)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any split of the snapshots into expired and retained (tagged snapshots always retained):
    /// the plan equals reachable(all) − reachable(retained) and touches nothing retained.
    #[test]
    fn plan_equals_independent_reachability(ops in history(), keep in any::<u64>()) {
        let h = History::build(&ops, 0);
        let tagged: HashSet<i64> = h.refs.iter().map(|r| r.snapshot).collect();
        let (retained, expired): (Vec<i64>, Vec<i64>) = h
            .ids()
            .into_iter()
            .enumerate()
            .partition(|(i, id)| keep & (1 << (i % 64)) != 0 || tagged.contains(id))
            .map_both(|v: Vec<(usize, i64)>| v.into_iter().map(|(_, id)| id).collect::<Vec<i64>>());
        let plan = plan_deletions(&h.reach(&expired), &h.reach(&retained), &h.index()).unwrap();
        let got = identities(&plan);
        prop_assert_eq!(got.len(), plan.len(), "no file planned twice");
        let kept = h.reachable(&retained);
        let want: BTreeSet<String> = h.reachable(&h.ids()).difference(&kept).cloned().collect();
        prop_assert_eq!(&got, &want);
        prop_assert!(got.is_disjoint(&kept));
        // Kinds: a data/delete file is never labelled as metadata and vice versa.
        for f in &plan {
            let is_data = f.path.contains("/data/");
            prop_assert_eq!(is_data, matches!(f.kind, FileKind::Data | FileKind::Delete), "{:?}", f);
        }
    }

    /// The retained set chosen by iceberg's action (random cutoff and retain-last, tags with and
    /// without an expired max-ref-age, branches, rollbacks): refs it keeps point at kept
    /// snapshots, unexpired tags survive, and the plan deletes nothing a kept snapshot reaches.
    #[test]
    fn iceberg_action_keeps_refs_and_plan_is_safe(
        ops in history(),
        cutoff_hours in 0i64..30,
        retain_last in 1u32..4,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let base = chrono::Utc::now().timestamp_millis() - 40 * HOUR_MS;
            let h = History::build(&ops, base);
            let before = h.table(base);
            let cutoff = base + cutoff_hours * HOUR_MS;
            let after = plan_expiry(&before, Some(cutoff), Some(retain_last)).await.unwrap();
            let kept: HashSet<i64> = after.metadata().snapshots().map(|s| s.snapshot_id()).collect();
            let kept_refs: HashSet<String> = ref_names(after.metadata()).into_iter().collect();
            for r in &h.refs {
                let aged_out = r.max_ref_age_ms.is_some();
                if r.name == "main" || !aged_out {
                    prop_assert!(kept_refs.contains(&r.name), "ref {} dropped", r.name);
                    prop_assert!(kept.contains(&r.snapshot), "head of {} expired", r.name);
                } else {
                    prop_assert!(!kept_refs.contains(&r.name), "aged tag {} kept", r.name);
                }
            }
            // retain-last ancestors of main stay, whatever their age.
            let mut id = after.metadata().current_snapshot_id();
            let mut n = 0;
            while let (Some(i), true) = (id, n < retain_last) {
                prop_assert!(kept.contains(&i));
                id = h.snap(i).parent;
                n += 1;
            }
            // Snapshots at or after the cutoff stay.
            for s in &h.snaps {
                if s.timestamp_ms >= cutoff {
                    prop_assert!(kept.contains(&s.id), "young snapshot {} expired", s.id);
                }
            }
            let retained: Vec<i64> = h.ids().into_iter().filter(|i| kept.contains(i)).collect();
            let expired: Vec<i64> = h.ids().into_iter().filter(|i| !kept.contains(i)).collect();
            let plan = plan_deletions(&h.reach(&expired), &h.reach(&retained), &h.index()).unwrap();
            let got = identities(&plan);
            let protected = h.reachable(&retained);
            prop_assert!(got.is_disjoint(&protected));
            let want: BTreeSet<String> =
                h.reachable(&h.ids()).difference(&protected).cloned().collect();
            prop_assert_eq!(got, want);
            Ok(())
        })?;
    }
}

trait MapBoth<T> {
    fn map_both<U>(self, f: impl Fn(T) -> U) -> (U, U);
}

impl<T> MapBoth<T> for (T, T) {
    fn map_both<U>(self, f: impl Fn(T) -> U) -> (U, U) {
        (f(self.0), f(self.1))
    }
}

// ---------------------------------------------------------------------------------------------
// Examples
// ---------------------------------------------------------------------------------------------

fn snap(id: i64, manifests: &[&str]) -> SnapshotReach {
    SnapshotReach {
        snapshot_id: id,
        manifest_list: format!("s3://b/t/metadata/snap-{id}.avro"),
        manifests: manifests.iter().map(|m| m.to_string()).collect(),
    }
}

fn manifest(live: &[&str], deleted: &[&str]) -> ManifestReach {
    ManifestReach {
        length: 7,
        live: live
            .iter()
            .map(|p| FileRef {
                path: p.to_string(),
                kind: FileKind::Data,
                size: Some(100),
            })
            .collect(),
        deleted: deleted.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn replaced_files_go_with_the_snapshots_that_read_them() {
    // s1: m1{a}; s2: m1 + m2{b}; s3 (replace a,b -> c): m3{c}, m4{a:DELETED}, m5{b:DELETED}
    let index: HashMap<String, ManifestReach> = [
        ("m1", manifest(&["s3://b/t/data/a"], &[])),
        ("m2", manifest(&["s3a://b/t/data/b"], &[])),
        ("m3", manifest(&["s3://b/t/data/c"], &[])),
        ("m4", manifest(&[], &["s3://b/t/data/a"])),
        ("m5", manifest(&[], &["s3://b/t/data/b"])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let s1 = snap(1, &["m1"]);
    let s2 = snap(2, &["m1", "m2"]);
    let s3 = snap(3, &["m3", "m4", "m5"]);
    let plan =
        plan_deletions(&[s1.clone(), s2.clone()], std::slice::from_ref(&s3), &index).unwrap();
    let paths: BTreeSet<&str> = plan.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "s3://b/t/metadata/snap-1.avro",
            "s3://b/t/metadata/snap-2.avro",
            "m1",
            "m2",
            "s3://b/t/data/a",
            "s3a://b/t/data/b",
        ]
        .into()
    );
    let data: u64 = plan
        .iter()
        .filter(|f| f.kind == FileKind::Data)
        .map(|f| f.size.unwrap())
        .sum();
    assert_eq!(data, 200);

    // Keeping s2 keeps everything it reads.
    let plan =
        plan_deletions(std::slice::from_ref(&s1), &[s2.clone(), s3.clone()], &index).unwrap();
    let paths: Vec<&str> = plan.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["s3://b/t/metadata/snap-1.avro"]);

    // A retained manifest that was not read: refuse rather than guess.
    let mut partial = index.clone();
    partial.remove("m3");
    let err = plan_deletions(&[s1, s2], &[s3], &partial).unwrap_err();
    assert_eq!(err, MissingManifest("m3".into()));
}

#[test]
fn a_file_live_under_another_spelling_is_kept() {
    let index: HashMap<String, ManifestReach> = [
        (
            "old",
            manifest(&["file:/wh/t/data/a", "file:/wh/t/data/x"], &[]),
        ),
        ("new", manifest(&["file:///wh/t/data/a"], &[])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let plan = plan_deletions(&[snap(1, &["old"])], &[snap(2, &["new"])], &index).unwrap();
    let data: Vec<&str> = plan
        .iter()
        .filter(|f| f.kind == FileKind::Data)
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(data, ["file:/wh/t/data/x"]);
}

#[test]
fn metadata_files_beyond_the_log() {
    let files = |current: &str, log: &[&str]| MetadataFiles {
        current: Some(current.to_string()),
        log: log.iter().map(|s| s.to_string()).collect(),
    };
    // Our commit dropped v1 from the log (max 3): delete v1 only.
    let before = files("v4", &["v1", "v2", "v3"]);
    let after = files("v5", &["v2", "v3", "v4"]);
    assert_eq!(metadata_files_to_delete(&before, &after, 3), ["v1"]);
    // A writer that kept a longer log than the max: the oldest beyond it go, never the current
    // one or the newest `max` entries.
    let long = files("v6", &["v1", "v2", "v3", "v4", "v5"]);
    assert_eq!(
        metadata_files_to_delete(&long, &long, 2),
        ["v1", "v2", "v3"]
    );
    // Spelling differences do not make a kept file deletable.
    let before = files("file:/m/v2", &["file:/m/v1"]);
    let after = files("file:///m/v3", &["file:///m/v1", "file:///m/v2"]);
    assert!(metadata_files_to_delete(&before, &after, 5).is_empty());
}

#[test]
fn stale_metadata_needs_proof() {
    let dir = "file:///wh/t/metadata";
    let listed = |name: &str, uuid: Option<&str>| ListedMetadata {
        path: format!("{dir}/{name}"),
        version: metadata_version(name),
        table_uuid: uuid.map(str::to_string),
    };
    let set = |names: &[&str]| -> HashSet<String> {
        names
            .iter()
            .map(|n| canonical(&format!("{dir}/{n}")))
            .collect()
    };
    assert_eq!(metadata_version("a/00042-x-y.metadata.json"), Some(42));
    assert_eq!(metadata_version("v7.metadata.json"), Some(7));
    assert_eq!(metadata_version("abc.metadata.json"), None);
    let keep = set(&[
        "00009-c.metadata.json",
        "00007-a.metadata.json",
        "00008-b.metadata.json",
    ]);
    let logged = set(&["00006-z.metadata.json"]);
    let files = [
        listed("00009-c.metadata.json", None),
        listed("00008-b.metadata.json", None),
        // Older and ours: deleted.
        listed("00003-o.metadata.json", Some("U")),
        // Older but another table's (a shared location): kept.
        listed("00002-p.metadata.json", Some("OTHER")),
        // Older, not read (the per-run budget): kept.
        listed("00001-q.metadata.json", None),
        // Newer than every kept one: an in-flight commit. Kept.
        listed("00010-d.metadata.json", Some("U")),
        // No version in the name: only a log can prove it.
        listed("legacy.metadata.json", Some("U")),
        // In a log we saw (written by a Java writer as file:/...): deleted.
        ListedMetadata {
            path: "file:/wh/t/metadata/00006-z.metadata.json".into(),
            version: Some(6),
            table_uuid: None,
        },
    ];
    let got = stale_metadata(&files, &keep, &logged, "U");
    assert_eq!(
        got,
        [
            format!("{dir}/00003-o.metadata.json"),
            "file:/wh/t/metadata/00006-z.metadata.json".to_string()
        ]
    );
}

#[test]
fn commit_errors_are_classified() {
    let e = |k| IcebergError::new(k, "x");
    assert!(matches!(
        classify_commit_error(&e(ErrorKind::CatalogCommitConflicts)),
        CommitError::Conflict(_)
    ));
    assert!(matches!(
        classify_commit_error(&e(ErrorKind::DataInvalid)),
        CommitError::Failed(_)
    ));
    assert!(matches!(
        classify_commit_error(&e(ErrorKind::Unexpected)),
        CommitError::StateUnknown(_)
    ));
}

#[tokio::test]
async fn plan_only_catalog_plans_on_unconventional_metadata_names() {
    let ops = [
        Op::Append {
            files: 2,
            deletes: false,
        },
        Op::Rewrite { mask: 1, add: 1 },
        Op::Append {
            files: 1,
            deletes: true,
        },
    ];
    let base = chrono::Utc::now().timestamp_millis() - 10 * HOUR_MS;
    let h = History::build(&ops, base);
    let table = h.table_at(base, "file:///wh/db/t/metadata/v3.metadata.json");
    let after = plan_expiry(&table, Some(chrono::Utc::now().timestamp_millis()), Some(1))
        .await
        .unwrap();
    let kept: Vec<i64> = after
        .metadata()
        .snapshots()
        .map(|s| s.snapshot_id())
        .collect();
    assert_eq!(kept, [1002]);
    assert_eq!(ref_names(after.metadata()), ["main"]);
    // The real table is untouched.
    assert_eq!(table.metadata().snapshots().count(), 3);
}

#[test]
fn statistics_of_removed_snapshots_go() {
    let ops = [
        Op::Append {
            files: 1,
            deletes: false,
        },
        Op::Append {
            files: 1,
            deletes: false,
        },
    ];
    let h = History::build(&ops, 0);
    let with_stats = |ids: &[i64]| -> TableMetadata {
        let mut v = serde_json::to_value(h.metadata(0)).unwrap();
        v["statistics"] = ids
            .iter()
            .map(|id| {
                serde_json::json!({
                    "snapshot-id": id,
                    "statistics-path": format!("s3a://b/t/metadata/stats-{id}.puffin"),
                    "file-size-in-bytes": 42,
                    "file-footer-size-in-bytes": 10,
                    "blob-metadata": []
                })
            })
            .collect();
        v["partition-statistics"] = serde_json::json!([{
            "snapshot-id": 1000,
            "statistics-path": "s3://b/t/metadata/partition-stats-1000.parquet",
            "file-size-in-bytes": 7
        }]);
        serde_json::from_value(v).unwrap()
    };
    let before = with_stats(&[1000, 1001]);
    let mut after = serde_json::to_value(with_stats(&[1001])).unwrap();
    after["partition-statistics"] = serde_json::json!([]);
    // The remaining one is spelled differently: still the same file.
    after["statistics"][0]["statistics-path"] = "s3://b/t/metadata/stats-1001.puffin".into();
    let after: TableMetadata = serde_json::from_value(after).unwrap();
    let got = statistics_to_delete(&before, &after);
    let paths: BTreeSet<&str> = got.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "s3a://b/t/metadata/stats-1000.puffin",
            "s3://b/t/metadata/partition-stats-1000.parquet"
        ]
        .into()
    );
    assert!(got.iter().all(|f| f.kind == FileKind::Statistics));
    assert_eq!(got.iter().map(|f| f.size.unwrap()).sum::<u64>(), 49);
}
