//! icemaint's compaction against Spark's own: the same tables compacted by Spark 3.5 + Iceberg
//! 1.10.2's `CALL system.rewrite_data_files` and by icemaint pick the same files.
//!
//! One Spark session (`spark_parity.py`) writes each table, compacts it with Spark, records what
//! Spark did and rolls `main` back to the starting snapshot; icemaint then compacts the very same
//! files with the same options. Per scenario the two runs must agree on the files rewritten (by
//! path, per partition), the number of files written per partition, and the rows (count and
//! order-independent checksum, PyIceberg and DuckDB for icemaint's result):
//! - older-specs: the partition spec evolved; old-spec files inside the size range stay, small ones
//!   of every old partition are packed together and written into the current spec's partitions;
//! - packing: a partition whose candidates exceed `max-file-group-size-bytes`, packed in scan order
//!   with Java's one-bin look-back, so the same file is left out;
//! - v1: a format-version 1 table: icemaint rewrites the same files into the same number of files
//!   per partition, the table stays v1 (its new manifests v1, without sequence numbers), and
//!   Spark, PyIceberg and DuckDB read the same rows; the policy has no `format-version`;
//! - conflict: a concurrent delete rewrites a planned file; without partial progress nothing lands
//!   (Spark's procedure fails; icemaint commits nothing, deletes what it wrote and the job fails).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Instant;

use icemaint::compaction::{self, Env, Report};
use icemaint::fence::Fence;
use icemaint::telemetry::Metrics;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::compaction::connect;
use crate::daemon::{icemaint, write_config};
use crate::harness::{
    CatalogSpec, RestCatalogServer, TestDir, path_str, pyiceberg_ops, table_info, tool, verify,
};

const POLICY: &str = r#"version = 1
name = "parity-it"
tables = ["metrics.*"]

[compaction]
schedule = "0 0 0 1 1 *"
"#;

struct Fx {
    spec: CatalogSpec,
    config: PathBuf,
    warehouse: PathBuf,
    _rest: RestCatalogServer,
    _dir: TestDir,
}

impl Fx {
    fn new() -> Fx {
        let dir = TestDir::new("compaction-parity");
        let rest = RestCatalogServer::start(&dir.join("warehouse"));
        let spec = CatalogSpec::rest(rest.uri());
        let policies = dir.join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(policies.join("parity-it.toml"), POLICY).unwrap();
        let config = write_config(&dir, &spec, &policies, "");
        Fx {
            spec,
            config,
            warehouse: rest.warehouse().to_path_buf(),
            _rest: rest,
            _dir: dir,
        }
    }

    /// `icemaint compact TABLE --json --option K=V...` (plus `extra`); asserts exit 0.
    fn compact(&self, table: &str, options: &[String], extra: &[&str]) -> Value {
        let mut args = vec![
            "compact",
            table,
            "--config",
            path_str(&self.config),
            "--json",
        ];
        for o in options {
            args.extend(["--option", o.as_str()]);
        }
        args.extend(extra);
        let (code, out, err) = icemaint(&args);
        assert_eq!(code, 0, "icemaint {args:?} failed:\n{out}\n{err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("compact JSON: {e}\n{out}"))
    }

    /// Every Parquet file under the warehouse.
    fn parquet_files(&self) -> BTreeSet<PathBuf> {
        let mut out = BTreeSet::new();
        let mut stack = vec![self.warehouse.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "parquet") {
                    out.insert(p);
                }
            }
        }
        out
    }
}

/// The rewrite options of a scenario as `key=value` strings.
fn options(scenario: &Value) -> Vec<String> {
    scenario["options"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
        .collect()
}

/// `spec_id:{partition}` of a `table_info.py` data file.
fn partition_key(f: &Value) -> String {
    format!("{}:{}", f["spec_id"], f["partition"])
}

/// What one compaction changed, per partition: the files it replaced (paths) and how many it
/// wrote.
#[derive(Debug, PartialEq, Default)]
struct Change {
    rewritten: BTreeMap<String, BTreeSet<String>>,
    written: BTreeMap<String, usize>,
}

fn change(before: &Value, after: &Value) -> Change {
    let paths = |files: &Value| -> BTreeMap<String, Value> {
        files
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["path"].as_str().unwrap().to_string(), f.clone()))
            .collect()
    };
    let (before, after) = (paths(before), paths(after));
    let mut c = Change::default();
    for (p, f) in &before {
        if !after.contains_key(p) {
            c.rewritten
                .entry(partition_key(f))
                .or_default()
                .insert(p.clone());
        }
    }
    for (p, f) in &after {
        if !before.contains_key(p) {
            *c.written.entry(partition_key(f)).or_default() += 1;
        }
    }
    c
}

fn rows(v: &Value) -> (u64, String) {
    (
        v["rows"].as_u64().unwrap(),
        v["checksum"].as_str().unwrap().to_string(),
    )
}

/// icemaint compacts the rolled-back table through the CLI: the same change as Spark's, the same
/// rows. Returns icemaint's change.
fn icemaint_matches_spark(fx: &Fx, name: &str, s: &Value) -> Change {
    let table = s["table"].as_str().unwrap();
    let spark = change(&s["before"], &s["after"]);
    assert!(
        s.get("error").is_none(),
        "{name}: Spark failed: {}",
        s["error"]
    );
    assert_eq!(s["after_snapshot"]["operation"], "replace", "{name}: {s}");
    assert_eq!(rows(&s["rows_after"]), rows(&s["rows_before"]), "{name}");
    assert!(!spark.rewritten.is_empty(), "{name}: Spark rewrote nothing");

    let info = table_info(&fx.spec, table);
    assert_eq!(
        info["current_snapshot_id"], s["start"],
        "{name}: rolled back"
    );
    let report = fx.compact(table, &options(s), &[]);
    let after = table_info(&fx.spec, table);
    let ice = change(&s["before"], &after["data_files"]);
    assert_eq!(
        ice, spark,
        "{name}: icemaint (left) and Spark (right) differ\n{report}"
    );
    let current = &after["current_snapshot_id"];
    let snap = after["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| &x["snapshot_id"] == current)
        .unwrap();
    assert_eq!(snap["operation"], "replace", "{name}: {snap}");
    assert_eq!(snap["parent_id"], s["start"], "{name}: {snap}");
    let v = verify(&fx.spec, table, true, false);
    assert!(v.agree, "{name}: {}", v.raw);
    assert_eq!((v.rows, v.checksum), rows(&s["rows_before"]), "{name}");
    ice
}

/// Older-spec files in the size range stay, as in Spark; `rewrite-older-specs=true` (icemaint's
/// own option) also plans them.
fn older_specs(fx: &Fx, s: &Value) {
    let ice = icemaint_matches_spark(fx, "older-specs", s);
    // Two spec-0 files are in range: neither Spark nor icemaint touches them.
    let old_before = s["before"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["spec_id"] == 0)
        .count();
    let old_rewritten: usize = ice
        .rewritten
        .iter()
        .filter(|(k, _)| k.starts_with("0:"))
        .map(|(_, v)| v.len())
        .sum();
    assert_eq!((old_before, old_rewritten), (7, 5), "{ice:?}");
    assert_eq!(
        ice.written,
        BTreeMap::from([("1:{\"p\":\"1\"}".into(), 2), ("1:{\"p\":\"2\"}".into(), 1)]),
        "the old-spec group is split into the current spec's partitions"
    );

    // icemaint's rewrite-older-specs=true plans the old-spec files Spark leaves: a dry run on the
    // compacted table finds the two in-range ones.
    let table = s["table"].as_str().unwrap();
    let mut opts = options(s);
    opts.push("rewrite-older-specs=true".into());
    let plan = fx.compact(table, &opts, &["--dry-run"]);
    let planned: Vec<&str> = plan["plan"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["files"].as_array().unwrap())
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    let in_range_old: Vec<&str> = s["before"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["spec_id"] == 0 && f["size"].as_u64() > Some(20_000))
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(in_range_old.len(), 2);
    for p in &in_range_old {
        assert!(planned.contains(p), "{p} not planned: {plan}");
    }
}

/// The file Java's packing leaves out is the first of the partition in scan order.
fn packing(fx: &Fx, s: &Value) {
    let ice = icemaint_matches_spark(fx, "packing", s);
    let p1 = "0:{\"p\":\"1\"}";
    let first_in_scan_order = s["scan_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .find(|p| {
            s["before"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["path"] == *p && partition_key(f) == p1)
        })
        .unwrap();
    assert_eq!(ice.rewritten[p1].len(), 5, "{ice:?}");
    assert!(!ice.rewritten[p1].contains(first_in_scan_order), "{ice:?}");
    assert_eq!(ice.written[p1], 2, "{ice:?}");
}

/// A v1 table compacts as Spark compacts it, stays v1, and Spark reads icemaint's snapshot.
fn v1(fx: &Fx, s: &Value) {
    let ice = icemaint_matches_spark(fx, "v1", s);
    let (p1, p2) = ("0:{\"p\":\"1\"}", "0:{\"p\":\"2\"}");
    assert_eq!(
        (ice.rewritten[p1].len(), ice.rewritten[p2].len()),
        (4, 3),
        "{ice:?}"
    );
    assert_eq!(
        ice.written,
        BTreeMap::from([(p1.to_string(), 1), (p2.to_string(), 1)])
    );
    let table = s["table"].as_str().unwrap();
    assert_eq!(table_info(&fx.spec, table)["format_version"], 1);
    let v = verify(&fx.spec, table, true, true);
    assert!(v.agree, "v1: readers (Spark included) disagree: {}", v.raw);
    assert_eq!((v.rows, v.checksum), rows(&s["rows_before"]), "v1");
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("tool thread")
}

/// The delete Spark lost to is replayed between icemaint's planning and committing: without
/// partial progress nothing of icemaint's lands either, and its files are deleted.
async fn conflict(fx: &Fx, s: &Value) {
    let table = s["table"].as_str().unwrap().to_string();
    assert!(
        s["error"]
            .as_str()
            .is_some_and(|e| e.contains("Missing required files to delete")),
        "Spark's rewrite was refused: {s}"
    );
    assert_eq!(s["after_snapshot"]["operation"], "overwrite", "{s}");
    assert_eq!(
        s["after_snapshot"]["snapshot_id"],
        s["conflict"]["snapshot_id"]
    );
    let spark = change(&s["before"], &s["after"]);

    let catalog = connect(&fx.spec).await;
    let opts: BTreeMap<String, String> = options(s)
        .iter()
        .map(|o| {
            let (k, v) = o.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    let prepared = compaction::prepare(&catalog, &table, &BTreeMap::new(), &opts)
        .await
        .unwrap();
    assert_eq!(prepared.plan.groups.len(), 2, "{:?}", prepared.plan);
    let (spec, t, filter) = (
        fx.spec.clone(),
        table.clone(),
        s["conflict"]["where"].as_str().unwrap().to_string(),
    );
    let deleted = blocking(move || pyiceberg_ops(&spec, &t, "delete", &["--where", &filter])).await;
    let on_disk = fx.parquet_files();

    let metrics = Metrics::new();
    let env = Env {
        catalog: &catalog,
        backend: catalog.committer().await.unwrap(),
        metrics: &metrics,
        cancel: CancellationToken::new(),
        job_id: "it-parity-conflict".to_string(),
        progress: Box::new(|_| {}),
        fence: &Fence::none(),
    };
    let report: Report = compaction::execute(&env, prepared).await.unwrap();
    // Both groups were refused in the one commit: nothing committed (the job fails).
    assert_eq!(
        (
            report.groups_rewritten,
            report.groups_committed,
            report.conflicts
        ),
        (2, 0, 2),
        "{report:?}"
    );
    assert!(report.snapshot_ids.is_empty(), "{report:?}");
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("missing required files to delete")),
        "{report:?}"
    );
    assert_eq!(fx.parquet_files(), on_disk, "icemaint's files are deleted");

    let (spec, t) = (fx.spec.clone(), table.clone());
    let (info, v) = blocking(move || (table_info(&spec, &t), verify(&spec, &t, true, false))).await;
    assert_eq!(
        info["current_snapshot_id"], deleted["snapshot_id"],
        "{info}"
    );
    assert_eq!(change(&s["before"], &info["data_files"]), spark);
    assert!(v.agree, "{}", v.raw);
    assert_eq!((v.rows, v.checksum), rows(&s["rows_after"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spark_and_icemaint_compact_the_same_files() {
    let started = Instant::now();
    let fx = Fx::new();
    let spec = fx.spec.clone();
    let spark = blocking(move || {
        let args = [
            "--scenario",
            "older-specs",
            "--scenario",
            "packing",
            "--scenario",
            "conflict",
            "--scenario",
            "v1",
        ];
        tool("spark_parity.py", &spec, "metrics.parity", &args)
    })
    .await;
    eprintln!(
        "[compaction-parity] Spark done after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let (older, pack, v1s) = (
        spark["older-specs"].clone(),
        spark["packing"].clone(),
        spark["v1"].clone(),
    );
    let fx = blocking(move || {
        older_specs(&fx, &older);
        packing(&fx, &pack);
        v1(&fx, &v1s);
        fx
    })
    .await;
    conflict(&fx, &spark["conflict"]).await;
    eprintln!(
        "[compaction-parity] finished in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
